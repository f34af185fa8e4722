"""Seconds per DPO step and peak memory: the straightforward step vs prefopt's, side by side in one run.

The straightforward step is written here independently of prefopt: diffusers' transformer called as is
(padded text with its attention mask, diffusers' own gradient checkpointing of every block), policy
forward on [winner, loser] with grad, reference = adapters disabled under no_grad, one backward, AdamW.
prefopt's steps are its DPO schedules (``prefopt.dpo_steps``: ``joint`` and the memory-saving ``split``)
through its HunyuanVideo backbone (trimmed text stream), with the trainer's speed levers applied by the
trainer's own function (``prefopt.speed_levers.apply_speed_levers``) after the straightforward step is measured.
All start from the same LoRA and inputs; exact variants must produce the same loss sequence, and the table
reports each variant's largest loss difference from the straightforward step (FP8's tolerance figure).

    python benchmarks/dpo_step.py --size tiny                     # CPU smoke run, seconds
    python benchmarks/dpo_step.py --size full --frames 33 --height 320 --width 512 --dtype bfloat16 \\
        --gradient-checkpointing --lora-rank 64                  # real-size HunyuanVideo on one GPU
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from datetime import date

import torch
import torch.nn.functional as F
from dpo_flops import LORA_TARGETS, PEAK_BF16_FLOPS, TEXT_TOKENS, formula

from prefopt.files import write_json

TINY = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,  # noqa: C408
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16,
            pooled_projection_dim=8, rope_axes_dim=(2, 2, 4))
FULL: dict = {}  # diffusers' defaults are the real 12.8B HunyuanVideo transformer


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
    config = HunyuanVideoConfig(pretrained="benchmark", dtype=args.dtype, device=args.device,
                                text_padding=args.text_padding)
    backbone = HunyuanVideoBackbone(config, pipeline=pipe)
    add_lora(transformer, rank=args.lora_rank, alpha=args.lora_rank, dropout=0.0, target_modules=LORA_TARGETS)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()  # diffusers' own: every block (the baseline's setting)
    transformer.train()
    return backbone


def make_inputs(args, backbone):
    cfg = backbone.denoiser.config
    frames = (args.frames - 1) // 4 + 1
    shape = (args.pairs, cfg.in_channels, frames, args.height // 8, args.width // 8)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn((2 * args.pairs, *shape[1:]), generator=gen).to(args.device)
    text_len = 16 if args.size == "tiny" else TEXT_TOKENS
    mask = torch.zeros(2 * args.pairs, text_len, dtype=torch.bool)
    mask[:, : min(args.valid_text_tokens, text_len)] = True  # valid tokens first, as HunyuanVideo's tokenizer pads
    conditioning = {
        "prompt_embeds": torch.randn(2 * args.pairs, text_len, cfg.text_embed_dim, generator=gen).to(args.device),
        "prompt_attention_mask": mask.to(args.device),
        "pooled_prompt_embeds": torch.randn(2 * args.pairs, cfg.pooled_projection_dim, generator=gen).to(args.device),
    }
    conditioning = {k: torch.cat([v[: args.pairs]] * 2) for k, v in conditioning.items()}  # pairs share prompts
    noise = torch.randn(shape, generator=gen).to(args.device)
    timesteps = torch.full((args.pairs,), 0.5, device=args.device)
    tokens = frames * (args.height // 8 // cfg.patch_size) * (args.width // 8 // cfg.patch_size)
    return latents, conditioning, noise, timesteps, tokens


def plain_predict(model, noisy, timesteps, conditioning, dtype):
    """diffusers' HunyuanVideo transformer called as is: padded text tokens and their attention mask."""
    guidance = torch.full((noisy.shape[0],), 1000.0, device=noisy.device, dtype=dtype)
    return model(hidden_states=noisy.to(dtype), timestep=(timesteps * 1000).to(dtype),
                 encoder_hidden_states=conditioning["prompt_embeds"].to(dtype),
                 encoder_attention_mask=conditioning["prompt_attention_mask"],
                 pooled_projections=conditioning["pooled_prompt_embeds"].to(dtype), guidance=guidance,
                 return_dict=False)[0]


