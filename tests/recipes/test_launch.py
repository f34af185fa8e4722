"""Every recipe runs from the command line under `accelerate launch -m prefopt run CONFIG` on two CPU processes
(docs/training.md, "Several processes"): each stage is made by both processes and finishes once.
The MagicID recipe's two-process run is in tests/recipes/magicid/test_recipe.py, which also checks the sharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from prefopt.media import write_media
from tests import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # end to end, two processes each


def accelerate_launch(*arguments: str, cwd) -> subprocess.CompletedProcess:
    """The documented CPU command: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m prefopt
    run …` (accelerate's `--cpu` alone runs one process)."""
    env = {**os.environ, "PREFOPT_LOAD_PLUGINS": "", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "prefopt", "run",
               *arguments]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=900, cwd=cwd)


def _assert_every_stage_made_by_two_processes(run, stages):
    state = json.loads((run / "stages.json").read_text())
    assert list(state) == stages
    for name, record in state.items():
        marker = json.loads((run / f"{name}-{record['hash']}" / ".prefopt-stage.json").read_text())
        assert marker["status"] == "done" and marker["processes"] == 2, (name, marker)


def test_the_dpo_recipe(tmp_path):
    rng = np.random.default_rng(0)
    images = [write_media(tmp_path / f"{i}.png", rng.integers(0, 255, (1, 32, 32, 3), np.uint8)) for i in range(8)]
    pairs = [{"prompt": f"prompt {i}", "winner": images[2 * i].name, "loser": images[2 * i + 1].name} for i in range(4)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    result = accelerate_launch(
        str(ROOT / "recipes" / "dpo.yaml"), f"data.path={tmp_path / 'pairs.jsonl'}", "backbone.name=stable-diffusion",
        f"backbone.options.pretrained={tmp_path / 'sd'}", "backbone.options.dtype=float32",
        "run.build_tiny_models=true",
        f"run.output_dir={tmp_path / 'runs'}", "trainer.max_steps=2", "trainer.height=32", "trainer.width=32",
        "trainer.mixed_precision=no", "trainer.gradient_accumulation_steps=1", "trainer.beta=100",
        "evaluation.prompts=[a red fox]", "evaluation.seeds_per_prompt=1", "evaluation.num_inference_steps=2",
        cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_every_stage_made_by_two_processes(tmp_path / "runs" / "dpo", ["pairs", "train", "evaluation"])
    assert result.stdout.count("prefopt: run finished") == 2  # both processes ran the command to its end


def test_the_reward_dpo_recipe(tmp_path):
    result = accelerate_launch(
        str(ROOT / "recipes" / "miniature-reward-dpo.yaml"), f"run.output_dir={tmp_path}", "rounds=1",
        "prompts=[a person jumps up and down]", "heldout_prompts=[a person stands still]",
        "sampling.samples_per_prompt=4", "sampling.num_frames=4", "sampling.num_inference_steps=2",
        "sampling.batch_size=2", "selection.selectors.0.options.margin=0.01", "trainer.max_steps=2",
        "trainer.batch_size=2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_every_stage_made_by_two_processes(tmp_path / "miniature-reward-dpo", ["round0", "final"])


def test_the_online_rl_recipe(tmp_path):
    result = accelerate_launch(
        str(ROOT / "recipes" / "miniature-online-rl.yaml"), f"run.output_dir={tmp_path}", "trainer.epochs=1",
        "trainer.group_size=2", "trainer.prompts_per_epoch=2", "trainer.sampling_steps=2",
        "trainer.micro_batch_size=2", "trainer.updates_per_epoch=1",
        "prompts=[a person jumps up and down, a person nods their head]", "heldout_prompts=[a person stands still]",
        "evaluation.seeds_per_prompt=1", "evaluation.num_inference_steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_every_stage_made_by_two_processes(tmp_path / "miniature-online-rl", ["train", "evaluation"])
