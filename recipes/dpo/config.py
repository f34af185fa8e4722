"""Configuration of the offline DPO recipe: one dataclass per part, every field with help text."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefopt.config import BackboneSpec, RewardSpec
from prefopt.preferences import PreferenceDataConfig
from prefopt.trainer import TrainerConfig
from prefopt_recipes.common.config import RunConfig, SamplingConfig, check_reward_names


@dataclass
class DPORunConfig(RunConfig):
    name: str = field(default="dpo", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})


@dataclass
class DPOEvaluationConfig(SamplingConfig):
    """Optional: sample the base and the trained model on the same prompts and seeds, and score both. Sizes left
    empty take the trainer's."""

    prompts: list[str] = field(default_factory=list, metadata={"help": "Evaluation prompts; empty: no evaluation."})
    prompts_file: str | None = field(default=None, metadata={"help": "A text file of prompts, one per line (added)."})
    seeds_per_prompt: int = field(default=2, metadata={"min": 1, "help": "Samples per prompt and model (seeds 0, 1, …)."})
    rewards: dict[str, RewardSpec] = field(
        default_factory=dict,
        metadata={"help": "Rewards to score samples with, each under a name you choose, e.g. "
                          "`{aesthetic: {name: clip-semantic, options: {...}}}`; empty: samples only."},
    )

    def __post_init__(self) -> None:
        check_reward_names(list(self.rewards))


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
