from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from prefopt.config import RewardSpec, apply_overrides, help_text, parse, to_dict
from prefopt.errors import ConfigError
from prefopt.registry import Registry


@dataclass
class OptimConfig:
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas."})


@dataclass
class TrainConfig:
    steps: int = field(metadata={"help": "Number of optimizer steps."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer."})
    loss_type: Literal["sigmoid", "hinge"] = field(default="sigmoid", metadata={"help": "Loss."})
    output: Path | None = field(default=None, metadata={"help": "Where to write."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Tags."})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"`steps` must be at least 1, got {self.steps}")


def test_parse_nested_and_defaults():
    config = parse(TrainConfig, {"steps": 3, "optim": {"learning_rate": 1e-4}, "output": "runs/x"})
    assert config.steps == 3
    assert config.optim.learning_rate == 1e-4
    assert config.optim.betas == (0.9, 0.999)
    assert config.output == Path("runs/x")


def test_unknown_key_names_full_path_and_suggests_closest():
    with pytest.raises(ConfigError) as info:
        parse(TrainConfig, {"steps": 3, "optim": {"learning_rat": 1e-4}})
    message = str(info.value)
    assert "`optim.learning_rat`" in message
    assert "Did you mean `optim.learning_rate`?" in message


def test_wrong_type_names_path_and_expected_type():
    with pytest.raises(ConfigError, match=r"`optim\.learning_rate` must be a number, got a string `'fast'`"):
        parse(TrainConfig, {"steps": 3, "optim": {"learning_rate": "fast"}})
    with pytest.raises(ConfigError, match=r"`steps` must be an integer, got a boolean"):
        parse(TrainConfig, {"steps": True})


def test_yaml_style_float_strings_are_numbers():
    # PyYAML reads `2e-5` as a string; float fields accept it.
    assert parse(TrainConfig, {"steps": 1, "optim": {"learning_rate": "2e-5"}}).optim.learning_rate == 2e-5


def test_required_literal_and_post_init_errors():
    with pytest.raises(ConfigError, match="`steps` is required"):
        parse(TrainConfig, {})
    with pytest.raises(ConfigError, match=r"`loss_type` must be one of 'sigmoid', 'hinge', got `'ipo'`"):
        parse(TrainConfig, {"steps": 1, "loss_type": "ipo"})
    with pytest.raises(ConfigError, match=r"got `'sigmod'`\. Did you mean `'sigmoid'`\?"):
        parse(TrainConfig, {"steps": 1, "loss_type": "sigmod"})
    with pytest.raises(ConfigError, match="`steps` must be at least 1, got 0"):
        parse(TrainConfig, {"steps": 0})


def test_overrides_set_nested_keys_and_list_items():
    data = {"steps": 1, "tags": ["a", "b"]}
    apply_overrides(data, ["optim.learning_rate=3e-4", "tags.1=c", "steps=7"])
    config = parse(TrainConfig, data)
    assert (config.steps, config.tags, config.optim.learning_rate) == (7, ["a", "c"], 3e-4)
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"tags": ["a"]}, ["tags.3=x"])


@dataclass
class ToyRewardConfig:
    threshold: float = field(default=0.5, metadata={"help": "A threshold."})


class ToyReward:
    """A toy reward for config tests."""

    name = "toy"
    Config = ToyRewardConfig
    raw_range = (0.0, 1.0)

    def score(self, videos, prompts, references):
        return []

    def provenance(self):
        return {}


def test_component_options_parse_against_the_component_config():
    registry = Registry()
    registry.add("rewards", ToyReward, "tests", "tests")
    spec = parse(RewardSpec, {"name": "toy", "options": {"threshold": 0.9}}, "rewards.0", registry)
    assert spec.options == ToyRewardConfig(threshold=0.9)
    with pytest.raises(ConfigError, match=r"`rewards\.0\.options\.treshold`.*`rewards\.0\.options\.threshold`"):
        parse(RewardSpec, {"name": "toy", "options": {"treshold": 0.9}}, "rewards.0", registry)
    with pytest.raises(ConfigError, match=r"`rewards\.0\.name`: no reward named `tooy`.*Did you mean `toy`"):
        parse(RewardSpec, {"name": "tooy"}, "rewards.0", registry)


def test_to_dict_round_trips_and_help_lists_every_field():
    config = parse(TrainConfig, {"steps": 2, "output": "x"})
    assert parse(TrainConfig, to_dict(config)) == config
    keys = [row[0] for row in help_text(TrainConfig)]
    assert "optim.learning_rate" in keys and "loss_type" in keys
