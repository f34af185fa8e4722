"""Online RL's pure functions against numbers worked out by hand, and the SDE sampler against a flow whose marginals
are known in closed form."""

import itertools
import math

import pytest
import torch

from prefopt.rl import (
    clipped_surrogate,
    combine_rewards,
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    matching_log_prob,
    nft_loss,
    optimality,
    sde_diffusion,
    sde_step,
    sde_step_mean,
)


def test_a_steps_log_probability_is_the_gaussian_density_by_hand():
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    mean = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    std = torch.tensor([[0.5], [2.0]])
    by_hand = [(math.log(1 / (0.5 * math.sqrt(2 * math.pi))) - 0.25 / 0.5 + math.log(1 / (0.5 * math.sqrt(2 * math.pi)))
                - 1.0 / 0.5) / 2,
               (2 * math.log(1 / (2.0 * math.sqrt(2 * math.pi))) - 1.0 / 8.0 - 1.0 / 8.0) / 2]
    assert gaussian_log_prob(x, mean, std).tolist() == pytest.approx(by_hand, abs=1e-6)


def test_the_step_mean_is_the_drift_by_hand_and_without_noise_the_euler_step():
    x, v = torch.tensor([[1.0]]), torch.tensor([[0.5]])
    t, t_next, g = torch.tensor([0.8]), torch.tensor([0.6]), torch.tensor([0.4])
    # x + [v + g²/(2t)(x + (1 − t)v)]·dt = 1 + [0.5 + 0.16/1.6·(1 + 0.1)]·(−0.2)
    assert sde_step_mean(x, v, t, t_next, g).item() == pytest.approx(1 + (0.5 + 0.1 * 1.1) * -0.2)
    step, _, std = sde_step(x, v, t, t_next, torch.zeros(1), torch.randn(1, 1))
    assert step.item() == pytest.approx(1.0 + 0.5 * -0.2) and std.item() == 0.0


def test_the_noise_schedules():
    t = torch.tensor([0.25, 0.5])
    assert sde_diffusion(t, 0.7).tolist() == pytest.approx([0.7 * math.sqrt(1 / 3), 0.7])
    assert sde_diffusion(t, 0.3, "constant").tolist() == pytest.approx([0.3, 0.3])
    assert sde_diffusion(torch.tensor([1.0]), 0.7, t_max=0.9).item() == pytest.approx(0.7 * math.sqrt(1 / 0.1))


def _toy_velocity(x: torch.Tensor, t: float, mu: float, s0: float) -> torch.Tensor:
    """The exact velocity E[ε − x₀ | x_t = x] of data N(mu, s0²) under x_t = (1 − t)·x₀ + t·ε."""
    mean, var = (1 - t) * mu, (1 - t) ** 2 * s0**2 + t**2
    return t * (x - mean) / var - mu - (1 - t) * s0**2 * (x - mean) / var


@pytest.mark.parametrize("schedule, level", [("flow_grpo", 0.7), ("constant", 0.5)])
def test_the_sde_sampler_keeps_the_odes_marginals_on_a_flow_known_in_closed_form(schedule, level):
    """Samples from N(0, 1) at t = 1, down to t = 0.05 in 400 steps: mean and variance agree with the exact
    marginal N((1 − t)μ, (1 − t)²s₀² + t²) within 0.03 and 3 % (sampling error is about 0.008 and 1 % at n = 40,000;
    Euler–Maruyama's bias shrinks with the step), as the deterministic ODE's do."""
    mu, s0, n, steps, end = 1.5, 0.4, 40_000, 400, 0.05
    generator = torch.Generator().manual_seed(0)
    grid = torch.linspace(1.0, end, steps + 1, dtype=torch.float64)
    results = {}
    for name, noisy in (("sde", True), ("ode", False)):
        x = torch.randn(n, 1, generator=generator, dtype=torch.float64)
        for t, t_next in itertools.pairwise(grid):
            tt = torch.full((n,), float(t), dtype=torch.float64)
            g = sde_diffusion(tt, level if noisy else 0.0, schedule, t_max=float(grid[1]))
            x, _, _ = sde_step(x, _toy_velocity(x, float(t), mu, s0), tt, torch.full_like(tt, float(t_next)), g,
                               torch.randn(n, 1, generator=generator, dtype=torch.float64))
        results[name] = (float(x.mean()), float(x.var()))
    exact = ((1 - end) * mu, (1 - end) ** 2 * s0**2 + end**2)
    for mean, var in results.values():
        assert mean == pytest.approx(exact[0], abs=0.03) and var == pytest.approx(exact[1], rel=0.03)


