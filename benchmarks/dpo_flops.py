"""FLOPs of the real-size HunyuanVideo transformer, counted, not timed: where a DPO step's work goes.

Builds the 12.8B transformer on the meta device (shapes only: no memory, no weights) and counts one
forward per sample with torch.utils.flop_counter.FlopCounterMode. Checks issue #7's floor formula against
the count, and measures the levers that remove work rather than speed it up: trimming padded text tokens,
and deduplicating the pre-block text stream (context refiner, time/text embeddings) of a pair sharing a
prompt. Runs on a CPU in seconds.

    python benchmarks/dpo_flops.py
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

# Shared by the #7 benchmarks (dpo_step.py, dpo_step_flops.py, dpo_memory.py import them from here).
SIZES = [(33, 320, 512), (61, 480, 848), (61, 720, 1280)]
PEAK_BF16_FLOPS = 790e12  # measured dense bf16 matmul rate on the device machines (device docs)
TEXT_TOKENS = 256  # HunyuanVideo's padded prompt length, which the floor counts
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_STREAM = ("context_embedder", "time_text_embed")  # computed per sample before the blocks


def build(**config):
    """The real transformer (diffusers' defaults) on the meta device; ``config`` overrides for tests."""
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        return HunyuanVideoTransformer3DModel(**config).to(torch.bfloat16)


def prepare(model, lora_rank: int = 64):
    """The model as prefopt trains it: frozen, a LoRA on LORA_TARGETS, the mask-free attention processors."""
    from prefopt.lora import add_lora
    from prefopt_plugins.backbones.hunyuan_video import install_mask_free_attention

    model.requires_grad_(False)
    add_lora(model, rank=lora_rank, alpha=lora_rank, dropout=0.0, target_modules=LORA_TARGETS)
    install_mask_free_attention(model)
    return model


def meta_inputs(model, size: tuple[int, int, int], text_tokens: int, valid_tokens: int, batch: int = 1) -> dict:
    """diffusers' forward arguments on the meta device for a video size; valid text tokens come first."""
    frames, height, width = size
    cfg, meta = model.config, {"device": "meta", "dtype": torch.bfloat16}
    mask = torch.arange(text_tokens, device="meta") < valid_tokens
    return dict(  # noqa: C408
        hidden_states=torch.empty(batch, cfg.in_channels, (frames - 1) // 4 + 1, height // 8, width // 8, **meta),
        timestep=torch.empty(batch, **meta), guidance=torch.empty(batch, **meta),
        encoder_hidden_states=torch.empty(batch, text_tokens, cfg.text_embed_dim, **meta),
        encoder_attention_mask=mask.expand(batch, text_tokens),
        pooled_projections=torch.empty(batch, cfg.pooled_projection_dim, **meta), return_dict=False,
    )


def count(model, frames: int, height: int, width: int, text_tokens: int) -> dict[str, float]:
    with torch.no_grad(), FlopCounterMode(display=False, depth=1) as counter:
        model(**meta_inputs(model, (frames, height, width), text_tokens, text_tokens))
    by_module = counter.get_flop_counts()
    prefix = type(model).__name__
    total = counter.get_total_flops()
    text_stream = sum(sum(by_module.get(f"{prefix}.{name}", {}).values()) for name in TEXT_STREAM)
    # On meta, SDPA runs as its math decomposition: QKᵀ and AV are the model's only batched matmuls (bmm);
    # linear layers are addmm. A fused attention op, where one is dispatched, counts as attention too.
    attention = sum(v for op, v in by_module["Global"].items() if "bmm" in str(op) or "attention" in str(op))
    return {"total": total, "text_stream": text_stream, "attention": attention}


def formula(model, video_tokens: int, text_tokens: int) -> float:
    """Issue #7: blocks × (24·d² per token + 4·N²·d), per forward and sample."""
    cfg = model.config
    d = cfg.num_attention_heads * cfg.attention_head_dim
    n = video_tokens + text_tokens
    return (cfg.num_layers + cfg.num_single_layers) * (24 * d * d * n + 4 * n * n * d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trimmed-text-tokens", type=int, default=64, help="A typical prompt's valid tokens.")
    args = parser.parse_args()
    model = build()
    print(f"HunyuanVideo transformer, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters; "
          "TFLOP per forward of one sample (a DPO step is 5 forward-equivalents × 2 samples)")
    print("| video | video tokens | counted, 256 text tokens | issue formula | attention share | pre-block text "
          f"stream | counted, {args.trimmed_text_tokens} text tokens | saved by trimming | floor s/step @790 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for frames, height, width in SIZES:
        video_tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
        full = count(model, frames, height, width, TEXT_TOKENS)
        trimmed = count(model, frames, height, width, args.trimmed_text_tokens)
        print(f"| {frames}×{height}×{width} | {video_tokens:,} | {full['total'] / 1e12:.2f} | "
              f"{formula(model, video_tokens, TEXT_TOKENS) / 1e12:.2f} | {full['attention'] / full['total']:.1%} | "
              f"{full['text_stream'] / full['total']:.3%} | {trimmed['total'] / 1e12:.2f} | "
              f"{1 - trimmed['total'] / full['total']:.1%} | {10 * full['total'] / PEAK_BF16_FLOPS:.2f} |")


if __name__ == "__main__":
    main()
