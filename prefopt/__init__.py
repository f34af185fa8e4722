"""prefopt: preference optimization (Diffusion-DPO) for video and image diffusion models."""

from prefopt.errors import ConfigError, MissingWeightsError, PluginError, PrefoptError
from prefopt.hookspecs import hookimpl
from prefopt.interfaces import (
    Backbone,
    BackboneOutput,
    GeneratedMedia,
    Pair,
    PairIndices,
    PairSelector,
    Recipe,
    Reward,
    RewardScore,
    ScoredItems,
)
from prefopt.scale import to_scale

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneOutput",
    "ConfigError",
    "GeneratedMedia",
    "MissingWeightsError",
    "Pair",
    "PairIndices",
    "PairSelector",
    "PluginError",
    "PrefoptError",
    "Recipe",
    "Reward",
    "RewardScore",
    "ScoredItems",
    "__version__",
    "hookimpl",
    "to_scale",
]
