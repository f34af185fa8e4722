"""Activation memory of real-width HunyuanVideo blocks, measured on the CPU, and what it means on 80 GB.

Builds the real-width transformer (d = 3072, 24 heads) with one block of each type, bf16, LoRA r=64 on
to_q/to_k/to_v/to_out.0, and runs the policy forward with gradients on the trimmed text stream (no
attention mask) under the flash attention kernel, which, on the CPU as on a GPU, saves only its output
and log-sum-exp. Saved-tensor hooks attribute every tensor autograd keeps for backward (unique storages,
parameters excluded) to the block running at the time. Two token counts give bytes = a + b·tokens per
block type; the model is linear in tokens because no N×N tensor is kept.

From that it predicts, for the issue's three sizes, the activations a DPO step keeps under each
checkpointing setting (inputs only for a checkpointed block, everything for the others) and whether the
joint and split schedules fit one 80 GB GPU; and for ``offload_activations`` (joint), what stays on the GPU
and how much crosses to host memory and back each step. The prediction leaves out allocator fragmentation and
kernel workspaces: the GPU run (benchmarks/gpu_matrix.sh) is the measurement.

    python benchmarks/dpo_memory.py
"""

from __future__ import annotations

import argparse

import torch
from dpo_flops import SIZES, TEXT_TOKENS, prepare

from prefopt.speed_levers import forward_state
from prefopt_plugins.backbones.hunyuan_video import FULL_TEXT_MASK

GIB = 2**30


