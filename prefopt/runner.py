"""From a YAML path and overrides to a configured recipe object, ready to validate or run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.config import ComponentSpec, apply_overrides, parse, read_yaml
from prefopt.errors import ConfigError, MissingWeightsError, PluginError
from prefopt.interfaces import ChecksWeights, Recipe
from prefopt.plugins import get_registry

RECIPE_KEY = "recipe"


def shipped_recipes() -> dict[str, Path]:
    """The recipe YAMLs that ship with prefopt, by name (``miniature`` for ``miniature.yaml``)."""
    from prefopt.hub import resolve_path

    folder = resolve_path("package://prefopt_recipes/")
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def config_path(path: str | os.PathLike) -> Path:
    """A config file, or the name of a shipped recipe (``prefopt run miniature`` after a plain ``pip install``)."""
    given = Path(path)
    if given.is_file() or given.suffix in (".yaml", ".yml", ".json") or len(given.parts) > 1:
        return given
    shipped = shipped_recipes()
    if str(path) in shipped:
        return shipped[str(path)]
    raise ConfigError(f"`{path}` is neither a config file nor a shipped recipe ({', '.join(shipped)}; "
                      "`prefopt recipes` lists them).")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> tuple[Any, Any]:
    """Parse a recipe YAML into (registration, config); checks every key, type and plugin name."""
    path = config_path(path)
    data = apply_overrides(read_yaml(path), list(overrides or []))
    registry = get_registry()
    recipe_name = data.pop(RECIPE_KEY, None)
    if not isinstance(recipe_name, str):
        available = ", ".join(registry.names("recipes")) or "none"
        raise ConfigError(f"`{path}` must name its recipe with a top-level `recipe:` key (one of: {available}).")
    try:
        registration = registry.get("recipes", recipe_name)
    except PluginError as e:
        raise ConfigError(f"`recipe`: {e}") from e
    return registration, parse(registration.config_class, data, "", registry)


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Any:
    """Build the recipe named by a YAML config (without loading any model)."""
    registration, config = load_config(path, overrides)
    return registration.cls(config)


def missing_component_weights(specs: Sequence[ComponentSpec]) -> list[str]:
    """The one-sentence messages of every component (a BackboneSpec or RewardSpec) whose weights are missing,
    from the ``missing_weights(options)`` of each that can tell (``ChecksWeights``); nothing is loaded."""
    registry = get_registry()
    messages = []
    for spec in specs:
        cls = registry.get(spec.kind, spec.name).cls
        message = cls.missing_weights(spec.options) if issubclass(cls, ChecksWeights) else None
        if message:
            messages.append(message)
    return messages


def check_requirements(recipe: Recipe) -> None:
    """Raise one clear error listing every missing weight or input (one per line), then let the recipe open its
    inputs (e.g. find the face in a reference photo), before any work starts."""
    missing = recipe.missing_requirements()
    if missing:
        listing = "".join(f"\n  ({i}) {m}" for i, m in enumerate(missing, 1))
        raise MissingWeightsError(f"recipe `{recipe.name}` cannot start:{listing}")
    recipe.check_inputs()


