"""The backbone contract, checked where the core calls a backbone: a plugin that returns the wrong thing stops the
run with one sentence naming the method and what it returned, not with a shape error deep inside the loss.

Each check costs a few comparisons of shapes; none copies a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prefopt.errors import PrefoptError
from prefopt.interfaces import Backbone, BackboneOutput

GUIDE = "docs/writing-a-backbone.md, 'The contract'"


class ContractError(PrefoptError):
    """A backbone plugin returned something the core cannot use."""


def _broken(backbone: Backbone, what: str) -> ContractError:
    return ContractError(f"backbone `{backbone.name}` ({type(backbone).__module__}) broke prefopt's backbone "
                         f"contract: {what} (see {GUIDE}).")


def encode_prompts(backbone: Backbone, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``backbone.encode_prompts``, checked: a dict of tensors, every one with one row per prompt."""
    encoded = backbone.encode_prompts(prompts)
    if not isinstance(encoded, dict) or not encoded:
        raise _broken(backbone, f"encode_prompts returned {type(encoded).__name__}, not a dict of tensors")
    for key, value in encoded.items():
        if not isinstance(value, torch.Tensor):
            raise _broken(backbone, f"encode_prompts returned `{key}` as {type(value).__name__}, not a tensor")
        if value.ndim == 0 or value.shape[0] != len(prompts):
            raise _broken(backbone, f"encode_prompts returned `{key}` of shape {tuple(value.shape)} for "
                                    f"{len(prompts)} prompts; every tensor must be batch-first")
    return encoded


def encode_media(backbone: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """``backbone.encode_media``, checked: latents ``[B, C, F, h, w]`` for pixels ``[B, 3, F, H, W]``."""
    latents = backbone.encode_media(pixels)
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[0] != pixels.shape[0]:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise _broken(backbone, f"encode_media returned {shape} for pixels {tuple(pixels.shape)}; it must return "
                                "latents [B, C, F, h, w]")
    return latents


def forward_train(backbone: Backbone, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                  conditioning: dict, denoiser: torch.nn.Module | None = None) -> BackboneOutput:
    """``backbone.forward_train``, checked: prediction and target of the latents' shape, one weight per sample."""
    out = backbone.forward_train(latents, noise, timesteps, conditioning, denoiser=denoiser)
    if not isinstance(out, BackboneOutput):
        raise _broken(backbone, f"forward_train returned {type(out).__name__}, not a BackboneOutput")
    for name in ("prediction", "target"):
        value = getattr(out, name)
        if not isinstance(value, torch.Tensor) or value.shape != latents.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _broken(backbone, f"forward_train returned a {name} of shape {shape} for latents "
                                    f"{tuple(latents.shape)}; it must have the latents' shape")
    if not isinstance(out.weights, torch.Tensor) or tuple(out.weights.shape) != (latents.shape[0],):
        shape = tuple(out.weights.shape) if isinstance(out.weights, torch.Tensor) else type(out.weights).__name__
        raise _broken(backbone, f"forward_train returned weights of shape {shape} for a batch of "
                                f"{latents.shape[0]}; it must return one weight per sample")
    return out


def generate(backbone: Backbone, prompts: Sequence[str], seeds: Sequence[int], **size) -> list:
    """``backbone.generate``, checked: one GeneratedMedia per prompt, its frames uint8 ``[F, H, W, 3]`` of the size
    asked for."""
    made = backbone.generate(prompts, seeds, **size)
    if not isinstance(made, list) or len(made) != len(prompts):
        count = len(made) if isinstance(made, list) else type(made).__name__
        raise _broken(backbone, f"generate returned {count} items for {len(prompts)} prompts")
    for item in made:
        frames = getattr(item, "frames", None)
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            shape = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise _broken(backbone, f"generate returned frames {shape}; they must be uint8 [F, H, W, 3]")
        asked = tuple(size.get(k) for k in ("num_frames", "height", "width"))
        if None not in asked and frames.shape[:3] != asked:
            raise _broken(backbone, f"generate returned frames of {frames.shape[0]}×{frames.shape[1]}×"
                                    f"{frames.shape[2]} for {asked[0]}×{asked[1]}×{asked[2]} asked")
    return made
