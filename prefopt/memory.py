"""Memory and speed levers on the denoiser: checkpointing every n-th block, the attention backend.

Activation checkpointing of only every n-th transformer block.

Checkpointing every block saves the most memory and recomputes a whole forward; when memory allows,
checkpointing every second or third block recomputes less. diffusers passes each block module to the
model's checkpointing function, so a selective function decides per block.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from prefopt.errors import PrefoptError


def transformer_blocks(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's repeated blocks, in order (every ModuleList child of the model, flattened)."""
    blocks = []
    for child in denoiser.children():
        if isinstance(child, torch.nn.ModuleList):
            blocks.extend(child)
    return blocks


def enable_block_checkpointing(denoiser: torch.nn.Module, every: int = 1) -> int:
    """Checkpoint blocks 0, n, 2n, …; returns how many blocks are checkpointed."""
    if every < 1:
        raise ValueError(f"`every` must be at least 1, got {every}")
    chosen = {id(block) for index, block in enumerate(transformer_blocks(denoiser)) if index % every == 0}

    def selective(block, *args, **kwargs):
        if id(block) in chosen:
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    denoiser.enable_gradient_checkpointing(gradient_checkpointing_func=selective)
    return len(chosen)


def set_attention_backend(denoiser: torch.nn.Module, backend: str) -> None:
    """Use a diffusers attention backend; hub-kernel backends are refused because they download code."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    names = [b.value for b in AttentionBackendName if not b.value.endswith("_hub")]  # hub kernels download code
    if backend not in names:
        raise PrefoptError(f"`attention_backend` must be one of {', '.join(names)}; got `{backend}`.")
    try:
        denoiser.set_attention_backend(backend)
    except (RuntimeError, ImportError, ValueError) as e:
        raise PrefoptError(f"attention backend `{backend}` is not usable here: {e}") from e
