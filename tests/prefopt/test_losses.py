"""Loss functions against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from prefopt.losses import denoising_loss, diffusion_dpo_loss, dpo_metrics, per_sample_mse


def _errs(*values):
    return [torch.tensor([v], dtype=torch.float64) for v in values]


@pytest.mark.parametrize("loss_type, expected", [
    ("sigmoid", math.log(2.0)),
    ("hinge", 1.0),
    ("ipo", 1.0 / (4 * 7.0**2)),
    ("robust", math.log(2.0)),
])
def test_policy_equal_to_reference(loss_type, expected):
    e_w, e_l = torch.rand(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    loss = diffusion_dpo_loss(e_w, e_l, e_w.clone(), e_l.clone(), beta=7.0, loss_type=loss_type, label_smoothing=0.1)
    torch.testing.assert_close(loss, torch.full((4,), expected, dtype=torch.float64))


def test_hand_computed_pair():
    # e_w=0.2, ref_w=0.3, e_l=0.5, ref_l=0.4, beta=10:
    # (0.2-0.3) - (0.5-0.4) = -0.2; h = -10/2 * -0.2 = 1.0
    e_w, e_l, r_w, r_l = _errs(0.2, 0.5, 0.3, 0.4)
    sigmoid = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=10.0)
    assert sigmoid.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)  # 0.3132616875
    assert diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=10.0, loss_type="hinge").item() == pytest.approx(0.0, abs=1e-12)
    # IPO: h/beta = 0.1; target 1/(2*10) = 0.05; (0.1-0.05)^2 = 0.0025
    assert diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=10.0, loss_type="ipo").item() == pytest.approx(0.0025)
    # robust, eps=0.2: (-(1-eps) log s(1) + eps log s(-1)) / (1-2eps)
    robust = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=10.0, loss_type="robust", label_smoothing=0.2)
    expected = (0.8 * math.log1p(math.exp(-1.0)) - 0.2 * math.log1p(math.exp(1.0))) / 0.6
    assert robust.item() == pytest.approx(expected, abs=1e-12)
    # SFT mix and pair weights: (0.31326 + 0.5*0.2) * 3
    mixed = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=10.0, sft_weight=0.5, weights=torch.tensor([3.0], dtype=torch.float64))
    assert mixed.item() == pytest.approx((math.log1p(math.exp(-1.0)) + 0.1) * 3.0, abs=1e-12)


def test_matches_independent_numpy_implementation():
    rng = np.random.default_rng(0)
    e_w, e_l, r_w, r_l = (rng.uniform(0, 2, 16) for _ in range(4))
    beta = 2500.0
    # The diffusers Diffusion-DPO example's formulation, written independently in numpy.
    inside = -0.5 * beta * ((e_w - e_l) - (r_w - r_l))
    expected = np.logaddexp(0.0, -inside)  # -log sigmoid(x) = log(1 + exp(-x))
    got = diffusion_dpo_loss(*(torch.from_numpy(a) for a in (e_w, e_l, r_w, r_l)), beta=beta)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_lowering_winner_error_lowers_loss_and_raising_loser_error_lowers_it_too():
    base = diffusion_dpo_loss(*_errs(0.5, 0.5, 0.5, 0.5), beta=5.0)
    better_w = diffusion_dpo_loss(*_errs(0.4, 0.5, 0.5, 0.5), beta=5.0)
    worse_l = diffusion_dpo_loss(*_errs(0.5, 0.6, 0.5, 0.5), beta=5.0)
    assert better_w.item() < base.item() and worse_l.item() < base.item()


def test_gradient_pushes_winner_error_down_and_loser_error_up():
    e_w, e_l = torch.tensor([0.5], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    diffusion_dpo_loss(e_w, e_l, torch.tensor([0.5]), torch.tensor([0.5]), beta=4.0).sum().backward()
    # d/de_w of -log s(-b/2 (e_w - e_l)) at 0 = b/2 * s(0) = 1.0; the loser gets the opposite sign.
    assert e_w.grad.item() == pytest.approx(1.0) and e_l.grad.item() == pytest.approx(-1.0)


def test_per_sample_mse_reduces_over_every_non_batch_axis_of_a_video():
    target = torch.ones(2, 4, 3, 5, 6)  # [B, C, F, H, W]
    target[0, 1, 2, 3, 4] = 3.0  # one element of sample 0 off by 3 instead of 1
    errors = per_sample_mse(torch.zeros_like(target), target)
    n = 4 * 3 * 5 * 6
    assert errors.shape == (2,)
    assert errors[0].item() == pytest.approx((n - 1 + 9) / n)
    assert errors[1].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        per_sample_mse(torch.zeros(2, 3), torch.zeros(2, 4))


def test_metrics_and_sft_loss():
    metrics = dpo_metrics(*_errs(0.2, 0.5, 0.3, 0.4), beta=10.0)
    assert metrics["implicit_accuracy"] == 1.0
    assert metrics["reward_margin"] == pytest.approx(1.0)
    assert metrics["reward_winner"] == pytest.approx(0.5) and metrics["reward_loser"] == pytest.approx(-0.5)
    pred, target = torch.zeros(2, 3), torch.tensor([[1.0, 1, 1], [2, 2, 2]])
    assert denoising_loss(pred, target).item() == pytest.approx(2.5)
    assert denoising_loss(pred, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)


def test_invalid_arguments():
    args = _errs(0.1, 0.2, 0.1, 0.2)
    with pytest.raises(ValueError, match="beta must be positive"):
        diffusion_dpo_loss(*args, beta=0.0)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        diffusion_dpo_loss(*args, beta=1.0, loss_type="kto")


def test_default_beta_has_the_reference_implementations_strength():
    """Diffusion-DPO's references: diffusers' example −logσ(−β·Δ) at β = 2500; Salesforce's train.py
    −logσ(−0.5·β·Δ) at β = 5000. prefopt's −logσ(−β/2·Δ) at its default β must give the same loss."""
    from prefopt.trainer import TrainerConfig

    # Δ = (e_w − ref_w) − (e_l − ref_l) = (0.2000 − 0.2002) − (0.3000 − 0.2999) = −0.0003
    e_w, e_l, r_w, r_l = _errs(0.2000, 0.3000, 0.2002, 0.2999)
    loss = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=TrainerConfig().beta).item()
    diffusers_example = math.log1p(math.exp(-2500 * 0.0003))   # −logσ(0.75) = 0.3916...
    salesforce = math.log1p(math.exp(-0.5 * 5000 * 0.0003))
    assert loss == pytest.approx(diffusers_example, rel=1e-9) and loss == pytest.approx(salesforce, rel=1e-9)
