"""What a diffusers model folder says before anything loads: which components it was saved without, which pipeline
class saved it, whether its weights are there. `prefopt validate` and the checks before a run read these; the
loader (prefopt/diffusers_backbone.py) then loads what they have vouched for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefopt.hub import local_directory, looks_like_hub_id

INDEX = "model_index.json"


def _index(config: Any) -> dict | None:
    """The folder's (or the cached hub snapshot's) model_index.json, or None when it is not here or unreadable."""
    if not config.pretrained:
        return None
    root = local_directory(config.pretrained_path, INDEX, config.revision)
    try:
        index = json.loads((root / INDEX).read_text()) if root is not None else None
    except (OSError, ValueError):  # missing or unreadable: the missing-weights check names it
        return None
    return index if isinstance(index, dict) else None


def saved_without(config: Any) -> dict[str, None]:
    """Components the saved pipeline has as `[null, null]` (e.g. no VAE: a pixel-space model). diffusers'
    from_pretrained refuses to leave out a component its pipeline class declares unless it is passed as None."""
    return _nulls(_index(config) or {})


def _nulls(index: dict) -> dict[str, None]:
    return {name: None for name, spec in index.items()
            if not name.startswith("_") and isinstance(spec, list) and spec[0] is None}


def has_vae(config: Any) -> bool | None:
    """Whether the model has a VAE: from its index when it is here; a hub model not downloaded yet is taken to be its
    family's usual one (with a VAE); a local folder that is not there: unknown (None)."""
    index = _index(config)
    if index is not None:
        return "vae" not in _nulls(index)
    return True if looks_like_hub_id(config.pretrained_path) else None


def other_family_message(config: Any, name: str, pipeline_class_name: str, label: str) -> str | None:
    """A sentence when the folder was saved from a pipeline class another registered family loads, else None."""
    from prefopt.plugins import get_registry

    saved = (_index(config) or {}).get("_class_name")
    if not saved or saved == pipeline_class_name:
        return None
    families = [entry.name for entry in get_registry().all("backbones")
                if getattr(entry.cls, "pipeline_class_name", None) == saved]
    if not families:  # a pipeline class no registered family loads: diffusers may still load it
        return None
    return (f"`{config.pretrained}` holds a {saved}, the model of backbone `{families[0]}`, but backbone `{name}` "
            f"loads a {pipeline_class_name}: set `backbone.name={families[0]}`, or point `backbone.options.pretrained` "
            f"at a {label} model.")


def missing_weights_message(config: Any, label: str, hint: str) -> str | None:
    """One sentence saying which weights (or which of their files) are missing and how to provide them, or None."""
    from prefopt.hub import missing_weights_message as message

    pretrained = config.pretrained_path
    if pretrained and not looks_like_hub_id(pretrained):  # a folder here: the family's download hint may not fit it
        hint = "Set `backbone.options.pretrained` to a directory holding them."
        if not Path(pretrained).is_absolute():
            hint = f"{hint} (A relative path is read from `{Path.cwd()}`.)"
    return message(pretrained, label, INDEX, "`backbone.options.pretrained`", config.revision, how=hint)
