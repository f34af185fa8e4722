"""Memory of online RL (GRPO) on HunyuanVideo at the paper's sizes, from activations measured on real-width blocks.

A GRPO update runs, per trained SDE step and micro-batch, one policy forward with gradients and (with a KL term) one
reference forward without; its backward frees the step's activations before the next step. So the peak is the
weights, the LoRA's state, the activations of ``micro_batch_size`` samples (twice with classifier-free guidance: both
branches keep theirs) and one block being recomputed, plus the stored trajectories: each process keeps, for each of
its samples and each SDE step, the state before and after the step (float32 latents; on the host by default, counted
apart). Activation bytes per block and token are measured exactly as benchmarks/dpo_memory.py measures them (the
same code), so the two estimates are consistent; rollouts themselves run without gradients and need no more than one
block's activations. Left out, as there: allocator fragmentation, kernel workspaces, the VAE decode and the reward
models. The GPU run is the measurement.

    python benchmarks/online_rl_memory.py
"""

from __future__ import annotations

import argparse

from dpo_flops import SIZES
from dpo_memory import GIB, activation_model, predict, state_gib

LATENT_CHANNELS = 16  # HunyuanVideo's VAE
SDE_STEPS = {"every step (Flow-GRPO, 10 steps)": 10, "SDE window of 2 (MixGRPO, Flow-GRPO-Fast)": 2}
SAMPLES_PER_PROCESS = 24  # one group of Flow-GRPO's size per process and epoch


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    weights_gib, lora_state_gib = state_gib()
    _, _, per_token, fixed = activation_model()
    print(f"Weights {weights_gib:.1f} GiB (bf16), LoRA r=64 state {lora_state_gib:.1f} GiB; activations per block "
          "and sample: " + ", ".join(f"{k} {per_token[k] / 1024:.1f} KiB/token" for k in per_token))
    print("\nPredicted GPU GiB of one GRPO update (micro-batch of 1 or 2 samples, HunyuanVideo is guidance-distilled: "
          "no CFG branch); trajectories: host GiB for 24 samples per process:")
    print("| video | tokens | checkpointing | micro-batch 1 | micro-batch 2 | trajectories, every step | "
          "trajectories, window of 2 |")
    print("|---|---|---|---|---|---|---|")
    for frames, height, width in SIZES:
        latent_frames, latent_h, latent_w = (frames - 1) // 4 + 1, height // 8, width // 8
        tokens = latent_frames * (latent_h // 2) * (latent_w // 2)
        block = max(fixed[k] + per_token[k] * tokens for k in per_token) / GIB
        latent_gib = LATENT_CHANNELS * latent_frames * latent_h * latent_w * 4 / GIB
        stored = {name: SAMPLES_PER_PROCESS * steps * 2 * latent_gib for name, steps in SDE_STEPS.items()}
        for every in (None, 2, 1):
            acts = predict(per_token, fixed, tokens, every)
            base = weights_gib + lora_state_gib + (block if every else 0)
            label = "none" if every is None else ("all blocks" if every == 1 else f"every {every}")
            print(f"| {frames}×{height}×{width} | {tokens:,} | {label} | {base + acts:.1f} | {base + 2 * acts:.1f} | "
                  + " | ".join(f"{v:.2f}" for v in stored.values()) + " |")


if __name__ == "__main__":
    main()
