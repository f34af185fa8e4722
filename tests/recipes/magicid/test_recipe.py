"""The MagicID recipe end to end on the quickstart's tiny models: outputs, resume, reruns, CLI paths."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import ROOT

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)

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
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("magicid")
    return tmp_path, _run(tmp_path)


def test_quickstart_runs_every_stage_and_writes_its_outputs(finished_run):
    tmp_path, out = finished_run
    assert "videos are noise" in out and "✓ stage2" in out and "report:" in out  # one line per stage
    assert "Adapter cannot be set" not in out and "multiple adapters" not in out  # peft's warnings of what we intend
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
    assert [row["model"] for row in table] == ["base", "identity LoRA", "stage 1 (ID pairs)", "MagicID (final)"]
    assert all(row["faceless_frames"].endswith("/16") for row in table)  # ConsisID: 16 frames per video
    ablation = (run / f"evaluation-{state['evaluation']['hash']}" / "table.md").read_text()
    assert ablation.count("\n") == 6 and "| stage 1 (ID pairs) | ✓ |  |" in ablation  # shaped like Table 2
    report = (run / "report" / "index.html").read_text()
    for needle in ("Reference photos", "thumbs/reference-0.png", "As the paper's Table 2", "pytorch_lora_weights",
                   "Held-out evaluation", "config.json"):
        assert needle in report, needle
    assert len(list((run / "report" / "thumbs").glob("*.png"))) > 4  # pair thumbnails
    from prefopt.layout import RunLayout
    from prefopt.runner import load_recipe

    layout = RunLayout(run)  # `prefopt sample` samples the final model: identity LoRA, then stage 2's over it
    assert load_recipe(run / "config.json").result_loras(layout) == [layout.current("identity_lora").lora,
                                                                      layout.current("stage2").lora]


def test_rerun_skips_finished_stages_and_a_changed_stage_reruns_from_there(finished_run):
    tmp_path, _ = finished_run
    before = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    again = _run(tmp_path)
    assert again.count("done earlier") == 8
    changed = _run(tmp_path, "dpo_stage2.max_steps=3")
    after = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    for stage in ("identity_lora", "prompts", "repository", "scoring", "stage1", "regenerate"):
        assert after[stage]["hash"] == before[stage]["hash"] and f"✓ {stage}: done earlier" in changed
    assert after["stage2"]["hash"] != before["stage2"]["hash"] and "configuration or inputs changed" in changed
    assert after["evaluation"]["hash"] != before["evaluation"]["hash"]
    old_lora = tmp_path / "quickstart" / f"stage2-{before['stage2']['hash']}" / "lora" / "pytorch_lora_weights.safetensors"
    assert old_lora.is_file()  # the earlier configuration's finished stage is kept: going back is free
    back = _run(tmp_path)
    assert back.count("done earlier") == 8
    clean = subprocess.run([*_command(tmp_path)[:3], "clean", *_command(tmp_path)[4:]], check=False,
                           capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert clean.returncode == 0, clean.stderr
    run = tmp_path / "quickstart"
    for stage in ("stage2", "evaluation"):  # the `max_steps=3` run's folders were superseded by going back
        assert not (run / f"{stage}-{after[stage]['hash']}").exists() and (run / f"{stage}-{before[stage]['hash']}").is_dir()
    assert "removed 2 superseded stage folder(s)" in clean.stdout


def test_a_failing_config_change_keeps_the_finished_stage(finished_run):
    tmp_path, _ = finished_run
    run = tmp_path / "quickstart"
    state = json.loads((run / "stages.json").read_text())
    lora = run / f"stage1-{state['stage1']['hash']}" / "lora" / "pytorch_lora_weights.safetensors"
    before, record = lora.read_bytes(), (run / "config.json").read_text()
    result = subprocess.run(_command(tmp_path, "dpo_stage1.learning_rate=1e30"), check=False, capture_output=True,
                            text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert result.returncode == 2 and "the training loss became nan" in result.stderr
    assert lora.read_bytes() == before
    assert (run / "config.json").read_text() == record  # still the record of the folders that finished
    failed = next(p for p in run.glob("stage1-*") if '"learning_rate": 1e+30' in (p / "config.json").read_text())
    assert json.loads((failed / ".prefopt-stage.json").read_text())["status"] == "running"
    assert _run(tmp_path).count("done earlier") == 8  # the original config still finds every stage finished


def test_a_finished_stage_whose_lora_was_truncated_since_is_trained_again(finished_run):
    """Skipped stages are re-verified: a damaged final LoRA is not trusted as `done earlier` (exit 0, "run
    finished"); the stage runs again in its folder, resuming from its last checkpoint, and the LoRA is whole."""
    from prefopt.data import verify_safetensors

    tmp_path, _ = finished_run
    run = tmp_path / "quickstart"
    state = json.loads((run / "stages.json").read_text())
    lora = run / f"stage1-{state['stage1']['hash']}" / "lora" / "pytorch_lora_weights.safetensors"
    tensors = lora.read_bytes()
    lora.write_bytes(tensors[: len(tensors) // 2])
    out = _run(tmp_path)
    assert "↻ stage1: finished earlier, but the final LoRA of stage `stage1`" in out and "resuming training" in out
    assert out.count("done earlier") == 7
    verify_safetensors(lora, "the LoRA")
    assert json.loads((run / "stages.json").read_text()) == {**state, "stage1": json.loads(
        (run / "stages.json").read_text())["stage1"]}  # the same chain of stages, nothing else rerun


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


def _interrupt_at(tmp_path, marker: str) -> subprocess.CompletedProcess:
    """Run in a terminal's way (its own process group) and press ctrl-C, which reaches the whole group, as soon as
    a line containing ``marker`` is printed."""
    process = subprocess.Popen(_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**_env(), "PYTHONUNBUFFERED": "1"}, cwd=tmp_path, start_new_session=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGINT)
            break
    lines.append(process.stdout.read())
    process.wait(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, "".join(lines), "")


def test_ctrl_c_during_scoring_and_evaluation_stops_cleanly_and_a_rerun_finishes(tmp_path):
    for marker in ("scoring identity", "evaluating: generating for identity"):
        stopped = _interrupt_at(tmp_path, marker)
        assert stopped.returncode == 130, stopped.stdout[-2000:]
        assert "interrupted; finished work is kept and a re-run resumes" in stopped.stdout
        assert "Traceback" not in stopped.stdout
    finished = _run(tmp_path)
    assert "✓ evaluation" in finished and "Traceback" not in finished
    leftovers = [p for p in (tmp_path / "quickstart").rglob("*") if ".tmp" in p.name and p.is_file()]
    assert leftovers == []


def test_prefopt_select_reselects_on_the_existing_repository(finished_run):
    tmp_path, _ = finished_run
    command = [sys.executable, "-m", "prefopt", "select", QUICKSTART, f"run.output_dir={tmp_path}",
               f"backbone.options.pretrained={tmp_path}/tiny-models/hunyuan-video",
               f"rewards.semantic.options.model={tmp_path}/tiny-models/clip", *SMALL, "--stage", "stage1"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = tmp_path / "quickstart" / "stage1-reselect" / "pairs.parquet"
    selected = pairs.read_bytes()
    # A selection that chooses nothing is an error, and leaves the previous re-selection as it was.
    empty = subprocess.run([*command, "stage1.selectors.0.options.margin=100"], check=False, capture_output=True,
                           text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert empty.returncode == 2 and "stage1 selected no pairs" in empty.stderr and "pairs-empty.png" in empty.stderr
    assert pairs.read_bytes() == selected and (pairs.parent / "pairs-empty.png").is_file()


def test_clean_with_a_reference_photo_that_is_gone_is_one_sentence(finished_run, tmp_path):
    finished, _ = finished_run
    command = [sys.executable, "-m", "prefopt", "clean", QUICKSTART, f"run.output_dir={finished}",
               f"references.photos=[{tmp_path / 'gone.png'}]", "--dry-run"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "input file `" in result.stderr and "gone.png` cannot be read (No such file or directory)" in result.stderr


def test_a_reference_photo_without_a_face_stops_the_run_before_any_work(tmp_path):
    import numpy as np

    from prefopt.media import write_media

    photo = write_media(tmp_path / "wall.png", np.full((1, 160, 160, 3), 128, dtype=np.uint8))
    result = subprocess.run(_command(tmp_path, f"references.photos=[{photo}]"), check=False, capture_output=True,
                            text=True, env=_env(), timeout=300, cwd=tmp_path)
    assert result.returncode == 2 and f"no face was detected in reference `{photo}`" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "quickstart").glob("identity_lora-*"))  # nothing trained


def test_the_reference_photos_content_is_part_of_every_stage_hash(tmp_path):
    import shutil

    from prefopt.runner import load_recipe
    from prefopt.stages import config_hash

    photo = tmp_path / "me.png"
    shutil.copy(ROOT / "docs" / "examples" / "prefopt-contrast" / "pyproject.toml", photo)  # any bytes will do

    def identity_hash():
        recipe = load_recipe(QUICKSTART, [f"references.photos=[{photo}]"])
        return config_hash("", recipe.stages()[0].covers)

    first = identity_hash()
    photo.write_bytes(photo.read_bytes() + b" ")  # same path, other content
    assert identity_hash() != first


def test_paper_recipe_validates_and_without_weights_exits_2_quickly(tmp_path):
    env = {**_env(), "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    photo = "package://prefopt_plugins/miniature/references/avatar-448-0.png"  # validate checks inputs, not weights
    validate = subprocess.run([sys.executable, "-m", "prefopt", "validate", str(ROOT / "recipes" / "magicid.yaml"),
                               f"references.photos=[{photo}]"], check=False, capture_output=True, text=True, env=env,
                              timeout=120)
    assert validate.returncode == 0, validate.stderr
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "prefopt", "run", str(ROOT / "recipes" / "magicid.yaml"),
         f"references.photos=[{tmp_path}/me.jpg]", "rewards.identity.options.root=" + str(tmp_path)],
        check=False, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and time.time() - start < 30
    message = result.stderr
    assert "Traceback" not in message and message.startswith("prefopt: error: recipe `magicid` cannot start:")
    assert message.count("\n") == 7  # the headline, then one line per missing model
    for needle in ("me.jpg` does not exist", "HunyuanVideo weights", "insightface model pack `antelopev2`",
                   "raft_large weights", "VLM weights `Qwen/Qwen2.5-VL-7B-Instruct`", "CLIP (evaluation) weights"):
        assert needle in message, needle


def test_two_processes_shard_generation_and_scoring_without_loss_or_duplicates(tmp_path):
    """Launched as docs/magicid.md says, with `accelerate launch -m prefopt run` (tests/recipes/test_launch.py
    launches the other recipes the same way)."""
    from tests.recipes.test_launch import accelerate_launch

    result = accelerate_launch(*_command(tmp_path)[4:], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from prefopt.repository import MediaRepository

    repo = MediaRepository(tmp_path / "quickstart" / "repository")
    items = repo.items()
    assert len(items) == len({r.id for r in items}) == 13
    generated = [r for r in items if r.source != "static"]
    assert {json.loads(r.extra)["process"] for r in generated} == {0, 1}
    state = json.loads((tmp_path / "quickstart" / "stages.json").read_text())
    assert all(record["status"] == "done" and record["processes"] == 2 for record in state.values())
    scores = repo.score_rows()
    per_item = {(row["item_id"], row["reward"]) for row in scores}
    assert len(per_item) == len(scores) == 13 * 3  # every item scored once per reward, none twice


def _relative_command(*extra):
    """The quickstart with paths relative to the working directory, so two folders hold identical configs."""
    return [sys.executable, "-m", "prefopt", "run", QUICKSTART, "run.output_dir=.",
            "backbone.options.pretrained=tiny-models/hunyuan-video", "rewards.semantic.options.model=tiny-models/clip",
            *SMALL, *extra]


def test_the_same_config_twice_gives_the_same_pairs_loras_and_evaluation(tmp_path):
    """Two runs in two folders: the same stage hashes, pairs, LoRA tensors (bit for bit) and evaluation table."""
    from prefopt.selection import read_pairs_table

    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = subprocess.run(_relative_command(), check=False, capture_output=True, text=True, env=_env(),
                                timeout=600, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(tmp_path / name / "quickstart")
    state = json.loads((runs[0] / "stages.json").read_text())
    clocks = ("seconds", "cpu_seconds", "started")  # when and how long differ between runs; nothing else may
    assert state == {k: {**v, **{c: state[k][c] for c in clocks}}
                     for k, v in json.loads((runs[1] / "stages.json").read_text()).items()}
    for stage in ("stage1", "stage2"):
        pairs = [read_pairs_table(run / f"{stage}-{state[stage]['hash']}" / "pairs.parquet") for run in runs]
        assert pairs[0] and pairs[0] == pairs[1]
    from safetensors import safe_open

    for stage in ("identity_lora", "stage1", "stage2"):
        files = [run / f"{stage}-{state[stage]['hash']}" / "lora" / "pytorch_lora_weights.safetensors" for run in runs]
        # Tensors bit for bit, and the same metadata; the byte order of safetensors' metadata map is not stable
        # (it is serialised from a hash map), so the files are compared by content, not as bytes.
        opened = [safe_open(str(f), framework="pt") for f in files]
        assert opened[0].metadata() == opened[1].metadata() and opened[0].keys() == opened[1].keys(), stage
        for key in opened[0].keys():  # noqa: SIM118 (a safetensors file handle is not iterable)
            assert opened[0].get_tensor(key).equal(opened[1].get_tensor(key)), (stage, key)
    tables = [json.loads((run / f"evaluation-{state['evaluation']['hash']}" / "table.json").read_text()) for run in runs]
    assert [{k: v for k, v in row.items() if k != "folder"} for row in tables[0]] == \
        [{k: v for k, v in row.items() if k != "folder"} for row in tables[1]]


def test_a_fourth_reward_under_its_own_name_flows_through_selection_pairs_and_report(tmp_path):
    """MagicID's three rewards are required; a fourth one, named by the user, is scored, selected on, written to
    the pairs and shown in the report and evaluation under that name."""
    import pyarrow.parquet as pq

    _run(tmp_path, "rewards.motion_cv={name: opencv-dynamic, options: {video_fps: 8, sample_fps: 4}}",
         "stage2.selectors.0.options.rewards=[identity, dynamic, semantic, motion_cv]", "stage2.plot_y=motion_cv")
    run = tmp_path / "quickstart"
    state = json.loads((run / "stages.json").read_text())
    pairs = pq.read_table(run / f"stage2-{state['stage2']['hash']}" / "pairs.parquet").column_names
    assert "delta_motion_cv" in pairs and "delta_semantic" in pairs
    table = json.loads(next(run.glob("evaluation-*/table.json")).read_text())
    assert all(1.0 <= row["motion_cv"] <= 10.0 for row in table)
    assert "<th>motion_cv</th>" in (run / "report" / "index.html").read_text()


def test_a_selector_naming_an_unknown_reward_is_a_config_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "prefopt", "validate", QUICKSTART,
                             "stage2.selectors.0.options.rewards=[identity, sharpness]"], check=False,
                            capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 2
    assert "names `sharpness`, which is not one of identity, dynamic, semantic" in result.stderr


def test_runs_with_different_seeds_share_no_video_and_seed_0_keeps_its_seeds():
    """#25 item 2: each `run.seed` draws repository, regenerated and evaluation videos from its own range, apart from
    each other; seed 0's seeds (and so its stage hashes) are what they were, other seeds' hashes carry the scheme."""
    from prefopt.runner import load_recipe
    from prefopt_recipes.magicid.config import SEED_SCHEME
    from prefopt_recipes.magicid.evaluation import evaluation_jobs
    from prefopt_recipes.magicid.recipe import BASE_SEEDS, LORA_SEEDS, REGENERATED_SEEDS, Prompts

    prompts = Prompts(train=["a", "b"], eval=["c", "d"])
    seeds, covers = {}, {}
    for run_seed in (0, 1, 2):
        recipe = load_recipe(QUICKSTART, [f"run.seed={run_seed}", "evaluation.videos_per_prompt=4"])
        made = [job.seed for offset in (BASE_SEEDS, LORA_SEEDS, REGENERATED_SEEDS)
                for job in recipe.jobs("x", 40, prompts, offset)]
        evaluated = [job.seed for job in evaluation_jobs(recipe.config, prompts.eval)]
        assert len(set(made)) == len(made) and not set(made) & set(evaluated)  # evaluation never a training seed
        seeds[run_seed] = set(made) | set(evaluated)
        covers[run_seed] = next(s for s in recipe.stages() if s.name == "repository").covers
    assert not seeds[0] & seeds[1] and not seeds[1] & seeds[2] and not seeds[0] & seeds[2]
    assert min(seeds[0]) == 0 and 10_000 in seeds[0]  # seed 0: video i of offset o has seed o + i, as before
    assert SEED_SCHEME not in covers[0] and SEED_SCHEME in covers[1]
