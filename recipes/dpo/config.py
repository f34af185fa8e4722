"""Configuration of the offline DPO recipe: one dataclass per part, every field with help text."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefopt.config import BackboneSpec, RewardSpec
from prefopt.preferences import PreferenceDataConfig
from prefopt.trainer import TrainerConfig
from prefopt_recipes.magicid.config import RunConfig


@dataclass
class DPORunConfig(RunConfig):
    name: str = field(default="dpo", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})
    build_tiny_models: bool = field(
        default=False,
        metadata={"help": "Build a tiny random pipeline of the backbone's family at `backbone.options.pretrained` "
                          "first (tests and demos: shows the mechanics, its media are noise)."},
    )


@dataclass
class DPOEvaluationConfig:
    """Optional: sample the base and the trained model on the same prompts and seeds, and score both."""

    prompts: list[str] = field(default_factory=list, metadata={"help": "Evaluation prompts; empty: no evaluation."})
    prompts_file: str | None = field(default=None, metadata={"help": "A text file of prompts, one per line (added)."})
    seeds_per_prompt: int = field(default=2, metadata={"help": "Samples per prompt and model (seeds 0, 1, …)."})
    rewards: dict[str, RewardSpec] = field(
        default_factory=dict,
        metadata={"help": "Rewards to score samples with, each under a name you choose, e.g. "
                          "`{aesthetic: {name: clip-semantic, options: {...}}}`; empty: samples only."},
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per sample; empty: the trainer's."})
    height: int | None = field(default=None, metadata={"help": "Sample height; empty: the trainer's."})
    width: int | None = field(default=None, metadata={"help": "Sample width; empty: the trainer's."})
    num_inference_steps: int = field(default=30, metadata={"help": "Sampling steps."})
    guidance_scale: float = field(default=5.0, metadata={"help": "Classifier-free (or embedded) guidance."})
    fps: int = field(default=8, metadata={"help": "Frame rate of saved sample videos."})

    def __post_init__(self) -> None:
        for name in ("seeds_per_prompt", "num_inference_steps", "fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")


@dataclass
class DPORecipeConfig:
    """Diffusion-DPO on your own preference pairs: data → LoRA (diffusers format) → optional evaluation → report."""

    backbone: BackboneSpec = field(metadata={"help": "The model to fine-tune (see `prefopt plugins`)."})
    data: PreferenceDataConfig = field(metadata={"help": "The preference pairs."})
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=1000),
        metadata={"help": "Diffusion-DPO training (LoRA); media size defaults to the backbone's."},
    )
    run: DPORunConfig = field(default_factory=DPORunConfig, metadata={"help": "Run directory."})
    evaluation: DPOEvaluationConfig = field(default_factory=DPOEvaluationConfig,
                                            metadata={"help": "Optional evaluation."})

    def __post_init__(self) -> None:
        if self.trainer.mode != "dpo":
            raise ValueError(f"`trainer.mode` must be `dpo` in this recipe, got `{self.trainer.mode}`")
