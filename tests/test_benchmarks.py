"""The benchmark scripts stay runnable, and their variants compute the same losses (no timing here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dpo_step_benchmark_variants_agree(tmp_path):
    out = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "dpo_step.py"), "--size", "tiny", "--steps", "2",
               "--warmup", "1", "--json", str(out)]
    env = {**os.environ, "PREFOPT_LOAD_PLUGINS": ""}
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["straightforward", "prefopt joint", "prefopt split"]
    baseline = results[0]["losses"]
    assert abs(baseline[0] - 0.6931471805599453) < 1e-6  # LoRA starts at B = 0: policy equals reference
    for r in results[1:]:
        assert all(abs(a - b) < 1e-5 for a, b in zip(r["losses"], baseline, strict=True)), r["variant"]


def test_selection_benchmark_matches_its_baseline():
    command = [sys.executable, str(ROOT / "benchmarks" / "selection.py"), "--sizes", "3000"]
    env = {**os.environ, "PREFOPT_LOAD_PLUGINS": ""}
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = result.stdout.strip().splitlines()[-1]
    assert row.startswith("| 3,000 |") and "MISMATCH" not in row