def test_advantages_are_normalised_within_each_group():
    rewards, groups = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 6.0]), torch.tensor([0, 0, 1, 1, 2, 2])
    assert group_advantages(rewards, groups).tolist() == pytest.approx([-1, 1, 0, 0, -1, 1])
    overall = rewards.std(unbiased=False).item()
    assert group_advantages(rewards, groups, global_std=True).tolist() == pytest.approx(
        [-1 / overall, 1 / overall, 0, 0, -3 / overall, 3 / overall])
    assert group_advantages(rewards, groups, clip=0.5).tolist() == pytest.approx([-0.5, 0.5, 0, 0, -0.5, 0.5])


def test_several_rewards_combine_weighted_or_normalised_in_their_groups():
    groups = torch.tensor([0, 0])
    rewards = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([100.0, 300.0])}
    assert combine_rewards(rewards, {"a": 1.0, "b": 0.5}, groups).tolist() == [51.0, 153.0]
    assert combine_rewards(rewards, {"a": 1.0, "b": 0.5}, groups, "group_normalized").tolist() == [-1.5, 1.5]


def test_at_the_first_inner_step_the_ratio_is_one_and_the_gradient_is_the_advantage_weighted_score():
    log_prob = torch.tensor([-1.2, -0.7, -2.0], requires_grad=True)
    advantages = torch.tensor([1.5, -0.5, 0.25])
    loss, health = clipped_surrogate(log_prob, log_prob.detach(), advantages, clip_range=0.2)
    loss.backward()
    assert health["ratio"] == 1.0 and health["clip_fraction"] == 0.0 and health["approx_kl"] == 0.0
    assert loss.item() == pytest.approx(-advantages.mean().item())
    assert log_prob.grad.tolist() == pytest.approx((-advantages / 3).tolist())  # −A·∇log π / N


def test_a_ratio_beyond_the_clip_range_stops_the_gradient_on_the_side_it_would_exploit():
    old = torch.zeros(2)
    log_prob = torch.log(torch.tensor([1.5, 1.5])).requires_grad_(True)
    loss, health = clipped_surrogate(log_prob, old, torch.tensor([1.0, -1.0]), clip_range=0.2)
    loss.backward()
    # A > 0 and r > 1 + ε: clipped, no gradient; A < 0 and r > 1 + ε: unclipped, pushes the ratio down.
    assert log_prob.grad.tolist() == pytest.approx([0.0, 1.5 / 2]) and health["clip_fraction"] == 1.0


def test_the_kl_to_the_reference_is_zero_when_the_policy_is_the_reference():
    mean = torch.randn(2, 3)
    std = torch.tensor([[0.5], [1.0]])
    assert gaussian_kl(mean, mean, std).tolist() == [0.0, 0.0]
    shifted = mean + torch.tensor([[1.0], [2.0]])
    assert gaussian_kl(shifted, mean, std).tolist() == pytest.approx([1 / (2 * 0.25), 4 / 2])


def test_nfts_implicit_policies_pull_toward_good_samples_and_away_from_bad_ones():
    target = torch.zeros(2, 4)
    old = torch.ones(2, 4)
    beta = 0.5
    assert nft_loss(old, old, target, torch.tensor([1.0, 0.0]), beta).item() == pytest.approx(1.0 / beta)
    for r, sign in ((1.0, 1.0), (0.0, -1.0), (0.5, 0.0)):
        prediction = old.clone().requires_grad_(True)
        nft_loss(prediction, old, target, torch.full((2,), r), beta).backward()
        # ∂/∂v_θ at v_θ = v_old: 2(2r − 1)(v_old − target)/(elements · batch): descent moves v_θ toward the target
        # for good samples (r = 1), away for bad ones (r = 0), not at all at r = 1/2.
        assert prediction.grad.flatten().tolist() == pytest.approx([sign * 2 / 8] * 8)
    assert optimality(torch.tensor([-10.0, 0.0, 2.5]), clip=5.0).tolist() == [0.0, 0.5, 0.75]


def test_awms_log_probability_is_the_negative_matching_error():
    prediction, target = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    assert matching_log_prob(prediction, target).tolist() == [-(1 + 4) / 2]
