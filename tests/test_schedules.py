"""Every DPO schedule computes the straightforward step's loss and gradients (CPU, tiny model)."""

import pytest
import torch

from prefopt.lora import POLICY_ADAPTER, adapter_parameters
from prefopt.schedules import SCHEDULES
from prefopt.trainer import Batch, TrainerConfig


def _gradients(backbone, schedule, batch, noise, timesteps, config):
    params = adapter_parameters(backbone.denoiser, POLICY_ADAPTER)
    for p in params:
        p.grad = None
    metrics = SCHEDULES[schedule](backbone, backbone.denoiser, backbone.denoiser, batch, noise, timesteps, config,
                                  None, backward=torch.Tensor.backward)
    return metrics, [p.grad.clone() for p in params]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_split_schedule_equals_joint(make_backbone, with_lora, loss_type):
    backbone = with_lora(make_backbone("hunyuan-video"))
    gen = torch.Generator().manual_seed(1)
    pairs = 2
    latents = torch.randn(2 * pairs, 4, 2, 4, 4, generator=gen)
    conditioning = backbone.encode_prompts(["a man walks", "a woman waves"] * 2)
    batch = Batch(latents=latents, conditioning=conditioning, weights=torch.tensor([1.0, 0.5]))
    noise = torch.randn(pairs, 4, 2, 4, 4, generator=gen)
    timesteps = backbone.sample_timesteps(pairs, gen)
    config = TrainerConfig(beta=200.0, loss_type=loss_type, rpo_alpha=0.1, report_to="none")
    joint_metrics, joint = _gradients(backbone, "joint", batch, noise, timesteps, config)
    split_metrics, split = _gradients(backbone, "split", batch, noise, timesteps, config)
    assert split_metrics["loss"] == pytest.approx(joint_metrics["loss"], rel=1e-6)
    assert any(g.abs().sum() > 0 for g in joint)
    for a, b in zip(joint, split, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
