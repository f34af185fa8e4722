"""Configuration of the MagicID recipe: one dataclass per stage, every field with help text."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from prefopt.config import BackboneSpec, RewardSpec, SelectorSpec
from prefopt.trainer import TrainerConfig

ROLES = ("identity", "dynamic", "semantic")
SOURCES = ("static", "base", "lora")
# A run name is one plain folder name: never empty (the run dir would be `output_dir` itself), never a path.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _require_positive(owner: object, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(owner, name)
        if value < minimum:
            raise ValueError(f"`{name}` must be at least {minimum}, got {value}")


@dataclass
class RunConfig:
    name: str = field(default="magicid", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})
    output_dir: str = field(default="runs", metadata={"help": "Parent folder of run directories."})
    seed: int = field(default=0, metadata={"help": "Base seed for generation (each video adds its index)."})
    build_tiny_models: bool = field(
        default=False,
        metadata={"help": "Build tiny random models at the configured paths first (quickstart: shows mechanics, "
                          "its videos are noise)."},
    )

    allow_downloads: bool = field(
        default=False,
        metadata={"help": "Let loaders fetch missing weights from the Hugging Face hub; off: every model must be a "
                          "local directory or already in the cache, and nothing is fetched."},
    )

    def __post_init__(self) -> None:
        if not RUN_NAME.fullmatch(self.name):
            raise ValueError(f"`name` must be a plain folder name (letters, digits, `.`, `_`, `-`, not starting with "
                             f"`.`), got `{self.name}`")
        if not self.output_dir:
            raise ValueError("`output_dir` must not be empty (use `.` for the current folder)")


@dataclass
class ReferencesConfig:
    photos: list[str] = field(
        default_factory=list,
        metadata={"help": "Reference photos of the person; `package://skimage/data/astronaut.png` reads a file "
                          "shipped inside an installed package."},
    )
    subject_prompt: str = field(
        default="a photo of sks person", metadata={"help": "Prompt of the static reference videos and the identity LoRA."}
    )


@dataclass
class VideoConfig:
    num_frames: int = field(default=61, metadata={"help": "Frames per generated video (paper: 61)."})
    height: int = field(default=720, metadata={"help": "Video height (paper: 720)."})
    width: int = field(default=1280, metadata={"help": "Video width (paper: 1280)."})
    fps: int = field(default=24, metadata={"help": "Frame rate of written videos (and for the dynamics reward)."})
    num_inference_steps: int = field(default=50, metadata={"help": "Sampling steps (paper: 50)."})
    guidance_scale: float = field(default=6.0, metadata={"help": "Embedded guidance for sampling."})
    batch_size: int = field(default=1, metadata={"help": "Videos generated per pipeline call."})

    def __post_init__(self) -> None:
        _require_positive(self, ("num_frames", "height", "width", "fps", "num_inference_steps", "batch_size"))


@dataclass
class PromptsConfig:
    train: list[str] = field(
        default_factory=list, metadata={"help": "Prompts for the video repository; empty uses the shipped action prompts."}
    )
    file: str | None = field(default=None, metadata={"help": "A text file with one prompt per line (adds to `train`)."})
    count: int = field(default=20, metadata={"help": "How many train prompts to use (paper: 20 written by an LLM)."})
    writer_model: str | None = field(
        default=None,
        metadata={"help": "A transformers text model (hub id or directory) that writes the train prompts, as the "
                          "paper's LLM did; missing ones are filled from the shipped list."},
    )
    writer_request: str = field(
        default="Write {count} short, varied video prompts, one per line, each showing a person doing a clearly "
                "visible action. No numbering.",
        metadata={"help": "The request sent to `writer_model`; `{count}` is replaced."},
    )
    eval: list[str] = field(
        default_factory=list, metadata={"help": "Held-out evaluation prompts; empty uses shipped prompts not in train."}
    )
    eval_count: int = field(default=4, metadata={"help": "How many evaluation prompts."})

    def __post_init__(self) -> None:
        _require_positive(self, ("count", "eval_count"))


# A reward name is used as a column, a file-name part and a selector option: a plain identifier.
REWARD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass
class RepositoryConfig:
    lora_videos: int = field(default=100, metadata={"help": "V_t: videos from base + identity LoRA (paper: 100)."})
    base_videos: int = field(default=20, metadata={"help": "V_s: videos from the base model (paper: 20)."})
    regenerate_videos: int = field(
        default=100, metadata={"help": "Videos generated by the stage-1 model and added to V_t before stage 2."}
    )

    def __post_init__(self) -> None:
        _require_positive(self, ("lora_videos", "base_videos"))
        _require_positive(self, ("regenerate_videos",), minimum=0)


@dataclass
class SelectionConfig:
    selectors: list[SelectorSpec] = field(
        metadata={"help": "A chain: the first selector makes pairs, the next ones filter them (e.g. pareto → topk)."}
    )
    plot_x: str = field(default="identity", metadata={"help": "Reward on the plot's x axis."})
    plot_y: str = field(default="dynamic", metadata={"help": "Reward on the plot's y axis."})

    def check_names(self, rewards: list[str]) -> None:
        """Plot axes and selector options name rewards and sources that exist in this run."""
        for name in ("plot_x", "plot_y"):
            if getattr(self, name) not in rewards:
                raise ValueError(f"`{name}` must name a reward ({', '.join(rewards)}), got `{getattr(self, name)}`")
        for index, spec in enumerate(self.selectors):
            check_selector_names(spec, f"selectors.{index}.options", rewards)


@dataclass
class EvaluationConfig:
    videos_per_prompt: int = field(default=2, metadata={"help": "Evaluation videos per prompt and model."})
    clip_model: str = field(
        default="",
        metadata={"help": "CLIP for CLIP-T, CLIP-I and temporal consistency; empty reuses a `clip-semantic` reward."},
    )
    seed: int = field(default=10_000, metadata={"help": "Seed of evaluation videos (the same for every model)."})
    face_sim: Literal["consisid", "all_frames_mean_reference"] = field(
        default="consisid",
        metadata={"help": "Face Sim protocol: `consisid` (ConsisID's eval: 16 frames, grey-padded retry, face-less "
                          "frames skipped, first reference) or `all_frames_mean_reference` (8 frames, face-less "
                          "frames count 0, mean of every reference)."},
    )
    face_det_size: int = field(
        default=320,
        metadata={"help": "Face detector size for Face Sim when the identity reward has one (ConsisID: 320)."},
    )

    def __post_init__(self) -> None:
        _require_positive(self, ("videos_per_prompt", "face_det_size"))


@dataclass
class MagicIDConfig:
    """The whole MagicID recipe (Li et al., 2025, Sec. 3 and Appendix A)."""

    backbone: BackboneSpec = field(metadata={"help": "The video model (paper: HunyuanVideo)."})
    rewards: dict[str, RewardSpec] = field(
        metadata={"help": "Rewards on the 1–10 scale, each under a name that selectors, pairs files, the repository "
                          "and the report use: `identity` (R_id), `dynamic` (R_dy) and `semantic` (R_sem) are "
                          "MagicID's and required; add more under names of your choice."})
    stage1: SelectionConfig = field(metadata={"help": "Identity-preferred pairs from V_id ∪ V_s (Sec. 3.4)."})
    stage2: SelectionConfig = field(metadata={"help": "Dynamic-preferred pairs from V_s ∪ V_t (Sec. 3.4)."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Run directory and seed."})
    references: ReferencesConfig = field(default_factory=ReferencesConfig, metadata={"help": "The person's photos."})
    video: VideoConfig = field(default_factory=VideoConfig, metadata={"help": "Generation settings."})
    prompts: PromptsConfig = field(default_factory=PromptsConfig, metadata={"help": "Train and evaluation prompts."})
    repository: RepositoryConfig = field(default_factory=RepositoryConfig, metadata={"help": "Repository sizes."})
    identity_lora: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(mode="sft", max_steps=1000),
        metadata={"help": "Stage 0: the initial identity LoRA by self-reconstruction (paper: 1000 steps)."},
    )
    dpo_stage1: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=2500),
        metadata={"help": "DPO on stage-1 pairs (paper: 5000 DPO steps over both stages)."},
    )
    dpo_stage2: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=2500),
        metadata={"help": "DPO on P = P_id ∪ P_dy, continuing from stage 1's LoRA."},
    )
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig, metadata={"help": "Evaluation videos."})

    def __post_init__(self) -> None:
        if self.identity_lora.mode != "sft":
            raise ValueError(f"`identity_lora.mode` must be `sft` (self-reconstruction), got `{self.identity_lora.mode}`")
        for name in ("dpo_stage1", "dpo_stage2"):
            if getattr(self, name).mode != "dpo":
                raise ValueError(f"`{name}.mode` must be `dpo`, got `{getattr(self, name).mode}`")
        missing = [role for role in ROLES if role not in self.rewards]
        if missing:
            raise ValueError(f"`rewards` lacks {', '.join(f'`{m}`' for m in missing)}: MagicID needs an identity, a "
                             "dynamic and a semantic reward (further rewards go under names of your choice).")
        bad = [name for name in self.rewards if not REWARD_NAME.fullmatch(str(name))]
        if bad:
            raise ValueError(f"reward name `{bad[0]}` must be a plain identifier (letters, digits, `_`, `-`).")
        for stage in ("stage1", "stage2"):
            try:
                getattr(self, stage).check_names(list(self.rewards))
            except ValueError as e:
                raise ValueError(f"`{stage}`: {e}") from e
        if not self.references.photos:
            raise ValueError("`references.photos` is empty: give photos of the person, e.g. "
                             "references.photos='[me1.jpg,me2.jpg]'")


def check_selector_names(spec: SelectorSpec, path: str, rewards: list[str], sources=SOURCES) -> None:
    """Selector options name rewards (`reward`, `rewards`, `tolerance_rewards`, `primary`) and sources (`sources`,
    `*_sources`); they must be the recipe's reward names and sources, so a misspelt one is a config error here
    rather than a failure after hours of generation."""
    options = spec.options
    if not dataclasses.is_dataclass(options):
        return  # options not parsed yet (no registry): the registry's own check runs later
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        values = value if isinstance(value, list) else [value]
        if f.name in ("reward", "rewards", "tolerance_rewards", "primary"):
            allowed = rewards
        elif f.name == "sources" or f.name.endswith("_sources"):
            allowed = sources
        else:
            continue
        wrong = [v for v in values if v is not None and v not in allowed]
        if wrong:
            choices = ", ".join(allowed) or "nothing (leave it empty)"
            raise ValueError(f"`{path}.{f.name}` names `{wrong[0]}`, which is not one of {choices}")
