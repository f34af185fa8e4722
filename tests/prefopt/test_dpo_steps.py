"""Every DPO schedule computes the straightforward step's loss and gradients (CPU, tiny model)."""

import weakref

import pytest
import torch

from prefopt.dpo_steps import SCHEDULES, Batch
from prefopt.lora import POLICY_ADAPTER, adapter_parameters
from prefopt.trainer import TrainerConfig


def _gradients(backbone, schedule, batch, noise, timesteps, config):
    params = adapter_parameters(backbone.denoiser, POLICY_ADAPTER)
    for p in params:
        p.grad = None
    metrics = SCHEDULES[schedule](backbone, backbone.denoiser, backbone.denoiser, batch, noise, timesteps, config,
                                  None, backward=torch.Tensor.backward)
    return metrics, [p.grad.clone() for p in params]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_split_schedule_equals_joint(make_backbone, with_lora, loss_type, dtype):
    """float64 shows the schedules are the same computation; float32 bounds what per-sample forwards
    (``split``) change by rounding, which β/2 = 100 amplifies in the loss."""
    backbone = with_lora(make_backbone("hunyuan-video", dtype=dtype))
    for p in adapter_parameters(backbone.denoiser, POLICY_ADAPTER):
        p.data = p.data.to(getattr(torch, dtype))
    gen = torch.Generator().manual_seed(1)
    pairs = 2
    latents = torch.randn(2 * pairs, 4, 2, 4, 4, generator=gen, dtype=getattr(torch, dtype))
    conditioning = backbone.encode_prompts(["a man walks", "a woman waves"] * 2)
    batch = Batch(latents=latents, conditioning=conditioning, weights=torch.tensor([1.0, 0.5]))
    noise = torch.randn(pairs, 4, 2, 4, 4, generator=gen, dtype=getattr(torch, dtype))
    timesteps = backbone.sample_timesteps(pairs, gen)
    config = TrainerConfig(beta=200.0, loss_type=loss_type, rpo_alpha=0.1, report_to="none")
    joint_metrics, joint = _gradients(backbone, "joint", batch, noise, timesteps, config)
    split_metrics, split = _gradients(backbone, "split", batch, noise, timesteps, config)
    loss_rel, grad_rtol = (1e-12, 1e-9) if dtype == "float64" else (1e-4, 1e-4)
    assert split_metrics["loss"] == pytest.approx(joint_metrics["loss"], rel=loss_rel)
    assert any(g.abs().sum() > 0 for g in joint)
    for a, b in zip(joint, split, strict=True):
        torch.testing.assert_close(b, a, rtol=grad_rtol, atol=grad_rtol * a.abs().max().item())


class _LiveActivations:
    """Saved-tensor hooks that track the bytes of activations autograd holds (parameters excluded)."""

    def __init__(self, module: torch.nn.Module):
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        holder = _Holder(tensor)
        if tensor.untyped_storage().data_ptr() not in self.parameter_storages:
            size = tensor.numel() * tensor.element_size()
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size: int) -> None:
        self.live -= size

    @staticmethod
    def unpack(holder):
        return holder.tensor


class _Holder:
    """What autograd keeps in place of a saved tensor; its finalizer says when autograd let go of it."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def test_split_schedule_holds_one_samples_activations(make_backbone, with_lora):
    """``split`` exists for memory: at most one sample's activations are alive, half of ``joint``'s two."""
    backbone = with_lora(make_backbone("hunyuan-video"))
    gen = torch.Generator().manual_seed(2)
    latents = torch.randn(2, 4, 5, 16, 16, generator=gen)
    conditioning = backbone.encode_prompts(["a man walks"] * 2)
    batch = Batch(latents=latents, conditioning=conditioning, weights=torch.ones(1))
    noise, timesteps = torch.randn(1, 4, 5, 16, 16, generator=gen), backbone.sample_timesteps(1, gen)
    config = TrainerConfig(beta=200.0, report_to="none")
    peaks = {}
    for schedule in ("joint", "split"):
        tracker = _LiveActivations(backbone.denoiser)
        with torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
            _gradients(backbone, schedule, batch, noise, timesteps, config)
        assert tracker.live == 0  # every graph was freed by its backward
        peaks[schedule] = tracker.peak
    assert 0.4 < peaks["split"] / peaks["joint"] < 0.6, peaks


@pytest.mark.parametrize("schedule", ["joint", "split"])
def test_a_fresh_lora_starts_at_ln2_exactly(make_backbone, with_lora, schedule):
    """Policy equals reference at B = 0, and each schedule runs both through same-shaped forwards, so the
    float32 loss is ln 2 to the last bit or two (β/2 = 1250 would magnify any rounding mismatch)."""
    backbone = with_lora(make_backbone("hunyuan-video"), b_std=0.0)
    gen = torch.Generator().manual_seed(4)
    batch = Batch(latents=torch.randn(4, 4, 2, 4, 4, generator=gen), weights=torch.ones(2),
                  conditioning=backbone.encode_prompts(["a man walks", "a woman waves"] * 2))
    config = TrainerConfig(beta=2500.0, report_to="none")
    metrics, _ = _gradients(backbone, schedule, batch, torch.randn(2, 4, 2, 4, 4, generator=gen),
                            backbone.sample_timesteps(2, gen), config)
    assert metrics["loss"] == pytest.approx(0.6931471805599453, abs=1e-7)
