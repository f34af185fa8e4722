"""The benchmark scripts stay runnable, and their variants compute the same losses (no timing here)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests import ROOT

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """Runs benchmarks/<script> as users do, without installed third-party plugins."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    env = {**os.environ, "PREFOPT_LOAD_PLUGINS": ""}
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(("options", "tolerance"), [
    # float32: `split` runs one sample per forward, `joint` two, and the kernels round differently by the
    # ulp of an error (~2e-7), which β/2 = 1250 lifts to ~6e-4 in the loss; float64 agrees to 1e-9.
    ([], 2e-3),
    (["--dtype", "float64"], 1e-9),
    # diffusers' masked forward on padded text vs prefopt's trimmed text, checkpointing every 2nd block.
    # Masking and dropping the padding sum the softmax in another order: float32 rounding (~5e-7 in the
    # prediction) that β/2 = 1250 lifts to ~1e-4 in the loss; float64 shows the two are the same step.
    (["--valid-text-tokens", "5", "--gradient-checkpointing", "--checkpoint-every", "2", "--dtype", "float64"], 1e-9),
    (["--gradient-checkpointing", "--checkpoint-save-attention", "--dtype", "float64"], 1e-9),
    (["--gradient-checkpointing", "--checkpoint-every", "0", "--dtype", "float64"], 1e-9),  # prefopt: none
], ids=["defaults", "float64", "padded-text-checkpointed", "attention-kept", "prefopt-without-checkpointing"])
def test_dpo_step_benchmark_variants_agree(tmp_path, options, tolerance):
    out = tmp_path / "results.json"
    result = _run_benchmark("dpo_step.py", "--size", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out),
                            *options)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["straightforward", "prefopt joint", "prefopt split"]
    baseline = results[0]["losses"]
    assert abs(baseline[0] - 0.6931471805599453) < 1e-6  # LoRA starts at B = 0: policy equals reference
    assert baseline[-1] != baseline[0]  # the steps did train
    for r in results[1:]:
        assert all(abs(a - b) < tolerance for a, b in zip(r["losses"], baseline, strict=True)), r["variant"]


def test_selection_benchmark_matches_its_baseline():
    result = _run_benchmark("selection.py", "--sizes", "3000")
    assert result.returncode == 0, result.stderr[-2000:]
    row = result.stdout.strip().splitlines()[-1]
    assert row.startswith("| 3,000 |") and "MISMATCH" not in row


def test_flop_count_confirms_the_floor_formula():
    """The counted FLOPs of the real-size transformer (meta device) match the issue's floor formula."""
    result = _run_benchmark("dpo_flops.py")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith(("| 33×", "| 61×"))]
    assert len(rows) == 3
    for row in rows:
        counted, issue_formula = float(row[2]), float(row[3])
        assert abs(counted - issue_formula) / counted < 0.01, row
        assert float(row[6]) < counted  # trimmed text tokens: less work


def test_memory_model_reproduces_the_issues_measured_peaks():
    """Activation bytes measured on real-width blocks (CPU) predict the straightforward step's peaks that
    issue #7 measured on an H100: 31.5 GiB at 33×320×512, out of memory (> 78 GiB) at 61×720×1280."""
    result = _run_benchmark("dpo_memory.py")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {(r[0].strip(), r[2].strip()): r for r in
            (line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith(("| 33×", "| 61×")))}
    joint_small = float(rows[("33×320×512", "all blocks")][4])
    assert abs(joint_small - 31.5) / 31.5 < 0.1
    assert float(rows[("61×720×1280", "all blocks")][4]) > 78  # the joint step does not fit
    assert float(rows[("61×720×1280", "all blocks")][5]) < 70  # the split step does
    kept = next(line for line in result.stdout.splitlines() if line.startswith("Kept attention outputs"))
    assert "6240 bytes/token, measured" in kept  # selective checkpointing keeps output + log-sum-exp, no more
    assert float(rows[("61×720×1280", "all blocks, attention kept")][5]) < 78  # split still fits
    gpu, moved = (float(x) for x in rows[("61×720×1280", "all blocks")][6].split("/"))
    assert gpu < 70 and abs(moved - 4 * float(rows[("61×720×1280", "all blocks")][3])) < 1  # joint + offload too


def test_step_flop_count_follows_the_schedules(monkeypatch):
    """dpo_step_flops.py counts what each schedule computes: `split` is `joint` plus one policy forward of one
    sample, and checkpointing fewer blocks recomputes less (meta device, a 2 + 2-block model)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from dpo_flops import build, prepare
    from dpo_step_flops import count_step, fused_attention_on_meta, model_inputs
    from torch.utils.flop_counter import FlopCounterMode

    from prefopt.speed_levers import forward_state
    from prefopt_plugins.backbones.hunyuan_video import FULL_TEXT_MASK

    model = prepare(build(num_layers=2, num_single_layers=2), lora_rank=8)
    size = (9, 64, 96)
    joint, split = (count_step(model, size, schedule, "trimmed", 1, 16) for schedule in ("joint", "split"))
    def trimmed():
        return forward_state(**{FULL_TEXT_MASK: True})

    with FlopCounterMode(display=False) as counter, fused_attention_on_meta(), trimmed(), torch.no_grad():
        model(**model_inputs(model, size, "trimmed", 1, 16))  # the extra forward: the loser's, without gradients
    assert split - joint == counter.get_total_flops() > 0
    assert torch.ops.aten._scaled_dot_product_flash_attention in counter.get_flop_counts()["Global"]
    every_block, every_2nd, none = (count_step(model, size, "joint", "trimmed", n, 16) for n in (1, 2, 0))
    assert every_block > every_2nd > none
    # Attention kept: the recomputation skips exactly the blocks' attention forward for both samples
    # (the blocks run flash; the token refiner, with its mask, the memory-efficient kernel).
    with FlopCounterMode(display=False) as pair, fused_attention_on_meta(), trimmed(), torch.no_grad():
        model(**model_inputs(model, size, "trimmed", 2, 16))
    blocks_attention = pair.get_flop_counts()["Global"][torch.ops.aten._scaled_dot_product_flash_attention]
    kept = count_step(model, size, "joint", "trimmed", 1, 16, save_attention=True)
    assert every_block - kept == blocks_attention > 0
    assert count_step(model, size, "joint", "padded", 1, 16) > every_block  # 256 padded text tokens


def test_online_rl_memory_reuses_the_dpo_measurement_and_fits_the_paper_size():
    """A GRPO update of one sample keeps what DPO's split step keeps (one sample's activations beside the same weights
    and LoRA state): the two estimates must agree row by row; with every block checkpointed one sample fits 80 GB at
    every size, and the trajectories of an SDE window are a fifth of every step's."""
    online, dpo = _run_benchmark("online_rl_memory.py"), _run_benchmark("dpo_memory.py")
    assert online.returncode == 0 and dpo.returncode == 0, online.stderr[-2000:] + dpo.stderr[-2000:]

    def rows(output):
        return {(r[0].strip(), r[2].strip()): r for r in (line.split("|")[1:-1] for line in output.splitlines()
                                                          if line.startswith(("| 33×", "| 61×")))}

    grpo, split = rows(online.stdout), rows(dpo.stdout)
    for key in (k for k in grpo if k[1] in ("none", "every 2", "all blocks")):
        assert abs(float(grpo[key][3]) - float(split[key][5])) < 0.15, key
    for size in ("33×320×512", "61×480×848", "61×720×1280"):
        row = grpo[(size, "all blocks")]
        assert float(row[3]) < 78
        assert abs(float(row[6]) * 5 - float(row[5])) < 0.05
