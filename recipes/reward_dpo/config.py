"""Configuration of the generic reward-DPO loop: one dataclass per part, every field with help text."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefopt.config import BackboneSpec, RewardSpec, SelectorSpec
from prefopt.trainer import TrainerConfig
from prefopt_recipes.common.config import (
    SamplingConfig,
    SeededRunConfig,
    check_reward_names,
    check_selector_chain,
    check_selector_names,
    refuse_set,
)


@dataclass
class LoopRunConfig(SeededRunConfig):
    name: str = field(default="reward-dpo", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})
    seed: int = field(
        default=0,
        metadata={"help": "Sample j of prompt i is drawn with seed seed·10⁶ + i·samples_per_prompt + j in every "
                          "round: runs with different seeds share no sample."})


@dataclass
class LoopSamplingConfig(SamplingConfig):
    """How each round samples media to score."""

    samples_per_prompt: int = field(default=4, metadata={"min": 1, "help": "Samples per prompt and round (seeds "
                                                                           "differ)."})


@dataclass
class LoopSelectionConfig:
    selectors: list[SelectorSpec] = field(
        metadata={"help": "A chain: the first selector makes pairs from one round's samples, the next ones filter "
                          "them (e.g. pareto → topk). Options name rewards by the names under `rewards`."})
    per_prompt: bool = field(
        default=True,
        metadata={"help": "Run the chain on each prompt's samples apart, so both media of a pair answer the same "
                          "prompt (as Diffusion-DPO's data); false pools every prompt (MagicID's way)."})
    plot_x: str | None = field(default=None, metadata={"help": "Reward on the pair plot's x axis; empty: the first."})
    plot_y: str | None = field(default=None, metadata={"help": "Reward on the y axis; empty: the second (or first)."})


@dataclass
class RewardDPOConfig:
    """Sample → score with named rewards → select pairs → Diffusion-DPO, for `rounds` rounds; each round samples
    from the model the previous one trained (the same seeds every round, so rounds compare pairwise)."""

    backbone: BackboneSpec = field(metadata={"help": "The model to improve (see `prefopt plugins`)."})
    rewards: dict[str, RewardSpec] = field(
        metadata={"help": "Any number of rewards, each under a name you choose (used by selectors, the repository, "
                          "pairs files and the report), e.g. `{aesthetic: {name: laion-aesthetic}}`."})
    selection: LoopSelectionConfig = field(metadata={"help": "How pairs are chosen from each round's samples."})
    prompts: list[str] = field(default_factory=list, metadata={"help": "Prompts to sample (added to `prompts_file`)."})
    prompts_file: str | None = field(default=None, metadata={"help": "A text file of prompts, one per line."})
    heldout_prompts: list[str] = field(
        default_factory=list,
        metadata={"help": "Prompts never trained on: the final stage also samples them with the base and the final "
                          "model (same seeds) and scores both, to show whether a gain carries over."})
    references: list[str] = field(
        default_factory=list, metadata={"help": "Reference photos, for rewards that compare with them (identity)."})
    sampling: LoopSamplingConfig = field(default_factory=LoopSamplingConfig,
                                         metadata={"help": "Sampling in every round."})
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=500),
        metadata={"help": "Diffusion-DPO in every round; round r continues round r−1's LoRA (the reference stays "
                          "the base model)."})
    rounds: int = field(default=1, metadata={"help": "Rounds of sample → score → select → train."})
    run: LoopRunConfig = field(default_factory=LoopRunConfig, metadata={"help": "Run directory and seed."})

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"`rounds` must be at least 1, got {self.rounds}")
        if not self.rewards:
            raise ValueError("`rewards` is empty: name at least one reward, e.g. rewards.aesthetic.name=laion-aesthetic")
        check_reward_names(list(self.rewards))
        names = list(self.rewards)
        self.selection.plot_x = self.selection.plot_x or names[0]
        self.selection.plot_y = self.selection.plot_y or names[min(1, len(names) - 1)]
        for axis in ("plot_x", "plot_y"):
            if getattr(self.selection, axis) not in names:
                raise ValueError(f"`selection.{axis}` must name a reward ({', '.join(names)}), got "
                                 f"`{getattr(self.selection, axis)}`")
        check_selector_chain(self.selection.selectors, "selection.selectors")
        for index, spec in enumerate(self.selection.selectors):
            # Every item of a round comes from one model: there are no sources to choose between.
            check_selector_names(spec, f"selection.selectors.{index}.options", names, sources=())
        if self.trainer.mode != "dpo":
            raise ValueError(f"`trainer.mode` must be `dpo` in this recipe, got `{self.trainer.mode}`")
        refuse_set(self.trainer, "trainer", ("num_frames", "height", "width"), "`sampling.*` sets the media size")
