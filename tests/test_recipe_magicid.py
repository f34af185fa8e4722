"""The MagicID recipe end to end on the quickstart's tiny models: outputs, resume, reruns, CLI paths."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL = ["video.num_frames=5", "video.height=96", "video.width=96", "repository.lora_videos=4",
         "repository.base_videos=4", "repository.regenerate_videos=4", "prompts.count=2", "prompts.eval_count=1",
         "evaluation.videos_per_prompt=1", "identity_lora.max_steps=4", "dpo_stage1.max_steps=6",
         "dpo_stage2.max_steps=4", "dpo_stage1.checkpoint_every=2"]


def _command(tmp_path, *extra):
    models = tmp_path / "tiny-models"
    return [sys.executable, "-m", "prefopt", "run", QUICKSTART, f"run.output_dir={tmp_path}",
            f"backbone.options.pretrained={models}/hunyuan-video",
            f"rewards.semantic.options.model={models}/clip", *SMALL, *extra]


def _env():
    return {**os.environ, "PREFOPT_LOAD_PLUGINS": "", "COLUMNS": "200"}


def _run(tmp_path, *extra):
    result = subprocess.run(_command(tmp_path, *extra), check=False, capture_output=True, text=True, env=_env(),
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("magicid")
    return tmp_path, _run(tmp_path)


def test_quickstart_runs_every_stage_and_writes_its_outputs(finished_run):
    tmp_path, out = finished_run
    assert "videos are noise" in out and "✓ stage2" in out and "report:" in out  # one line per stage
    run = tmp_path / "quickstart"
    state = json.loads((run / "stages.json").read_text())
    assert list(state) == ["identity_lora", "prompts", "repository", "scoring", "stage1", "regenerate", "stage2",
                           "evaluation"]
    assert all(record["status"] == "done" for record in state.values())
    for name in ("index.html", "timings.png", "rewards.png", "training.png", "stage1_pairs.png", "stage2_pairs.png"):
        assert (run / "report" / name).stat().st_size > 1000, name
    assert "videos are noise" in (run / "report" / "index.html").read_text()
    for stage in ("identity_lora", "stage1", "stage2"):
        assert (run / f"{stage}-{state[stage]['hash']}" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    for stage in ("stage1", "stage2"):
        assert (run / f"{stage}-{state[stage]['hash']}" / "pairs.parquet").is_file()
    from datasets import load_dataset

    items = load_dataset("parquet", data_files=str(run / "repository" / "items" / "*.parquet"), split="train")
    assert sorted(set(items["source"])) == ["base", "lora", "static"] and len(items) == 1 + 4 + 4 + 4
    table = json.loads((run / f"evaluation-{state['evaluation']['hash']}" / "table.json").read_text())
    assert [row["model"] for row in table] == ["base", "identity LoRA", "MagicID (final)"]


def test_rerun_skips_finished_stages_and_a_changed_stage_reruns_from_there(finished_run):
    tmp_path, _ = finished_run
    before = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    again = _run(tmp_path)
    assert again.count("done earlier") == 8
    changed = _run(tmp_path, "dpo_stage2.max_steps=3")
    after = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    for stage in ("identity_lora", "prompts", "repository", "scoring", "stage1", "regenerate"):
        assert after[stage]["hash"] == before[stage]["hash"] and f"✓ {stage}: done earlier" in changed
    assert after["stage2"]["hash"] != before["stage2"]["hash"] and "configuration changed" in changed
    assert after["evaluation"]["hash"] != before["evaluation"]["hash"]
    assert not (tmp_path / "quickstart" / f"stage2-{before['stage2']['hash']}").exists()


def test_killed_mid_stage_resumes_without_recomputing(tmp_path):
    # A longer stage-1 DPO leaves a wide window to interrupt it after its first checkpoint.
    longer = ["dpo_stage1.max_steps=30"]
    process = subprocess.Popen(_command(tmp_path, *longer), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_env(), cwd=tmp_path)
    state_file = tmp_path / "quickstart" / "stages.json"
    checkpoint_glob = "quickstart/stage1-*/checkpoints/step-[0-9][0-9][0-9][0-9][0-9][0-9]/trainer_state.json"
    deadline = time.time() + 500
    while time.time() < deadline and process.poll() is None:
        if list(tmp_path.glob(checkpoint_glob)):  # killed in the middle of DPO stage 1
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads(state_file.read_text())
    assert state["stage1"]["status"] == "running", "the run finished before it could be interrupted"
    items_before = len(list((tmp_path / "quickstart" / "repository" / "items").glob("part-*.parquet")))
    out = _run(tmp_path, *longer)
    for stage in ("identity_lora", "prompts", "repository", "scoring"):
        assert f"✓ {stage}: done earlier" in out
    assert "resuming training from" in out
    parts = list((tmp_path / "quickstart" / "repository" / "items").glob("part-*.parquet"))
    assert len(parts) > items_before  # regenerated videos were added; nothing generated twice:
    from prefopt.repository import MediaRepository

    ids = [r.id for r in MediaRepository(tmp_path / "quickstart" / "repository").items()]
    assert len(ids) == len(set(ids)) == 13


def test_prefopt_select_reselects_on_the_existing_repository(finished_run):
    tmp_path, _ = finished_run
    command = [sys.executable, "-m", "prefopt", "select", QUICKSTART, f"run.output_dir={tmp_path}",
               f"backbone.options.pretrained={tmp_path}/tiny-models/hunyuan-video",
               f"rewards.semantic.options.model={tmp_path}/tiny-models/clip", *SMALL, "--stage", "stage1"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "quickstart" / "stage1-reselect" / "pairs.parquet").is_file()


def test_paper_recipe_validates_and_without_weights_exits_2_quickly(tmp_path):
    env = {**_env(), "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    validate = subprocess.run([sys.executable, "-m", "prefopt", "validate", str(ROOT / "recipes" / "magicid.yaml")],
                              check=False, capture_output=True, text=True, env=env, timeout=120)
    assert validate.returncode == 0, validate.stderr
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "prefopt", "run", str(ROOT / "recipes" / "magicid.yaml"),
         f"references.photos=[{tmp_path}/me.jpg]", "rewards.identity.options.root=" + str(tmp_path)],
        check=False, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and time.time() - start < 30
    message = result.stderr
    assert "Traceback" not in message and message.count("\n") == 1
    for needle in ("me.jpg` does not exist", "HunyuanVideo weights", "insightface model pack `antelopev2`",
                   "raft_large weights", "VLM weights `Qwen/Qwen2.5-VL-7B-Instruct`", "CLIP (evaluation) weights"):
        assert needle in message, needle


def test_two_processes_shard_generation_and_scoring_without_loss_or_duplicates(tmp_path):
    env = {**_env(), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", *_command(tmp_path)[2:]]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from prefopt.repository import MediaRepository

    repo = MediaRepository(tmp_path / "quickstart" / "repository")
    items = repo.items()
    assert len(items) == len({r.id for r in items}) == 13
    generated = [r for r in items if r.source != "static"]
    assert {json.loads(r.extra)["process"] for r in generated} == {0, 1}
    state = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    assert all(record["status"] == "done" for record in state.values())
    scores = repo.score_rows()
    per_item = {(row["item_id"], row["reward"]) for row in scores}
    assert len(per_item) == len(scores) == 13 * 3  # every item scored once per reward, none twice
