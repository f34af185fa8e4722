"""The policy updates of online RL, one function per algorithm, on one micro-batch of an epoch's samples.

``grpo`` recomputes each trained SDE step's log-probability under the policy and applies PPO's clipped ratio to the
rollout's (plus β·KL to the reference's step at the same state). ``nft`` and ``awm`` train on the forward process:
each sample's final latents are noised afresh at times drawn from the backbone's training density, and the loss
compares the policy's prediction with the flow-matching (or DDPM) target and with the rollout policy's prediction,
computed before the epoch's first update (:func:`old_predictions`). Every function returns its loss (already scaled
by ``share``, the micro-batch's part of the optimizer step) and its health metrics.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from prefopt import contract
from prefopt.lora import reference_mode
from prefopt.rl import clipped_surrogate, gaussian_kl, matching_log_prob, nft_loss, optimality
from prefopt.rollout import SDE, Rollout, step_log_prob


@dataclass
class Micro:
    """One micro-batch: its samples' conditioning, advantages, and what the algorithm trains on."""

    conditioning: dict[str, torch.Tensor]
    negative: dict[str, torch.Tensor] | None
    advantages: torch.Tensor  # [b], float32
    rollout: Rollout | None = None  # grpo: the samples' trajectories (their rows)
    forward: ForwardProcess | None = None  # nft / awm: the noised samples and the rollout policy's outputs


@dataclass
class ForwardProcess:
    """Each sample's final latents with the noise and times it is trained at (``K`` per sample), and the rollout
    policy's prediction there (for ``nft``) and its matching log-probability (for ``awm``)."""

    latents: torch.Tensor  # [b, C, F, h, w]
    noise: torch.Tensor  # [b, K, C, F, h, w]
    timesteps: torch.Tensor  # [b, K]
    old_prediction: torch.Tensor | None = None  # [b, K, C, F, h, w]
    old_log_prob: torch.Tensor | None = None  # [b, K]

    def take(self, rows: torch.Tensor) -> ForwardProcess:
        pick = (lambda t: t[rows] if t is not None else None)
        return ForwardProcess(pick(self.latents), pick(self.noise), pick(self.timesteps),
                              pick(self.old_prediction), pick(self.old_log_prob))


def _kept_activations(options):
    """Where the policy forward keeps what backward needs: in host memory with ``offload_activations``."""
    if not options.offload_activations:
        return contextlib.nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())


def _device(conditioning: dict, device) -> dict:
    return {k: v.to(device) for k, v in conditioning.items()}


def grpo_update(backbone, denoiser, micro: Micro, steps: list[int], sde: SDE, options, share: float,
                backward) -> dict[str, float]:
    """The clipped surrogate on each trained SDE step (one backward per step, so one step's activations live at a
    time), plus ``kl_beta``·KL(policy step ‖ reference step) at the same state."""
    rollout, device = micro.rollout, backbone.device
    conditioning = _device(micro.conditioning, device)
    negative = _device(micro.negative, device) if micro.negative is not None else None
    health: dict[str, float] = {}
    for index in steps:
        k = rollout.steps.index(index)
        state, next_state = rollout.states[:, k].to(device), rollout.next_states[:, k].to(device)
        args = (rollout.sigmas, index, sde, conditioning, negative, options.rollout_guidance_scale)
        with _kept_activations(options):
            log_prob, mean, std = step_log_prob(backbone, denoiser, state, next_state, *args)
        loss, step_health = clipped_surrogate(log_prob, rollout.log_probs[:, k].to(device), micro.advantages.to(device),
                                              options.clip_range)
        if options.kl_beta > 0:
            with torch.no_grad(), reference_mode(denoiser):
                _, reference_mean, _ = step_log_prob(backbone, denoiser, state, next_state, *args)
            kl = gaussian_kl(mean, reference_mean, std).mean()
            loss = loss + options.kl_beta * kl
            step_health["kl"] = kl.item()
        backward(loss * share / len(steps))
        for name, value in {"policy_loss": loss.item(), **step_health}.items():
            health[name] = health.get(name, 0.0) + value / len(steps)
    return health


