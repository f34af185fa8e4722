"""FLOPs of a whole DPO step, counted per variant: how close to issue #7's floor each one can get at best.

The issue's floor counts 5 forward-equivalents per sample (reference, forward, recompute, backward ×2).
What a step really computes differs: the base weights are frozen, so the backward of a frozen linear layer
computes only the input's gradient (1 forward-equivalent, not 2); a fused attention kernel's backward
recomputes the scores (2.5×); the `split` schedule adds a policy forward; checkpointing fewer blocks, or
keeping the attention outputs of checkpointed blocks, recomputes less; trimmed text has fewer tokens.
This script counts each variant's step on the real 12.8B transformer on the meta device (shapes only:
seconds on a CPU), with the step's structure from
``prefopt.dpo_steps`` and prefopt's own LoRA, checkpointing and mask-free attention. Dividing by the floor
gives the variant's best possible time ÷ floor if every FLOP ran at 790 TFLOP/s, and the throughput the
step must sustain to meet the goal. Matmuls and attention are counted; elementwise work (norms, RoPE,
activations, the optimizer) is not.

    python benchmarks/dpo_step_flops.py
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from dpo_flops import LORA_TARGETS, PEAK_BF16_FLOPS, SIZES, TEXT_TOKENS, build, formula, meta_inputs, prepare
from torch.utils.flop_counter import FlopCounterMode

from prefopt.lora import reference_mode
from prefopt.speed_levers import enable_block_checkpointing, forward_state
from prefopt_plugins.backbones.hunyuan_video import FULL_TEXT_MASK

GOALS = {(33, 320, 512): 1.5, (61, 480, 848): 1.5, (61, 720, 1280): 1.6}
# (label, schedule, text, checkpoint every n-th block (0 = none), keep attention outputs). The first is the
# issue's straightforward step.
VARIANTS = [
    ("straightforward: joint, padded text + mask, every block checkpointed", "joint", "padded", 1, False),
    ("joint, trimmed text, every block checkpointed", "joint", "trimmed", 1, False),
    ("joint, trimmed text, every block checkpointed, attention kept", "joint", "trimmed", 1, True),
    ("joint, trimmed text, every 2nd block", "joint", "trimmed", 2, False),
    ("joint, trimmed text, no checkpointing", "joint", "trimmed", 0, False),
    ("split, trimmed text, every block checkpointed", "split", "trimmed", 1, False),
    ("split, trimmed text, every block checkpointed, attention kept", "split", "trimmed", 1, True),
    ("split, trimmed text, no checkpointing", "split", "trimmed", 0, False),
]


@contextlib.contextmanager
def fused_attention_on_meta() -> Iterator[None]:
    """Count attention as a GPU runs it. On meta, SDPA decomposes into two bmm whose backward is 2× the
    forward; a GPU runs a fused kernel whose backward recomputes the scores (2.5×): flash without a mask,
    memory-efficient with one. Both are the GPU kernels, which have meta implementations and FLOP formulas
    in every torch release (the CPU flash kernel's formula is missing from some, e.g. 2.14.1)."""
    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is None:
            return torch.ops.aten._scaled_dot_product_flash_attention(
                query, key, value, dropout_p, is_causal, scale=scale)[0]
        batch, heads, queries, keys = *query.shape[:3], key.shape[2]
        bias = attn_mask.expand(batch, heads, queries, keys).to(query.dtype)  # shapes only, on meta
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, bias, True, dropout_p, is_causal, scale=scale)[0]

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def model_inputs(model, size: tuple[int, int, int], text: str, batch: int, valid_tokens: int) -> dict:
    """Padded text: 256 tokens and a mask; trimmed text: the valid tokens only."""
    return meta_inputs(model, size, TEXT_TOKENS if text == "padded" else valid_tokens, valid_tokens, batch)


def count_step(model, size, schedule: str, text: str, every: int, valid_tokens: int, save_attention: bool = False
               ) -> float:
    """FLOPs of one step on one pair, structured as prefopt.dpo_steps' ``joint_step`` / ``split_step``."""
    if every:
        enable_block_checkpointing(model, every, save_attention)
    else:
        model.disable_gradient_checkpointing()
    state = {FULL_TEXT_MASK: True} if text == "trimmed" else {}  # what the backbone sets for trimmed text

    def forward(batch: int) -> torch.Tensor:
        return model(**model_inputs(model, size, text, batch, valid_tokens))[0]

    def backward(batch: int) -> None:  # the loss's elementwise work is not counted
        forward(batch).float().square().sum().backward()

    def reference(batch: int) -> None:
        with torch.no_grad(), reference_mode(model):
            forward(batch)

    with FlopCounterMode(display=False) as counter, fused_attention_on_meta(), forward_state(**state):
        if schedule == "joint":
            reference(2)  # winner and loser
            backward(2)
        else:  # split: references, the winner with gradients, the loser without, then with (one sample each)
            reference(1)
            reference(1)
            backward(1)
            with torch.no_grad():
                forward(1)
            backward(1)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valid-text-tokens", type=int, default=64, help="A typical prompt's valid tokens.")
    parser.add_argument("--lora-rank", type=int, default=64)
    args = parser.parse_args()
    model = prepare(build(), args.lora_rank)
    print(f"One DPO step on one pair, LoRA r={args.lora_rank} on {', '.join(LORA_TARGETS)}, "
          f"{args.valid_text_tokens} valid text tokens; floor = 5 × 2 × issue formula at 790 TFLOP/s")
    print("| video | variant | TFLOP / step | forward-equivalents | best case ÷ floor | "
          "TFLOP/s needed for the goal |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        video_tokens = ((size[0] - 1) // 4 + 1) * (size[1] // 16) * (size[2] // 16)
        forward = formula(model, video_tokens, TEXT_TOKENS)  # one sample, the floor's unit
        floor_seconds = 10 * forward / PEAK_BF16_FLOPS
        for label, schedule, text, every, save_attention in VARIANTS:
            flops = count_step(model, size, schedule, text, every, args.valid_text_tokens, save_attention)
            print(f"| {size[0]}×{size[1]}×{size[2]} | {label} | {flops / 1e12:.1f} | {flops / (2 * forward):.2f} | "
                  f"{flops / (10 * forward):.2f}× | {flops / (GOALS[size] * floor_seconds) / 1e12:.0f} "
                  f"(goal {GOALS[size]}×) |")


if __name__ == "__main__":
    main()
