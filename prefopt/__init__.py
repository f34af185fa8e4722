"""prefopt: preference optimization (Diffusion-DPO) for video and image diffusion models."""

from typing import Any

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
from prefopt.scale import to_scale

__version__ = "0.1.0"

# What a recipe subclasses lives with the recipes' shared code; it is importable from here all the same.
_RECIPE_SKELETON = {"StagedRecipe": "prefopt_recipes.common.recipe", "Stage": "prefopt_recipes.common.stages",
                    "RunResult": "prefopt_recipes.common.stages"}


def __getattr__(name: str) -> Any:
    if name in _RECIPE_SKELETON:
        import importlib

        return getattr(importlib.import_module(_RECIPE_SKELETON[name]), name)
    raise AttributeError(f"module 'prefopt' has no attribute {name!r}")


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
