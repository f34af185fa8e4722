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

SIZES = [(33, 320, 512), (61, 480, 848), (61, 720, 1280)]
PEAK_BF16_FLOPS = 790e12
TEXT_STREAM = ("context_embedder", "time_text_embed")  # computed per sample before the blocks


def build(**config):
    """The real transformer (diffusers' defaults) on the meta device; ``config`` overrides for tests."""
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        return HunyuanVideoTransformer3DModel(**config).to(torch.bfloat16)


def count(model, frames: int, height: int, width: int, text_tokens: int) -> dict[str, float]:
    cfg, meta = model.config, {"device": "meta", "dtype": torch.bfloat16}
    latents = torch.empty(1, cfg.in_channels, (frames - 1) // 4 + 1, height // 8, width // 8, **meta)
    text = torch.empty(1, text_tokens, cfg.text_embed_dim, **meta)
    mask = torch.ones(1, text_tokens, dtype=torch.bool, device="meta")
    pooled = torch.empty(1, cfg.pooled_projection_dim, **meta)
    timestep = torch.empty(1, **meta)
    with torch.no_grad(), FlopCounterMode(display=False, depth=1) as counter:
        model(latents, timestep, text, mask, pooled, timestep, return_dict=False)
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
        full = count(model, frames, height, width, 256)
        trimmed = count(model, frames, height, width, args.trimmed_text_tokens)
        print(f"| {frames}×{height}×{width} | {video_tokens:,} | {full['total'] / 1e12:.2f} | "
              f"{formula(model, video_tokens, 256) / 1e12:.2f} | {full['attention'] / full['total']:.1%} | "
              f"{full['text_stream'] / full['total']:.3%} | {trimmed['total'] / 1e12:.2f} | "
              f"{1 - trimmed['total'] / full['total']:.1%} | {10 * full['total'] / PEAK_BF16_FLOPS:.2f} |")


if __name__ == "__main__":
    main()
