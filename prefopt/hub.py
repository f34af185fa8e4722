"""Where model weights come from: a local directory or the Hugging Face cache, never an implicit download.

A run that needs tens of gigabytes should not start a download as a side effect. Every loader passes
:func:`pretrained_kwargs` (``local_files_only=True`` unless the run opted in with ``run.allow_downloads``, which
recipes apply with :func:`downloads` around their checks and their run),
and checks first, with :func:`missing_weights_message`, that every file the loader will read is there:
``model_index.json`` and each component's config and weights for a diffusers pipeline, ``config.json`` and
the weights (every shard an index names) for a transformers model. When something is missing the user
gets one sentence naming the model, the missing file and how to provide it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from prefopt.errors import PrefoptError

_ALLOW_DOWNLOADS = False
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.onnx", "*.gguf")
INDEX_SUFFIX = ".index.json"
# Pipeline components that hold no weights (they need some file in their folder, no weights file).
WEIGHTLESS = ("tokenizer", "scheduler", "processor", "feature_extractor", "image_processor")


@contextlib.contextmanager
def downloads(allowed: bool) -> Iterator[None]:
    """Let loaders inside the block fetch from the hub (a run's ``run.allow_downloads: true``); off by default, and
    as before once the block ends (a recipe built in a notebook changes nothing for the next one)."""
    global _ALLOW_DOWNLOADS
    previous, _ALLOW_DOWNLOADS = _ALLOW_DOWNLOADS, bool(allowed)
    try:
        yield
    finally:
        _ALLOW_DOWNLOADS = previous


def downloads_allowed() -> bool:
    return _ALLOW_DOWNLOADS


def pretrained_kwargs() -> dict:
    """Keyword arguments every ``from_pretrained`` in prefopt passes: offline unless downloads are allowed."""
    return {"local_files_only": not _ALLOW_DOWNLOADS}


def local_directory(pretrained: str, marker: str, revision: str | None = None) -> Path | None:
    """``pretrained`` itself when it is a directory, else its snapshot in the hub cache (found by ``marker``)."""
    if not pretrained:
        return None
    if os.path.isdir(pretrained):
        return Path(pretrained)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(pretrained, marker, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _weights_missing(folder: Path) -> str | None:
    """The first missing file of a model folder: its weights, or a shard its index names."""
    if not folder.is_dir():
        return f"{folder.name}/"
    # Several indexes (safetensors and bin, or variants) may sit side by side with only one format
    # downloaded: one complete index is enough; safetensors' is checked first.
    indexes = sorted(folder.glob(f"*{INDEX_SUFFIX}"), key=lambda p: (".safetensors." not in p.name, p.name))
    first_missing = None
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            first_missing = first_missing or index.name
            continue
        absent = sorted(s for s in shards if not (folder / s).is_file())
        if not absent:
            return None
        first_missing = first_missing or absent[0]
    if first_missing:
        return first_missing
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        return f"a weights file ({', '.join(WEIGHT_FILES[:2])})"
    return None


def _pipeline_missing(root: Path) -> str | None:
    try:
        components = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError):
        return "model_index.json"
    for name, spec in components.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[1] is None:
            continue
        folder = root / name
        if not folder.is_dir() or not any(folder.iterdir()):
            return f"{name}/"
        if not any(kind in name for kind in WEIGHTLESS):
            missing = _weights_missing(folder)
            if missing:
                return f"{name}/{missing}"
    return None


def missing_file(pretrained: str, marker: str, revision: str | None = None) -> str | None:
    """The first file a loader will need that is not there (``marker`` itself when nothing is), or None."""
    root = local_directory(pretrained, marker, revision)
    if root is None or not (root / marker).is_file():
        return marker
    if marker == "model_index.json":
        return _pipeline_missing(root)
    return _weights_missing(root)


def looks_like_hub_id(pretrained: str) -> bool:
    """`org/name` and not a path on this machine (a relative path like `runs/x/model` is not a hub id)."""
    return bool(HUB_ID.fullmatch(pretrained or "")) and not os.path.exists(pretrained) and \
        not pretrained.startswith(".")


def missing_weights_message(pretrained: str, label: str, marker: str, option: str, revision: str | None = None,
                            how: str | None = None) -> str | None:
    """One sentence naming the missing weights (or the first missing file) and how to provide them, or None
    when they are there.

    ``option`` names the setting in prose, e.g. "the reward's `model` option"; ``how`` replaces the generic
    advice (a backbone names its model's download command).
    """
    missing = missing_file(pretrained, marker, revision)
    if missing is None or (_ALLOW_DOWNLOADS and pretrained and not os.path.isdir(pretrained)):
        return None
    if how is None:
        how = (f"Download them with `hf download {pretrained} --local-dir DIR` and set {option} to DIR, or set "
               "`run.allow_downloads: true`."
               if looks_like_hub_id(pretrained) else f"Set {option} to a directory holding them.")
    where = f"`{pretrained}`" if pretrained else "(none configured)"
    if missing == marker:
        return f"{label} weights {where} are neither a local directory with {marker} nor in the Hugging Face cache. {how}"
    return f"{label} weights {where} are incomplete: `{missing}` is missing. {how}"


def resolve_path(path: str | os.PathLike) -> Path:
    """A file path, or ``package://<package>/<path inside it>`` for files shipped in installed packages."""
    path = os.fspath(path)
    if not path.startswith("package://"):
        return Path(path)
    package, _, inner = path.removeprefix("package://").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrefoptError(f"`{path}`: package `{package}` is not installed.")
    return Path(next(iter(spec.submodule_search_locations))) / inner
