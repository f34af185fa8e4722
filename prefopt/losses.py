"""Diffusion-DPO objectives as small pure functions.

Notation: ``e`` is a per-sample squared error of the model's prediction against its target (ε for
ε-prediction, v for v-prediction, the velocity ε − x₀ for flow matching), averaged over every non-batch
axis. With the policy θ and the frozen reference, the Diffusion-DPO logit of a pair is

    h = −β/2 · ((e_θ,w − e_ref,w) − (e_θ,l − e_ref,l))

and the sigmoid loss is −log σ(h) (Wallace et al., 2023). MagicID's Eq. 9 writes the same objective with
the sign and the β placement garbled; docs/losses.md derives the form used here.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "hinge", "ipo", "robust"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "hinge", "ipo", "robust")


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, reduced over every non-batch axis; float32, shape ``[B]``."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    squared = (prediction.float() - target.float()).pow(2)
    return squared.reshape(squared.shape[0], -1).mean(dim=1)


def dpo_logits(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """The pair logit h = −β/2 · ((e_θ,w − e_ref,w) − (e_θ,l − e_ref,l)); positive favours the winner."""
    return -0.5 * beta * ((model_err_w - ref_err_w) - (model_err_l - ref_err_l))


def diffusion_dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    sft_weight: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair Diffusion-DPO losses, shape ``[B]``.

    Args:
        model_err_w, model_err_l: the policy's per-sample errors on winners and losers, ``[B]``.
        ref_err_w, ref_err_l: the reference's errors on the same noised inputs, ``[B]`` (no gradient).
        beta: the KL strength (Diffusion-DPO uses thousands for pixel-space-scale errors).
        loss_type: ``sigmoid`` (DPO), ``hinge`` (SLiC), ``ipo`` (IPO, Azar et al.), or ``robust``
            (label-noise-robust DPO, Chowdhury et al.; uses ``label_smoothing``). Names follow trl.
        label_smoothing: the assumed probability that a preference label is flipped (``robust`` only).
        sft_weight: adds ``sft_weight · e_θ,w``, a supervised term on the winner.
        weights: optional per-pair weights ``[B]`` multiplying each pair's loss.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    logits = dpo_logits(model_err_w, model_err_l, ref_err_w, ref_err_l, beta=beta)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(logits)
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - logits)
    elif loss_type == "ipo":
        # IPO regresses the β-free log-ratio difference onto 1/(2β).
        losses = (logits / beta - 1.0 / (2.0 * beta)).pow(2)
    elif loss_type == "robust":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5) for the robust loss, got {label_smoothing}")
        losses = (
            -F.logsigmoid(logits) * (1.0 - label_smoothing) + F.logsigmoid(-logits) * label_smoothing
        ) / (1.0 - 2.0 * label_smoothing)
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if sft_weight:
        losses = losses + sft_weight * model_err_w
    if weights is not None:
        losses = losses * weights
    return losses


def dpo_metrics(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
) -> dict[str, float]:
    """Batch means of the implicit rewards, their margin and accuracy, and the raw errors."""
    with torch.no_grad():
        reward_w = -0.5 * beta * (model_err_w - ref_err_w)
        reward_l = -0.5 * beta * (model_err_l - ref_err_l)
        margin = reward_w - reward_l
        return {
            "implicit_accuracy": (margin > 0).float().mean().item(),
            "reward_margin": margin.mean().item(),
            "reward_winner": reward_w.mean().item(),
            "reward_loser": reward_l.mean().item(),
            "model_err_winner": model_err_w.mean().item(),
            "model_err_loser": model_err_l.mean().item(),
            "ref_err_winner": ref_err_w.mean().item(),
            "ref_err_loser": ref_err_l.mean().item(),
        }


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The plain (SFT) denoising loss: weighted mean of per-sample errors, a scalar."""
    errors = per_sample_mse(prediction, target)
    if weights is not None:
        errors = errors * weights
    return errors.mean()
