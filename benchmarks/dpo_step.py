"""Seconds per DPO step and peak memory: the straightforward step vs prefopt's, side by side in one run.

The straightforward step is written here independently of prefopt (policy forward on [winner, loser] with
grad, reference = adapters disabled under no_grad, one backward, AdamW); prefopt's steps are its DPO
schedules (``prefopt.schedules``: ``joint`` and the memory-saving ``split``) as the trainer runs them.
All use the same model, LoRA, inputs and seed, and must produce the same loss sequence.

    python benchmarks/dpo_step.py --size tiny                     # CPU smoke run, seconds
    python benchmarks/dpo_step.py --size full --frames 33 --height 320 --width 512 --dtype bfloat16 \\
        --gradient-checkpointing --lora-rank 64                  # real-size HunyuanVideo on one GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import torch
import torch.nn.functional as F

TINY = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,  # noqa: C408
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16,
            pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
FULL: dict = {}  # diffusers' defaults are the real 12.8B HunyuanVideo transformer
PEAK_BF16_FLOPS = 790e12  # measured dense bf16 matmul rate on the device machines (device docs)
TEXT_TOKENS = 256


def build_backbone(args):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    from prefopt.lora import add_lora
    from prefopt_plugins.backbones.hunyuan_video import HunyuanVideoBackbone, HunyuanVideoConfig

    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        transformer = HunyuanVideoTransformer3DModel(**(TINY if args.size == "tiny" else FULL))
    torch.set_default_dtype(previous)
    pipe = HunyuanVideoPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    config = HunyuanVideoConfig(pretrained="benchmark", dtype=args.dtype, device=args.device)
    backbone = HunyuanVideoBackbone(config, pipeline=pipe)
    add_lora(transformer, rank=args.lora_rank, alpha=args.lora_rank, dropout=0.0,
             target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    if args.gradient_checkpointing:
        from prefopt.memory import enable_block_checkpointing

        enable_block_checkpointing(transformer, args.checkpoint_every)
    if args.attention_backend:
        from prefopt.memory import set_attention_backend

        set_attention_backend(transformer, args.attention_backend)
    transformer.train()
    return backbone


def make_inputs(args, backbone):
    cfg = backbone.denoiser.config
    frames = (args.frames - 1) // 4 + 1
    shape = (args.pairs, cfg.in_channels, frames, args.height // 8, args.width // 8)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn((2 * args.pairs, *shape[1:]), generator=gen).to(args.device)
    text_len = 16 if args.size == "tiny" else TEXT_TOKENS
    conditioning = {
        "prompt_embeds": torch.randn(2 * args.pairs, text_len, cfg.text_embed_dim, generator=gen).to(args.device),
        "prompt_attention_mask": torch.ones(2 * args.pairs, text_len, dtype=torch.bool, device=args.device),
        "pooled_prompt_embeds": torch.randn(2 * args.pairs, cfg.pooled_projection_dim, generator=gen).to(args.device),
    }
    noise = torch.randn(shape, generator=gen).to(args.device)
    timesteps = torch.full((args.pairs,), 0.5, device=args.device)
    tokens = frames * (args.height // 8 // cfg.patch_size) * (args.width // 8 // cfg.patch_size)
    return latents, conditioning, noise, timesteps, tokens


def straightforward_step(backbone, latents, conditioning, noise, timesteps, beta):
    """The textbook step, independent of prefopt's trainer code."""
    model = backbone.denoiser
    noise2, t2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
    sigma = t2.view(-1, 1, 1, 1, 1)
    noisy = (1 - sigma) * latents + sigma * noise2
    target = noise2 - latents
    with torch.no_grad():
        model.disable_adapters()
        ref = backbone._predict(model, noisy, t2 * 1000, conditioning)
        model.enable_adapters()
    pred = backbone._predict(model, noisy, t2 * 1000, conditioning)
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    ref_err = (ref.float() - target.float()).pow(2).flatten(1).mean(1)
    (ew, el), (rw, rl) = err.chunk(2), ref_err.chunk(2)
    loss = -F.logsigmoid(-0.5 * beta * ((ew - rw) - (el - rl))).mean()
    loss.backward()
    return loss


