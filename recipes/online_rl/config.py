"""Configuration of the online-RL recipe: one dataclass per part, every field with help text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prefopt.config import BackboneSpec, RewardSpec
from prefopt.online_rl import OnlineRLConfig
from prefopt_recipes.common.config import SamplingConfig, SeededRunConfig, check_reward_names


@dataclass
class OnlineRLRunConfig(SeededRunConfig):
    name: str = field(default="online-rl", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})
    seed: int = field(
        default=0,
        metadata={"help": "Seeds everything: the LoRA's initialisation, the prompts' order, every rollout, and the "
                          "evaluation. Training rollouts use even seeds and evaluation samples odd ones, so the "
                          "evaluation never starts from a noise training saw."})


@dataclass
class PromptDataConfig:
    """Prompts from a column of a dataset: a .parquet, .csv, .jsonl or .json file, a saved `datasets` folder, or a
    Hugging Face dataset id (with `run.allow_downloads`)."""

    path: str = field(default="", metadata={"help": "The file, folder or dataset id; empty: no dataset."})
    column: str = field(default="prompt", metadata={"help": "The column holding the prompts."})
    split: str = field(default="train", metadata={"help": "The split of a dataset with several."})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "Keep the first N prompts; empty: all."})


@dataclass
class OnlineRLEvaluationConfig(SamplingConfig):
    """After training, the base and the trained model sample the training prompts and the held-out prompts with
    seeds training never used, and every reward and judge scores them. Sizes left empty take the trainer's."""

    seeds_per_prompt: int = field(default=4, metadata={"min": 1, "help": "Samples per prompt and model."})
    max_prompts: int | None = field(
        default=None, metadata={"min": 1, "help": "Evaluate at most this many of the training prompts (the first); "
                                                  "empty: all."})
    num_inference_steps: int = field(default=40, metadata={"min": 1, "help": "Sampling steps (Flow-GRPO evaluates "
                                                                             "with 40)."})


@dataclass
class OnlineRLRecipeConfig:
    """Online RL of a LoRA against named rewards: epochs of sample → score → group advantages → update
    (`trainer.algorithm`: grpo, nft or awm), then an evaluation of the base and the trained model on fresh seeds and
    held-out prompts, scored by the rewards and by judges never trained on."""

    backbone: BackboneSpec = field(metadata={"help": "The model to improve (see `prefopt plugins`)."})
    rewards: dict[str, RewardSpec] = field(
        metadata={"help": "The rewards trained on, each under a name you choose, e.g. `{pickscore: {name: "
                          "pickscore}}`."})
    reward_weights: dict[str, float] = field(
        default_factory=dict, metadata={"help": "Weight of each named reward in the sum; a reward not named here: 1."})
    reward_combination: Literal["weighted_sum", "group_normalized"] = field(
        default="weighted_sum",
        metadata={"help": "`weighted_sum`: advantages of the weighted sum of rewards; `group_normalized`: each reward "
                          "normalised within its group first, then summed (no reward's scale dominates)."})
    judges: dict[str, RewardSpec] = field(
        default_factory=dict,
        metadata={"help": "Rewards never trained on, scored in the evaluation only: when the trained reward rises and "
                          "an independent judge of the same quality does not, the policy is hacking the reward."})
    prompts: list[str] = field(default_factory=list, metadata={"help": "Training prompts (added to the others)."})
    prompts_file: str | None = field(default=None, metadata={"help": "A text file of prompts, one per line."})
    prompts_dataset: PromptDataConfig = field(default_factory=PromptDataConfig,
                                              metadata={"help": "Prompts from a dataset column."})
    heldout_prompts: list[str] = field(
        default_factory=list, metadata={"help": "Prompts never trained on, sampled in the evaluation by both models."})
    references: list[str] = field(
        default_factory=list, metadata={"help": "Reference photos, for rewards that compare with them (identity)."})
    trainer: OnlineRLConfig = field(default_factory=OnlineRLConfig, metadata={"help": "The RL algorithm and its "
                                                                                      "options."})
    evaluation: OnlineRLEvaluationConfig = field(default_factory=OnlineRLEvaluationConfig,
                                                 metadata={"help": "The evaluation after training."})
    run: OnlineRLRunConfig = field(default_factory=OnlineRLRunConfig, metadata={"help": "Run directory and seed."})

    def __post_init__(self) -> None:
        if not self.rewards:
            raise ValueError("`rewards` is empty: name at least one reward, e.g. rewards.pickscore.name=pickscore")
        check_reward_names([*self.rewards, *self.judges])
        unknown = [name for name in self.reward_weights if name not in self.rewards]
        if unknown:
            raise ValueError(f"`reward_weights.{unknown[0]}` names no reward under `rewards` "
                             f"({', '.join(self.rewards)})")
        both = [name for name in self.judges if name in self.rewards]
        if both:
            raise ValueError(f"`judges.{both[0]}` is also a trained reward: a judge must be one the policy never saw")
        if self.trainer.seed != 0:
            raise ValueError("`trainer.seed` cannot be set in this recipe (`run.seed` seeds the training and the "
                             "evaluation); remove it.")