def build(**layers):
    """Real-width HunyuanVideo (``layers`` sets how many blocks), bf16, with prefopt's r=64 LoRA."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    return prepare(HunyuanVideoTransformer3DModel(**layers).to(torch.bfloat16), lora_rank=64)


def state_gib() -> tuple[float, float]:
    """GiB of the real model's bf16 weights, and of its LoRA's fp32 weights, gradients and two AdamW moments
    (counted on the meta device)."""
    with torch.device("meta"):
        model = build()
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return base * 2 / GIB, lora * 4 * 4 / GIB


def saved_bytes_per_block(model, video_tokens_hw: tuple[int, int, int]) -> dict[str, int]:
    """Bytes autograd keeps for backward, by block type, for one sample of latent size (F, H, W)."""
    frames, height, width = video_tokens_hw
    counted: dict[str, dict[int, int]] = {}
    current = ["outside"]
    params = {p.data_ptr() for p in model.parameters()}
    hooks = []
    for kind, blocks in (("double", model.transformer_blocks), ("single", model.single_transformer_blocks)):
        for block in blocks:
            hooks.append(block.register_forward_pre_hook(lambda m, a, kind=kind: current.__setitem__(0, kind)))
            hooks.append(block.register_forward_hook(lambda m, a, o: current.__setitem__(0, "outside")))

    def pack(tensor):
        storage = tensor.untyped_storage()
        if tensor.data_ptr() not in params and storage.data_ptr() not in params:
            counted.setdefault(current[0], {})[storage.data_ptr()] = storage.nbytes()
        return tensor

    cfg = model.config
    latents = torch.randn(1, cfg.in_channels, frames, height, width, dtype=torch.bfloat16)
    text = torch.randn(1, TEXT_TOKENS, cfg.text_embed_dim, dtype=torch.bfloat16)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool)
    pooled = torch.randn(1, cfg.pooled_projection_dim, dtype=torch.bfloat16)
    t = torch.full((1,), 500.0, dtype=torch.bfloat16)
    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), forward_state(**{FULL_TEXT_MASK: True}),
          torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION)):
        model(latents, t, text, mask, pooled, t * 2, return_dict=False)[0].float().sum()
    for hook in hooks:
        hook.remove()
    return {kind: sum(storages.values()) for kind, storages in counted.items()}


# What `checkpoint_save_attention` keeps per checkpointed block, sample and token (video + text): the fused
# kernel's output (bf16, d values) and log-sum-exp (float32, one per head). main() measures it where torch
# lets saved-tensor hooks see what selective checkpointing keeps, and uses the measurement.
KEPT_ATTENTION_PER_TOKEN = 3072 * 2 + 24 * 4


def kept_attention_per_token(model, size: tuple[int, int, int]) -> float | None:
    """Bytes per block and token that keeping the attention outputs adds, measured: saved bytes with every
    block checkpointed, with and without it. None where this torch cannot show them to the hooks."""
    from prefopt.speed_levers import _HOOKS_OPTION, enable_block_checkpointing, transformer_blocks

    if not _HOOKS_OPTION:
        return None
    totals = []
    for keep in (False, True):
        enable_block_checkpointing(model, 1, save_attention=keep)
        totals.append(sum(saved_bytes_per_block(model, size).values()))
    model.disable_gradient_checkpointing()
    frames, height, width = size
    tokens = frames * (height // 2) * (width // 2) + TEXT_TOKENS
    return (totals[1] - totals[0]) / len(transformer_blocks(model)) / tokens


def predict(per_token: dict[str, float], fixed: dict[str, float], tokens: int, every: int | None,
            kept_attention: float = 0.0) -> float:
    """GiB of activations one sample keeps across the real 20 double + 40 single blocks; ``kept_attention``:
    bytes per token that each checkpointed block also keeps."""
    d, total, index = 3072, 0.0, 0
    for kind, count in (("double", 20), ("single", 40)):
        for _ in range(count):
            checkpointed = every is not None and index % every == 0
            inputs = (tokens + TEXT_TOKENS) * (d * 2 + kept_attention)
            total += inputs if checkpointed else fixed[kind] + per_token[kind] * tokens
            index += 1
    return total / GIB


def activation_model() -> tuple:
    """(the one-block model, its small size, bytes saved per token and fixed bytes per block and sample), from two
    sizes' measured activations (128 and 512 video tokens: linear in the token count)."""
    model = build(num_layers=1, num_single_layers=1, num_refiner_layers=1)
    small, large = (1, 16, 32), (2, 32, 32)  # 128 and 512 video tokens (patch 2×2)
    a, b = saved_bytes_per_block(model, small), saved_bytes_per_block(model, large)
    n_small, n_large = 128, 512
    per_token = {k: (b[k] - a[k]) / (n_large - n_small) for k in ("double", "single")}
    fixed = {k: a[k] - per_token[k] * n_small for k in ("double", "single")}
    return model, small, per_token, fixed


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    weights_gib, lora_state_gib = state_gib()
    model, small, per_token, fixed = activation_model()
    print("Saved for backward per block and sample (bf16, LoRA r=64, flash attention): "
          + ", ".join(f"{k} {per_token[k] / 1024:.1f} KiB/token + {fixed[k] / 2**20:.1f} MiB" for k in per_token))
    measured = kept_attention_per_token(model, small)
    kept = measured or KEPT_ATTENTION_PER_TOKEN
    print(f"Kept attention outputs (checkpoint_save_attention) per block: {kept:.0f} bytes/token, "
          + (f"measured (output and log-sum-exp: {KEPT_ATTENTION_PER_TOKEN})" if measured else
             "from the output and log-sum-exp sizes (this torch does not show them to saved-tensor hooks)"))
    print(f"\nPredicted GiB for a DPO step beside {weights_gib:.1f} GiB of weights and {lora_state_gib:.1f} GiB of "
          "LoRA state (joint: 2 samples' activations; split: 1), plus one block's full activations being recomputed; "
          "offload: the kept activations live in host memory, and one block's come back at a time:")
    print("| video | tokens | checkpointing | activations / sample | joint step | split step | "
          "joint + offload: GPU / moved to host and back |")
    print("|---|---|---|---|---|---|---|")
    for frames, height, width in SIZES:
        tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
        block = max(fixed[k] + per_token[k] * tokens for k in per_token) / GIB
        for every, keep in ((None, False), (3, False), (2, False), (1, False), (1, True)):
            acts = predict(per_token, fixed, tokens, every, kept if keep else 0.0)
            base = weights_gib + lora_state_gib
            joint = base + 2 * acts + (2 * block if every else 0)
            split = base + acts + (block if every else 0)
            # Offloaded: what goes through saved-tensor hooks. Kept attention outputs bypass them in torch
            # releases without checkpoint's `respect_saved_tensors_hooks`; counted on the GPU here.
            kept_on_gpu = 2 * 60 * (tokens + TEXT_TOKENS) * kept / GIB if keep else 0.0
            offload, moved = base + 2 * block + kept_on_gpu, 2 * 2 * (acts - kept_on_gpu / 2)
            label = "none" if every is None else ("all blocks" if every == 1 else f"every {every}")
            label += ", attention kept" if keep else ""
            print(f"| {frames}×{height}×{width} | {tokens:,} | {label} | {acts:.1f} | {joint:.1f} | {split:.1f} | "
                  f"{offload:.1f} / {moved:.0f} |")

if __name__ == "__main__":
    main()
