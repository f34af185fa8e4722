"""Online RL for diffusion models, as small pure functions: the SDE step and its Gaussian log-probability, group
advantages, the clipped surrogate, the KL to the reference, and the DiffusionNFT and AWM objectives.

Conventions (rectified flow, as every flow-matching backbone in prefopt): x_t = (1 − t)·x₀ + t·ε with t from 1
(noise) to 0 (data), velocity v = ε − x₀, so x₀ = x − t·v and ε = x + (1 − t)·v and the score is
∇log p_t(x) = −ε̂/t = −(x + (1 − t)·v)/t. The reverse-time SDE with diffusion g(t) that keeps the ODE's marginals
moves, over a step from t to t' < t (dt = t' − t < 0),

    x' = x + [v + g²/(2t)·(x + (1 − t)·v)]·dt + g·√(−dt)·z,    z ~ N(0, I),

a Gaussian step whose log-density GRPO differentiates. Flow-GRPO sets g = a·√(t/(1 − t)); DanceGRPO a constant
g = η. With g = 0 it is the Euler step of the ODE. docs/online-rl.md derives it and compares with the references.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

NoiseSchedule = Literal["flow_grpo", "constant"]


def sde_diffusion(t: torch.Tensor, level: float, schedule: NoiseSchedule = "flow_grpo",
                  t_max: float | None = None) -> torch.Tensor:
    """g(t): Flow-GRPO's a·√(t/(1 − t)) (``level`` = a), or DanceGRPO's constant η (``level`` = η).

    At t = 1 Flow-GRPO's g is infinite; as Flow-GRPO does, ``t_max`` (the grid's second time) caps t in the
    denominator so the first step stays finite."""
    if schedule == "constant":
        return torch.full_like(t, float(level))
    capped = t.clamp_max(t_max) if t_max is not None else t
    return level * torch.sqrt(t / (1.0 - capped).clamp_min(1e-6))


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like)


def sde_step_mean(x: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                  g: torch.Tensor) -> torch.Tensor:
    """The mean of x' given x: the drift v + g²/(2t)·(x + (1 − t)·v) integrated over dt = t' − t."""
    t, t_next, g = (_per_sample(value, x) for value in (t, t_next, g))
    dt = t_next - t
    return x + (velocity + g**2 / (2.0 * t) * (x + (1.0 - t) * velocity)) * dt


def sde_step_std(t: torch.Tensor, t_next: torch.Tensor, g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The standard deviation g·√(t − t') of the step's noise (per sample, broadcastable to ``like``)."""
    return _per_sample(g * torch.sqrt((t - t_next).clamp_min(0.0)), like)


def sde_step(x: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, g: torch.Tensor,
             noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x', mean, std) of one SDE step; ``noise`` is a standard normal draw of x's shape (g = 0: the ODE step)."""
    mean = sde_step_mean(x, velocity, t, t_next, g)
    std = sde_step_std(t, t_next, g, x)
    return mean + std * noise, mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std²) per element, averaged over every non-batch axis (Flow-GRPO's reduction: a sum over
    the thousands of elements of a video would make every ratio 0 or ∞). Shape ``[B]``."""
    log = -((x - mean) ** 2) / (2.0 * std**2) - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    return log.mean(dim=tuple(range(1, x.ndim)))


def gaussian_kl(mean: torch.Tensor, reference_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) ‖ N(reference_mean, std²)) per element, averaged over non-batch axes: the policy's step to
    the reference's at the same x and t (the two share the step's noise level). Shape ``[B]``."""
    return (((mean - reference_mean) ** 2) / (2.0 * std**2)).mean(dim=tuple(range(1, mean.ndim)))


def combine_rewards(rewards: dict[str, torch.Tensor], weights: dict[str, float], groups: torch.Tensor,
                    mode: Literal["weighted_sum", "group_normalized"] = "weighted_sum") -> torch.Tensor:
    """One reward per sample from named rewards: their weighted sum, or (``group_normalized``, as multi-reward GRPO
    variants do) the weighted sum of each reward normalised within its group first, so no reward's scale
    dominates."""
    total = torch.zeros_like(next(iter(rewards.values())), dtype=torch.float64)
    for name, values in rewards.items():
        values = values.double()
        if mode == "group_normalized":
            values = group_advantages(values, groups)
        total = total + weights.get(name, 1.0) * values
    return total


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, global_std: bool = False, eps: float = 1e-6,
                     clip: float | None = None) -> torch.Tensor:
    """(r − mean of its group) / (std of its group, or of every reward with ``global_std``), clipped to ±``clip``.
    A group whose rewards are all equal gets advantage 0 (nothing to learn from it)."""
    rewards = rewards.double()
    advantages = torch.zeros_like(rewards)
    overall = rewards.std(unbiased=False).clamp_min(eps)
    for group in torch.unique(groups):
        members = groups == group
        values = rewards[members]
        std = overall if global_std else values.std(unbiased=False).clamp_min(eps)
        advantages[members] = (values - values.mean()) / std
    return advantages.clamp(-clip, clip) if clip is not None else advantages


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                      clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped objective as a loss: mean over samples of max(−A·r, −A·clip(r, 1 − ε, 1 + ε)) with the ratio
    r = exp(log π − log π_old); and its health (mean ratio, fraction clipped, the approximate KL to π_old)."""
    ratio = torch.exp(log_prob - old_log_prob)
    advantages = advantages.to(ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        health = {"ratio": float(ratio.mean()), "clip_fraction": float(((ratio - 1.0).abs() > clip_range).float().mean()),
                  "approx_kl": float((0.5 * (log_prob - old_log_prob) ** 2).mean())}
    return loss, health


def optimality(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """DiffusionNFT's optimality probability r ∈ [0, 1]: 1/2 + clip(A, ±c)/(2c)."""
    return 0.5 + advantages.clamp(-clip, clip) / (2.0 * clip)


def nft_loss(prediction: torch.Tensor, old_prediction: torch.Tensor, target: torch.Tensor, r: torch.Tensor,
             beta: float) -> torch.Tensor:
    """DiffusionNFT's objective on the forward process: the implicit positive policy v⁺ = (1 − β)·v_old + β·v_θ is
    fitted to the samples in proportion r, the implicit negative v⁻ = (1 + β)·v_old − β·v_θ in proportion 1 − r,
    each by the flow-matching error to ``target`` (ε − x₀ at a fresh (t, ε)). Per-sample errors average over every
    non-batch axis; the loss is their mean, divided by β so its gradient does not shrink with β."""
    old_prediction = old_prediction.detach()
    positive = (1.0 - beta) * old_prediction + beta * prediction
    negative = (1.0 + beta) * old_prediction - beta * prediction
    axes = tuple(range(1, prediction.ndim))
    positive_error = ((positive - target) ** 2).mean(dim=axes)
    negative_error = ((negative - target) ** 2).mean(dim=axes)
    r = r.to(positive_error)
    return ((r * positive_error + (1.0 - r) * negative_error) / beta).mean()


def matching_log_prob(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AWM's stand-in for a log-likelihood: the negative flow-matching error, averaged over non-batch axes (its
    advantage-weighted gradient is the advantage-weighted score-matching gradient)."""
    return -((prediction - target) ** 2).mean(dim=tuple(range(1, prediction.ndim)))
