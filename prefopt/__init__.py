"""prefopt: preference optimization (Diffusion-DPO) for video and image diffusion models."""

from prefopt.diffusers_backbone import (
    DDPMBackbone,
    DiffusersBackbone,
    DiffusersBackboneConfig,
    FlowMatchingBackbone,
    FlowMatchingConfig,
)
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
from prefopt.recipe import StagedRecipe
from prefopt.scale import to_scale
from prefopt.stages import RunResult, Stage

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneOutput",
    "ConfigError",
    "DDPMBackbone",
    "DiffusersBackbone",
    "DiffusersBackboneConfig",
    "FlowMatchingBackbone",
    "FlowMatchingConfig",
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
    "RunResult",
    "ScoredItems",
    "Stage",
    "StagedRecipe",
    "__version__",
    "hookimpl",
    "to_scale",
]
