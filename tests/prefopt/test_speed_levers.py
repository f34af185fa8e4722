"""Speed and memory levers (prefopt.speed_levers): each computes what the plain step computes."""

from collections import Counter
from typing import ClassVar

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from prefopt.dpo_steps import SCHEDULES, Batch
from prefopt.errors import PrefoptError
from prefopt.lora import POLICY_ADAPTER, adapter_parameters
from prefopt.speed_levers import (
    _FUSED_ATTENTION,
    convert_to_float8,
    enable_block_checkpointing,
    forward_setting,
    forward_state,
    set_attention_backend,
)
from prefopt.trainer import TrainerConfig


class _ScaledSine(torch.nn.Module):
    """sin(w·x·s) with s read from the forward state: the tensor saved for backward depends on s."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.7, -1.3]))

    def forward(self, x):
        return torch.sin(self.w * x * forward_setting("scale", 1.0))


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_ScaledSine()])
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self, gradient_checkpointing_func):
        self.gradient_checkpointing, self.checkpoint = True, gradient_checkpointing_func

    def forward(self, x):
        block = self.blocks[0]
        return self.checkpoint(block, x) if self.gradient_checkpointing else block(x)


def test_checkpoint_recomputes_under_the_forward_state():
    x = torch.tensor([0.4, 1.1])
    grads = []
    for checkpointed in (False, True):
        toy = _Toy()
        if checkpointed:
            enable_block_checkpointing(toy)
        with forward_state(scale=3.0):
            y = toy(x).sum()
        y.backward()  # outside the state: a recomputation without replay would use scale 1
        grads.append(toy.blocks[0].w.grad.clone())
    expected = torch.cos(torch.tensor([0.7, -1.3]) * x * 3.0) * x * 3.0
    torch.testing.assert_close(grads[0], expected)
    torch.testing.assert_close(grads[1], expected)


def test_forward_state_nests_and_restores():
    with forward_state(a=1, b=2):
        with forward_state(b=3):
            assert (forward_setting("a"), forward_setting("b")) == (1, 3)
        assert forward_setting("b") == 2
    assert forward_setting("a") is None and forward_setting("b", "unset") == "unset"


def test_attention_backend_stays_in_its_model(make_backbone):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry.get_active_backend()[0]
    tuned = make_backbone("hunyuan-video")
    set_attention_backend(tuned.denoiser, "_native_math")
    assert _AttentionBackendRegistry.get_active_backend()[0] == before
    backends = {getattr(m.processor, "_attention_backend", None) for m in tuned.denoiser.modules()
                if hasattr(m, "processor")}
    assert "_native_math" in {getattr(b, "value", b) for b in backends}


def _dpo_step(backbone):
    """Per-sample errors, loss and LoRA gradients of one joint DPO step on fixed inputs. 1,024 latent
    elements per sample: on fewer, bf16's own rounding of the prediction is as large as the LoRA's effect."""
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 4, 4, 16, 16, generator=gen)
    noise = torch.randn(2, 4, 4, 16, 16, generator=gen)
    conditioning = backbone.encode_prompts(["a man walks", "a woman waves"] * 2)
    batch = Batch(latents=latents, conditioning=conditioning, weights=torch.ones(2))
    config = TrainerConfig(beta=50.0, report_to="none")
    metrics = SCHEDULES["joint"](backbone, backbone.denoiser, backbone.denoiser, batch, noise,
                                 torch.tensor([0.3, 0.8]), config, None, backward=torch.Tensor.backward)
    grads = torch.cat([p.grad.flatten() for p in adapter_parameters(backbone.denoiser, POLICY_ADAPTER)])
    return metrics, grads


def _bf16_backbone_with_lora(make_backbone, with_lora):
    backbone = with_lora(make_backbone("hunyuan-video", dtype="bfloat16"), b_std=0.2)  # effect well above rounding
    backbone.denoiser.train()
    return backbone


def test_fp8_emulated_stays_within_tolerance_of_bf16(make_backbone, with_lora):
    pytest.importorskip("torchao", reason="torchao (prefopt[fp8]) is not installed")
    plain_metrics, plain_grads = _dpo_step(_bf16_backbone_with_lora(make_backbone, with_lora))
    fp8 = _bf16_backbone_with_lora(make_backbone, with_lora)
    swapped = convert_to_float8(fp8.denoiser, "emulated", torch.device("cpu"))
    modules = dict(fp8.denoiser.named_modules())
    kinds = {name: type(modules[name]).__name__ for name in (
        "transformer_blocks.0.attn.to_q.base_layer", "transformer_blocks.0.ff.net.2",
        "transformer_blocks.0.attn.to_q.lora_A.dpo", "transformer_blocks.0.norm1.linear", "proj_out")}
    assert kinds == {"transformer_blocks.0.attn.to_q.base_layer": "Float8Linear",
                     "transformer_blocks.0.ff.net.2": "Float8Linear",
                     "transformer_blocks.0.attn.to_q.lora_A.dpo": "Linear",  # LoRA stays high precision
                     "transformer_blocks.0.norm1.linear": "Linear",  # modulation: one token per sample
                     "proj_out": "Linear"}  # outside the blocks
    assert swapped == 17  # 12 in the double-stream block, 5 in the single-stream block
    fp8_metrics, fp8_grads = _dpo_step(fp8)
    for key in ("model_err_winner", "model_err_loser", "ref_err_winner", "ref_err_loser"):
        assert fp8_metrics[key] == pytest.approx(plain_metrics[key], rel=0.02), key
    assert fp8_metrics[key] != plain_metrics[key]  # FP8 rounding did take effect
    assert fp8_metrics["loss"] == pytest.approx(plain_metrics["loss"], rel=0.02)
    assert torch.nn.functional.cosine_similarity(fp8_grads, plain_grads, dim=0) > 0.99


def test_fp8_without_fp8_hardware_names_the_requirement(make_backbone):
    pytest.importorskip("torchao", reason="torchao (prefopt[fp8]) is not installed")
    backbone = make_backbone("hunyuan-video")
    with pytest.raises(PrefoptError, match=r"`fp8=tensorwise` needs FP8 matrix multiplication.*fp8=emulated"):
        convert_to_float8(backbone.denoiser, "tensorwise", torch.device("cpu"))


class _RecordingSaveOnCpu(torch.autograd.graph.saved_tensors_hooks):
    """Stands in for save_on_cpu and records the storages it would move to host memory."""

    storages: ClassVar[list[int]] = []

    def __init__(self, pin_memory: bool = False):
        super().__init__(lambda t: (self.storages.append(t.untyped_storage().data_ptr()), t)[1], lambda t: t)


def _one_pair_joint_step(backbone, seed: int, config: TrainerConfig | None = None,
                         backward=torch.Tensor.backward) -> dict[str, float]:
    """One joint DPO step on one pair of small random latents sharing a prompt."""
    gen = torch.Generator().manual_seed(seed)
    batch = Batch(latents=torch.randn(2, 4, 2, 8, 8, generator=gen), weights=torch.ones(1),
                  conditioning=backbone.encode_prompts(["a man walks"] * 2))
    return SCHEDULES["joint"](backbone, backbone.denoiser, backbone.denoiser, batch,
                              torch.randn(1, 4, 2, 8, 8, generator=gen), backbone.sample_timesteps(1, gen),
                              config or TrainerConfig(beta=200.0, report_to="none"), None, backward=backward)


def _offloaded_and_block_inputs(backbone, monkeypatch) -> tuple[list[int], set[int]]:
    """One joint step with `offload_activations`: the storages save_on_cpu got, and the blocks' tensor inputs
    while gradients are on (the policy forward and any recomputation)."""
    from prefopt.speed_levers import transformer_blocks

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", _RecordingSaveOnCpu)
    monkeypatch.setattr(_RecordingSaveOnCpu, "storages", [])
    block_inputs: set[int] = set()

    def record_inputs(module, args, kwargs):
        if torch.is_grad_enabled():
            tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
            block_inputs.update(t.untyped_storage().data_ptr() for t in tensors)

    for block in transformer_blocks(backbone.denoiser):
        block.register_forward_pre_hook(record_inputs, with_kwargs=True)
    _one_pair_joint_step(backbone, seed=3, config=TrainerConfig(beta=200.0, offload_activations=True, report_to="none"))
    return list(_RecordingSaveOnCpu.storages), block_inputs


def test_offload_under_checkpointing_moves_the_block_inputs(make_backbone, with_lora, monkeypatch):
    """`offload_activations` with checkpointing sends every checkpointed block's tensor inputs to host memory
    (what dpo_memory.py's offload column assumes) instead of all the blocks' activations."""
    everything, _ = _offloaded_and_block_inputs(with_lora(make_backbone("hunyuan-video")), monkeypatch)
    backbone = with_lora(make_backbone("hunyuan-video"))
    enable_block_checkpointing(backbone.denoiser)
    offloaded, block_inputs = _offloaded_and_block_inputs(backbone, monkeypatch)
    assert block_inputs and block_inputs <= set(offloaded)
    assert len(offloaded) < len(everything) / 2


class _AttentionCalls(TorchDispatchMode):
    """Counts fused-attention kernel calls by direction, whichever kernel this torch build picks on the CPU
    (2.13 and 2.14 differ, and not every release's FLOP counter knows the CPU kernels)."""

    def __init__(self):
        super().__init__()
        self.forward = self.backward = 0
        self.other: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.removesuffix("_backward") in _FUSED_ATTENTION:
            if name.endswith("_backward"):
                self.backward += 1
            else:
                self.forward += 1
        else:
            self.other[name] += 1
        return func(*args, **(kwargs or {}))


def _backward_attention_calls(backbone, save_attention: bool) -> tuple[_AttentionCalls, float, list[torch.Tensor]]:
    """One joint step; the ops its backward runs, where checkpointed blocks are recomputed."""
    enable_block_checkpointing(backbone.denoiser, save_attention=save_attention)
    calls = _AttentionCalls()

    def counted_backward(loss: torch.Tensor) -> None:
        with calls:
            loss.backward()

    metrics = _one_pair_joint_step(backbone, seed=5, backward=counted_backward)
    grads = [p.grad.clone() for p in adapter_parameters(backbone.denoiser, POLICY_ADAPTER)]
    return calls, metrics["loss"], grads


def test_checkpoint_save_attention_skips_recomputing_attention(make_backbone, with_lora):
    """Kept attention outputs: the recomputation in backward runs no attention forward, only the attention
    backward, and the step's loss and gradients are unchanged."""
    recomputed, loss, grads = _backward_attention_calls(with_lora(make_backbone("hunyuan-video")), False)
    kept, kept_loss, kept_grads = _backward_attention_calls(with_lora(make_backbone("hunyuan-video")), True)
    assert recomputed.forward > 0 and kept.forward == 0
    assert kept.backward == recomputed.backward > 0
    assert kept.other["addmm"] == recomputed.other["addmm"] > 0  # the rest of the block is recomputed as before
    assert kept_loss == loss
    for a, b in zip(grads, kept_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)


def test_checkpoint_save_attention_needs_checkpointing(make_backbone):
    from prefopt.speed_levers import apply_speed_levers

    with pytest.raises(ValueError, match="needs `gradient_checkpointing: true`"):  # at config time
        TrainerConfig(checkpoint_save_attention=True)
    with pytest.raises(PrefoptError, match="needs `gradient_checkpointing: true`"):
        apply_speed_levers(make_backbone("hunyuan-video").denoiser, torch.device("cpu"), checkpoint_save_attention=True)