def straightforward_step(backbone, latents, conditioning, noise, timesteps, beta):
    """The textbook step, independent of prefopt's trainer and backbone code."""
    model, dtype = backbone.denoiser, backbone.dtype
    noise2, t2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
    sigma = t2.view(-1, 1, 1, 1, 1)
    noisy = (1 - sigma) * latents + sigma * noise2
    target = noise2 - latents
    with torch.no_grad():
        model.disable_adapters()
        ref = plain_predict(model, noisy, t2, conditioning, dtype)
        model.enable_adapters()
    pred = plain_predict(model, noisy, t2, conditioning, dtype)
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    ref_err = (ref.float() - target.float()).pow(2).flatten(1).mean(1)
    (ew, el), (rw, rl) = err.chunk(2), ref_err.chunk(2)
    loss = -F.logsigmoid(-0.5 * beta * ((ew - rw) - (el - rl))).mean()
    loss.backward()
    return loss


OPTIONS = {"offload_activations": False}  # set from the command line in main()


def prefopt_step(schedule: str):
    """prefopt's step with one of its DPO schedules (prefopt.dpo_steps), as the trainer runs it."""

    def step(backbone, latents, conditioning, noise, timesteps, beta):
        from prefopt.dpo_steps import SCHEDULES, Batch
        from prefopt.trainer import TrainerConfig

        weights = torch.ones(noise.shape[0], device=noise.device)
        batch = Batch(latents=latents, conditioning=conditioning, weights=weights)
        config = TrainerConfig(beta=beta, report_to="none", **OPTIONS)
        metrics = SCHEDULES[schedule](backbone, backbone.denoiser, backbone.denoiser, batch, noise, timesteps,
                                      config, None, backward=torch.Tensor.backward)
        return torch.tensor(metrics["loss"])

    return step


VARIANTS = {"straightforward": straightforward_step, "prefopt joint": prefopt_step("joint"),
            "prefopt split": prefopt_step("split")}
BASELINES = ("straightforward",)  # measured on the plain model, before prefopt's levers are applied


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
    try:
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
    except torch.OutOfMemoryError:  # the straightforward step at the paper's size: a result, not a crash
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        gc.collect()
        torch.cuda.empty_cache()
        return {"variant": name, "s_per_step": None, "peak_gib": None, "losses": losses, "oom": True}
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    # Same start, same inputs: the loss sequences must agree (a correctness check on every variant).
    return {"variant": name, "s_per_step": statistics.median(times), "peak_gib": peak, "losses": losses, "oom": False}