def _forward_outputs(backbone, denoiser, forward: ForwardProcess, k: int, conditioning: dict):
    device = backbone.device
    return contract.forward_train(backbone, forward.latents.to(device), forward.noise[:, k].to(device),
                                   forward.timesteps[:, k].to(device), conditioning, denoiser=denoiser)


@torch.no_grad()
def old_predictions(backbone, denoiser, forward: ForwardProcess, conditioning: dict) -> ForwardProcess:
    """The rollout policy's prediction and matching log-probability at every (sample, time) of ``forward``."""
    conditioning = _device(conditioning, backbone.device)
    predictions, log_probs = [], []
    for k in range(forward.timesteps.shape[1]):
        out = _forward_outputs(backbone, denoiser, forward, k, conditioning)
        predictions.append(out.prediction.float().cpu())
        log_probs.append(matching_log_prob(out.prediction.float(), out.target.float()).cpu())
    return ForwardProcess(forward.latents, forward.noise, forward.timesteps, torch.stack(predictions, 1),
                          torch.stack(log_probs, 1))


def _reference_gap(backbone, denoiser, forward: ForwardProcess, k: int, conditioning: dict,
                   prediction: torch.Tensor) -> torch.Tensor:
    """‖v_θ − v_ref‖² averaged over elements and samples: the KL of two Gaussians with the same noise, up to scale."""
    with torch.no_grad(), reference_mode(denoiser):
        reference = _forward_outputs(backbone, denoiser, forward, k, conditioning).prediction.float()
    return ((prediction - reference) ** 2).mean()


def _forward_update(backbone, denoiser, micro: Micro, options, share: float, backward, objective) -> dict[str, float]:
    """One backward per training time of each sample (one time's activations live at a time); ``objective(
    prediction, target, k)`` gives that time's loss and health, to which ``kl_beta``·‖v_θ − v_ref‖² is added."""
    forward, device = micro.forward, backbone.device
    conditioning = _device(micro.conditioning, device)
    times = forward.timesteps.shape[1]
    health: dict[str, float] = {}
    for k in range(times):
        with _kept_activations(options):
            out = _forward_outputs(backbone, denoiser, forward, k, conditioning)
        prediction = out.prediction.float()
        loss, terms = objective(prediction, out.target.float(), k)
        terms["policy_loss"] = loss.item()
        if options.kl_beta > 0:
            gap = _reference_gap(backbone, denoiser, forward, k, conditioning, prediction)
            loss, terms["kl"] = loss + options.kl_beta * gap, gap.item()
        backward(loss * share / times)
        for name, value in terms.items():
            health[name] = health.get(name, 0.0) + value / times
    return health


def nft_update(backbone, denoiser, micro: Micro, options, share: float, backward) -> dict[str, float]:
    """DiffusionNFT: implicit positive and negative policies around the rollout policy, weighted by the optimality
    probability r = 1/2 + clip(A)/(2c)."""
    device = backbone.device
    r = optimality(micro.advantages, options.advantage_clip).to(device)

    def objective(prediction, target, k):
        old = micro.forward.old_prediction[:, k].to(device)
        return nft_loss(prediction, old, target, r, options.nft_beta), {}

    return _forward_update(backbone, denoiser, micro, options, share, backward, objective)


def awm_update(backbone, denoiser, micro: Micro, options, share: float, backward) -> dict[str, float]:
    """Advantage Weighted Matching: PPO's clipped ratio on the matching log-probability −‖v − (ε − x₀)‖² at
    forward-process samples, against the rollout policy's."""
    device = backbone.device
    advantages = micro.advantages.to(device)

    def objective(prediction, target, k):
        old = micro.forward.old_log_prob[:, k].to(device)
        return clipped_surrogate(matching_log_prob(prediction, target), old, advantages, options.clip_range)

    return _forward_update(backbone, denoiser, micro, options, share, backward, objective)
