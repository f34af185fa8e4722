"""DPO step schedules: the same loss and gradients, different memory and compute trade-offs.

``joint``: one policy forward on [winners, losers] with gradients, one backward (the straightforward step).

``split``: for long videos, where the activations of a joint forward do not fit. Pair by pair: the
reference errors without gradients, the winner's forward with gradients (its graph kept), the loser's
error without gradients, the loss's gradient with respect to both errors (analytic, on scalars),
the winner's backward weighted by its error's gradient, then the loser's forward and weighted backward.
By the chain rule the accumulated parameter gradient equals the joint step's. One sample's activations
are alive at a time (the loser's no-grad forward keeps none), and it costs one extra policy forward per
pair: the loser's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from prefopt import contract
from prefopt.interfaces import Backbone
from prefopt.lora import reference_mode
from prefopt.losses import diffusion_dpo_loss, dpo_metrics, per_sample_mse

Backward = Callable[[torch.Tensor], None]


@dataclass
class Batch:
    """One micro-batch of cached tensors, on the training device."""

    latents: torch.Tensor  # [2B, ...] winners then losers for DPO, [B, ...] for SFT
    conditioning: dict[str, torch.Tensor]
    weights: torch.Tensor  # per pair (DPO) or ones (SFT)


class StepOptions(Protocol):
    """The trainer options a DPO step reads (TrainerConfig has them all)."""

    beta: float
    loss_type: str
    label_smoothing: float
    rpo_alpha: float
    offload_activations: bool




def _errors(backbone: Backbone, model: torch.nn.Module, batch: Batch, noise: torch.Tensor,
            timesteps: torch.Tensor) -> torch.Tensor:
    out = contract.forward_train(backbone, batch.latents, noise, timesteps, batch.conditioning, denoiser=model)
    return per_sample_mse(out.prediction, out.target) * out.weights


def _policy_errors(backbone: Backbone, model: torch.nn.Module, batch: Batch, noise: torch.Tensor,
                   timesteps: torch.Tensor, config: StepOptions) -> torch.Tensor:
    """The policy's errors with gradients; activations saved on the host when ``offload_activations``."""
    if not config.offload_activations:
        return _errors(backbone, model, batch, noise, timesteps)
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        return _errors(backbone, model, batch, noise, timesteps)


def _loss_terms(config: StepOptions, err_w: torch.Tensor, err_l: torch.Tensor, ref_w: torch.Tensor,
                ref_l: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=config.beta, loss_type=config.loss_type,
                              label_smoothing=config.label_smoothing, sft_weight=config.rpo_alpha,
                              weights=weights).mean()


def reference_errors(backbone: Backbone, denoiser: torch.nn.Module, batch: Batch, noise: torch.Tensor,
                     timesteps: torch.Tensor, reference_adapter: str | None) -> torch.Tensor:
    with torch.no_grad(), reference_mode(denoiser, reference_adapter):
        return _errors(backbone, denoiser, batch, noise, timesteps)


def joint_step(backbone: Backbone, denoiser: torch.nn.Module, model: torch.nn.Module, batch: Batch,
               noise: torch.Tensor, timesteps: torch.Tensor, config: StepOptions, reference_adapter: str | None,
               backward: Backward) -> dict[str, float]:
    """Policy forward on winners and losers together, one backward."""
    noise2, t2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
    ref_w, ref_l = reference_errors(backbone, denoiser, batch, noise2, t2, reference_adapter).chunk(2)
    err_w, err_l = _policy_errors(backbone, model, batch, noise2, t2, config).chunk(2)
    loss = _loss_terms(config, err_w, err_l, ref_w, ref_l, batch.weights)
    backward(loss)
    return {"loss": loss.item(), **dpo_metrics(err_w, err_l, ref_w, ref_l, beta=config.beta)}


def split_step(backbone: Backbone, denoiser: torch.nn.Module, model: torch.nn.Module, batch: Batch,
               noise: torch.Tensor, timesteps: torch.Tensor, config: StepOptions, reference_adapter: str | None,
               backward: Backward) -> dict[str, float]:
    """One pair at a time, one sample's activations at a time."""
    per_pair = [_split_pair(backbone, denoiser, model, batch, noise, timesteps, config, reference_adapter, index,
                            backward) for index in range(noise.shape[0])]
    err_w, err_l, ref_w, ref_l = (torch.cat(errors) for errors in zip(*per_pair, strict=True))
    loss = _loss_terms(config, err_w, err_l, ref_w, ref_l, batch.weights)
    return {"loss": loss.item(), **dpo_metrics(err_w, err_l, ref_w, ref_l, beta=config.beta)}


def _split_pair(backbone: Backbone, denoiser: torch.nn.Module, model: torch.nn.Module, batch: Batch,
                noise: torch.Tensor, timesteps: torch.Tensor, config: StepOptions, reference_adapter: str | None,
                index: int, backward: Backward) -> tuple[torch.Tensor, ...]:
    """One pair's share of the gradient of the batch-mean loss; returns its four errors (detached).

    Every forward here sees one sample, so the policy's and the reference's errors come from kernels of the
    same shapes: rounding that differs with the batch size would otherwise reach the loss magnified by β/2.
    """
    pairs, here = noise.shape[0], slice(index, index + 1)
    winner, loser = _slice_batch(batch, index), _slice_batch(batch, pairs + index)
    args = noise[here], timesteps[here]
    ref_w, ref_l = (reference_errors(backbone, denoiser, sample, *args, reference_adapter) for sample in (winner, loser))
    err_w = _policy_errors(backbone, model, winner, *args, config)
    with torch.no_grad():  # the unwrapped denoiser: no distributed hooks between the winner's forward and backward
        err_l = _errors(backbone, denoiser, loser, *args)
    leaf_w, leaf_l = err_w.detach().requires_grad_(True), err_l.clone().requires_grad_(True)
    pair_loss = _loss_terms(config, leaf_w, leaf_l, ref_w, ref_l, batch.weights[here]) / pairs
    grad_w, grad_l = torch.autograd.grad(pair_loss, (leaf_w, leaf_l))
    backward((grad_w * err_w).sum())
    backward((grad_l * _policy_errors(backbone, model, loser, *args, config)).sum())
    return err_w.detach(), err_l, ref_w, ref_l


def _slice_batch(batch: Batch, index: int) -> Batch:
    return Batch(latents=batch.latents[index : index + 1],
                 conditioning={k: v[index : index + 1] for k, v in batch.conditioning.items()},
                 weights=batch.weights)


DPOStep = Callable[[Backbone, torch.nn.Module, torch.nn.Module, Batch, torch.Tensor, torch.Tensor, StepOptions,
                    str | None, Backward], dict[str, float]]
SCHEDULES: dict[str, DPOStep] = {"joint": joint_step, "split": split_step}
