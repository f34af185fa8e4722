"""Rollouts for online RL: a flow-matching backbone sampled step by step with the SDE of :mod:`prefopt.rl` on
chosen steps (the ODE's Euler step elsewhere), keeping what GRPO trains on: the state before and after each SDE
step and that step's log-probability.

With no SDE step this is the pipeline's own Euler sampler (same σ grid, same noise from the same seeds, same
classifier-free guidance): tests/prefopt/test_rollout.py checks the final latents equal the pipeline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prefopt.rl import NoiseSchedule, gaussian_log_prob, sde_diffusion, sde_step


@dataclass
class Rollout:
    """One batch of trajectories: the final latents, and for each of its K SDE steps the states before and after,
    the step's log-probability under the sampling policy, and the step's index in ``sigmas``."""

    latents: torch.Tensor  # [B, C, F, h, w]
    states: torch.Tensor  # [B, K, C, F, h, w]
    next_states: torch.Tensor  # [B, K, C, F, h, w]
    log_probs: torch.Tensor  # [B, K]
    steps: tuple[int, ...]
    sigmas: torch.Tensor  # [N + 1], float64


@dataclass(frozen=True)
class SDE:
    """The stochastic part of the sampler: which steps are SDE steps and how much noise they inject."""

    steps: frozenset[int]
    level: float
    schedule: NoiseSchedule = "flow_grpo"

    def diffusion(self, sigmas: torch.Tensor, index: int, batch: int) -> torch.Tensor:
        """g at step ``index`` for a batch (0 on ODE steps); Flow-GRPO's g is capped at the grid's second σ."""
        t = torch.full((batch,), float(sigmas[index]), dtype=torch.float64)
        if index not in self.steps:
            return torch.zeros_like(t)
        return sde_diffusion(t, self.level, self.schedule, t_max=float(sigmas[1]))


def window_steps(num_steps: int, size: int, start_range: tuple[float, float], generator: torch.Generator) -> frozenset[int]:
    """The SDE window: ``size`` consecutive steps starting at a step drawn uniformly from the fraction
    ``start_range`` of the grid (MixGRPO/Flow-GRPO-Fast put it early, where samples diverge); 0 = every step."""
    if size <= 0 or size >= num_steps:
        return frozenset(range(num_steps))
    low = int(start_range[0] * num_steps)
    high = max(low, min(int(start_range[1] * num_steps), num_steps - size))
    start = low + int(torch.randint(0, high - low + 1, (1,), generator=generator))
    return frozenset(range(start, start + size))


def guided_velocity(backbone, denoiser, x: torch.Tensor, sigma: torch.Tensor, conditioning: dict,
                    negative: dict | None, guidance_scale: float) -> torch.Tensor:
    """The velocity with classifier-free guidance v_u + s·(v_c − v_u) when a negative conditioning is given."""
    velocity = backbone.predict_velocity(x, sigma, conditioning, denoiser)
    if negative is None or guidance_scale == 1.0:
        return velocity
    unconditional = backbone.predict_velocity(x, sigma, negative, denoiser)
    return unconditional + guidance_scale * (velocity - unconditional)


def step_log_prob(backbone, denoiser, state: torch.Tensor, next_state: torch.Tensor, sigmas: torch.Tensor,
                  index: int, sde: SDE, conditioning: dict, negative: dict | None, guidance_scale: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(next_state | state), step mean, step std) of SDE step ``index`` under ``denoiser``: the same
    computation the sampler used, so an unchanged policy reproduces the sampler's log-probability."""
    batch = state.shape[0]
    t = torch.full((batch,), float(sigmas[index]), dtype=torch.float64)
    t_next = torch.full((batch,), float(sigmas[index + 1]), dtype=torch.float64)
    velocity = guided_velocity(backbone, denoiser, state, t, conditioning, negative, guidance_scale)
    g = sde.diffusion(sigmas, index, batch)
    _, mean, std = sde_step(state, velocity, t, t_next, g, torch.zeros_like(state))
    return gaussian_log_prob(next_state, mean, std), mean, std


def initial_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Standard normal latents ``[B, *shape]``, sample i from a generator seeded with ``seeds[i]``: the noise the
    pipelines draw for the same seeds (their layouts hold the same numbers)."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample(backbone, denoiser, conditioning: dict, negative: dict | None, noise: torch.Tensor, sigmas: torch.Tensor,
           sde: SDE, guidance_scale: float, generators: Sequence[torch.Generator]) -> Rollout:
    """Denoise ``noise`` along ``sigmas``; SDE steps draw their noise from each sample's own generator, so a sample's
    trajectory does not depend on which others share its batch."""
    x = noise.to(backbone.device, torch.float32)
    states, next_states, log_probs = [], [], []
    for index in range(len(sigmas) - 1):
        batch = x.shape[0]
        t = torch.full((batch,), float(sigmas[index]), dtype=torch.float64)
        t_next = torch.full((batch,), float(sigmas[index + 1]), dtype=torch.float64)
        velocity = guided_velocity(backbone, denoiser, x, t, conditioning, negative, guidance_scale)
        g = sde.diffusion(sigmas, index, batch)
        if index in sde.steps:
            z = torch.cat([torch.randn((1, *x.shape[1:]), generator=gen) for gen in generators]).to(x)
            x_next, mean, std = sde_step(x, velocity, t, t_next, g, z)
            states.append(x.cpu())
            next_states.append(x_next.cpu())
            log_probs.append(gaussian_log_prob(x_next, mean, std).cpu())
        else:
            x_next = sde_step(x, velocity, t, t_next, g, torch.zeros_like(x))[0]
        x = x_next
    empty = torch.zeros((x.shape[0], 0, *x.shape[1:]))
    return Rollout(latents=x.cpu(), states=torch.stack(states, 1) if states else empty,
                   next_states=torch.stack(next_states, 1) if states else empty,
                   log_probs=torch.stack(log_probs, 1) if log_probs else torch.zeros((x.shape[0], 0)),
                   steps=tuple(sorted(sde.steps)), sigmas=sigmas)