def flop_floor(backbone, tokens: int, pairs: int) -> float:
    """Issue #7's floor: 5 forward-equivalents per sample of the issue's per-forward formula."""
    return 5 * 2 * pairs * formula(backbone.denoiser, tokens, TEXT_TOKENS)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--valid-text-tokens", type=int, default=TEXT_TOKENS,
                        help="Valid (unpadded) prompt tokens of the 256; the issue's floor counts all 256.")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--beta", type=float, default=2500.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"],
                        help="float64: the CPU equivalence check, free of rounding that β amplifies.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=1,
                        help="prefopt: checkpoint every n-th block; 0: none (the straightforward step keeps all).")
    parser.add_argument("--checkpoint-save-attention", action="store_true",
                        help="prefopt: checkpointed blocks keep their attention outputs (no attention recompute).")
    parser.add_argument("--attention-backend", default=None, help="prefopt: diffusers attention backend.")
    parser.add_argument("--offload", action="store_true", help="prefopt: activations to host memory.")
    parser.add_argument("--compile", action="store_true", help="prefopt: torch.compile every block.")
    parser.add_argument("--fp8", default="off", choices=["off", "tensorwise", "rowwise", "emulated"],
                        help="prefopt: FP8 matmuls in the blocks' frozen linears (torchao).")
    parser.add_argument("--text-padding", default="trim", choices=["trim", "keep"], help="prefopt's backbone.")
    parser.add_argument("--variants", default="straightforward,prefopt joint,prefopt split",
                        help="Comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args()
    args.variant_list = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    # Baselines first: prefopt's levers change the model in place.
    args.variant_list.sort(key=lambda v: v not in BASELINES)
    return args


def run_variants(args, backbone, inputs) -> list[dict]:
    from prefopt.speed_levers import apply_speed_levers

    results, levers_applied = [], False
    for name in args.variant_list:
        if name not in BASELINES and not levers_applied:
            checkpointing = args.gradient_checkpointing and args.checkpoint_every > 0
            if args.gradient_checkpointing and not checkpointing:
                backbone.denoiser.disable_gradient_checkpointing()  # the baseline's, off for prefopt's rows
            apply_speed_levers(backbone.denoiser, torch.device(args.device), fp8=args.fp8,
                               gradient_checkpointing=checkpointing,
                               checkpoint_every_n_blocks=max(1, args.checkpoint_every),
                               checkpoint_save_attention=args.checkpoint_save_attention,
                               attention_backend=args.attention_backend, compile=args.compile)
            levers_applied = True
        results.append(measure(name, args, backbone, inputs))
    return results


def print_table(args, results, tokens, floor) -> None:
    baseline = next((r for r in results if not r["oom"]), None)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"\n{date.today()} · {device} · torch {torch.__version__} · {args.size} HunyuanVideo · "
          f"{args.frames}×{args.height}×{args.width} · {tokens} video tokens · {args.valid_text_tokens} valid text "
          f"tokens · LoRA r={args.lora_rank} · checkpointing={args.gradient_checkpointing} (prefopt: "
          f"{f'every {args.checkpoint_every}' if args.checkpoint_every else 'none'}"
          f"{', attention kept' if args.checkpoint_save_attention else ''}) · "
          f"attention={args.attention_backend or 'default'} · offload={args.offload} · "
          f"compile={args.compile} · fp8={args.fp8} · text={args.text_padding}")
    print(f"| variant | s/step | × {baseline['variant'] if baseline else '–'} | × floor (790 TFLOP/s) | peak GiB "
          "| first / last loss | max Δloss vs first row |")
    print("|---|---|---|---|---|---|---|")
    reference = results[0]["losses"]
    for r in results:
        if r["oom"]:
            print(f"| {r['variant']} | out of memory | – | – | – | – | – |")
            continue
        delta = max((abs(a - b) for a, b in zip(r["losses"], reference)), default=float("nan"))
        print(f"| {r['variant']} | {r['s_per_step']:.4f} | {r['s_per_step'] / baseline['s_per_step']:.2f} | "
              f"{r['s_per_step'] / floor:.2f} | {r['peak_gib']:.1f} | {r['losses'][0]:.6f} / {r['losses'][-1]:.6f} "
              f"| {delta:.2e} |")


def main() -> None:
    args = parse_args()
    OPTIONS["offload_activations"] = args.offload
    backbone = build_backbone(args)
    args.initial_lora = [p.detach().clone() for p in backbone.denoiser.parameters() if p.requires_grad]
    *inputs, tokens = make_inputs(args, backbone)
    results = run_variants(args, backbone, inputs)
    floor = flop_floor(backbone, tokens, args.pairs) / PEAK_BF16_FLOPS
    print_table(args, results, tokens, floor)
    if args.json:
        args_json = {k: v for k, v in vars(args).items() if k not in ("initial_lora", "variant_list")}
        write_json(args.json, {"args": args_json, "tokens": tokens, "floor_s": floor, "results": results})


if __name__ == "__main__":
    main()