OPTIONS = {"offload_activations": False}  # set from the command line in main()


def prefopt_step(schedule: str):
    """prefopt's step with one of its DPO schedules (prefopt.schedules), as the trainer runs it."""

    def step(backbone, latents, conditioning, noise, timesteps, beta):
        from prefopt.schedules import SCHEDULES
        from prefopt.trainer import Batch, TrainerConfig

        weights = torch.ones(noise.shape[0], device=noise.device)
        batch = Batch(latents=latents, conditioning=conditioning, weights=weights)
        config = TrainerConfig(beta=beta, report_to="none", **OPTIONS)
        metrics = SCHEDULES[schedule](backbone, backbone.denoiser, backbone.denoiser, batch, noise, timesteps,
                                      config, None, backward=torch.Tensor.backward)
        return torch.tensor(metrics["loss"])

    return step


VARIANTS = {"straightforward": straightforward_step, "prefopt joint": prefopt_step("joint"),
            "prefopt split": prefopt_step("split")}


def measure(name, args, backbone, inputs):
    params = [p for p in backbone.denoiser.parameters() if p.requires_grad]
    for p, initial in zip(params, args.initial_lora, strict=True):  # every variant starts from the same LoRA
        p.data.copy_(initial)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = VARIANTS[name](backbone, *inputs, beta=args.beta)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    # Same start, same inputs: the loss sequences must agree (a correctness check on every variant).
    return {"variant": name, "s_per_step": statistics.median(times), "peak_gib": peak, "losses": losses}


def flop_floor(backbone, tokens: int, pairs: int) -> float:
    """60 blocks × 24·d² per token + 4·N²·d attention; 5 forward-equivalents per sample (issue #7)."""
    cfg = backbone.denoiser.config
    d = cfg.num_attention_heads * cfg.attention_head_dim
    blocks = cfg.num_layers + cfg.num_single_layers
    n = tokens + TEXT_TOKENS
    per_forward = blocks * (24 * d * d * n + 4 * n * n * d)
    return 5 * 2 * pairs * per_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--beta", type=float, default=2500.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="Checkpoint every n-th block (1 = all).")
    parser.add_argument("--attention-backend", default=None, help="diffusers attention backend, e.g. _native_cudnn.")
    parser.add_argument("--offload", action="store_true", help="prefopt variants: activations to host memory.")
    parser.add_argument("--variants", default="straightforward,prefopt joint,prefopt split",
                        help="Comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args()

    OPTIONS["offload_activations"] = args.offload
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    backbone = build_backbone(args)
    args.initial_lora = [p.detach().clone() for p in backbone.denoiser.parameters() if p.requires_grad]
    inputs = make_inputs(args, backbone)
    tokens = inputs[-1]
    results = [measure(name, args, backbone, inputs[:-1]) for name in variants]
    floor = flop_floor(backbone, tokens, args.pairs) / PEAK_BF16_FLOPS
    baseline = results[0]["s_per_step"]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n{date.today()} · {device} · torch {torch.__version__} · {args.size} HunyuanVideo · "
          f"{args.frames}×{args.height}×{args.width} · {tokens} video tokens · LoRA r={args.lora_rank} · "
          f"checkpointing={args.gradient_checkpointing} (every {args.checkpoint_every}) · "
          f"attention={args.attention_backend or 'default'} · offload={args.offload}")
    print("| variant | s/step | × straightforward | × floor (790 TFLOP/s) | peak GiB | first / last loss |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['s_per_step']:.4f} | {r['s_per_step'] / baseline:.2f} | "
              f"{r['s_per_step'] / floor:.1f} | {r['peak_gib']:.1f} | {r['losses'][0]:.6f} / {r['losses'][-1]:.6f} |")
    if args.json:
        with open(args.json, "w") as f:
            args_json = {k: v for k, v in vars(args).items() if k != "initial_lora"}
            json.dump({"args": args_json, "tokens": tokens, "floor_s": floor, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
