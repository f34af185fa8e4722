"""Where model weights come from: a local directory or the Hugging Face cache, never an implicit download.

A run that needs tens of gigabytes should not start a download as a side effect; every loader checks
first and, when weights are missing, says in one sentence which model and how to provide it.
"""

from __future__ import annotations

import os


def weights_available(pretrained: str, marker: str, revision: str | None = None) -> bool:
    """Whether ``pretrained`` (a directory or a hub id) has ``marker`` locally or in the hub cache."""
    if not pretrained:
        return False
    if os.path.isdir(pretrained):
        return os.path.isfile(os.path.join(pretrained, marker))
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(pretrained, marker, revision=revision)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(cached, str)


def missing_weights_message(pretrained: str, label: str, marker: str, option: str, revision: str | None = None) -> str | None:
    """One sentence naming the missing weights and how to provide them, or None when they are there.

    ``option`` names the setting in prose, e.g. "the reward's `model` option".
    """
    if weights_available(pretrained, marker, revision):
        return None
    how = (f"Download them with `huggingface-cli download {pretrained} --local-dir DIR` and set {option} to DIR"
           if pretrained and not os.path.isabs(pretrained) and "/" in pretrained
           else f"Set {option} to a directory holding them")
    where = f"`{pretrained}`" if pretrained else "(none configured)"
    return (f"{label} weights {where} are neither a local directory with {marker} nor in the Hugging Face "
            f"cache. {how}.")
