"""recipes/miniature.yaml end to end on its shipped models, shrunk to a few videos and two steps per stage."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import ROOT

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)

# A few videos, two steps per training stage; with so few videos, stage 1 may pair any dynamic gap.
SMALL = ["repository.lora_videos=3", "repository.base_videos=3", "repository.regenerate_videos=3",
         "prompts.count=2", "evaluation.videos_per_prompt=1", "identity_lora.max_steps=2", "dpo_stage1.max_steps=2",
         "dpo_stage2.max_steps=2", "stage1.selectors.0.options.tolerance=9", "stage2.selectors.1.options.k=4"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_miniature_recipe_runs_end_to_end_on_its_shipped_models(tmp_path):
    command = [sys.executable, "-m", "prefopt", "run", str(ROOT / "recipes" / "miniature.yaml"),
               f"run.output_dir={tmp_path}", *SMALL]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900, cwd=ROOT,
                            env={**os.environ, "PREFOPT_LOAD_PLUGINS": "", "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "miniature"
    state = json.loads((run / "stages.json").read_text())
    assert all(record["status"] == "done" for record in state.values()) and "evaluation" in state
    assert (run / "report" / "index.html").stat().st_size > 1000

    from prefopt.repository import MediaRepository

    repo = MediaRepository(run / "repository")
    sources = {item.id: item.source for item in repo.items()}
    identity = {}
    for row in repo.score_rows():
        if row["reward"] == "identity":
            identity.setdefault(sources[row["item_id"]], []).append(row["raw"])
    # The static videos are the reference stills themselves: the identity net must recognise them, and rate
    # the base model's avatars (other identities) lower.
    assert np.mean(identity["static"]) > 0.8
    assert np.mean(identity["base"]) < np.mean(identity["static"]) - 0.2, identity


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_miniature_reward_dpo_loop_runs_and_the_study_reads_it(tmp_path, monkeypatch):
    """recipes/miniature-reward-dpo.yaml shrunk to one round of a few samples; the study script's reading and
    in-sample table (studies/reward_dpo_miniature.py) on that run."""
    small = [f"run.output_dir={tmp_path}", "run.name=seed0", "rounds=1", "sampling.samples_per_prompt=3",
             "sampling.num_inference_steps=4", "trainer.max_steps=2", "selection.selectors.0.options.margin=0.1"]
    result = subprocess.run([sys.executable, "-m", "prefopt", "run", str(ROOT / "recipes" / "miniature-reward-dpo.yaml"),
                             *small], check=False, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "PREFOPT_LOAD_PLUGINS": "", "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    monkeypatch.syspath_prepend(str(ROOT / "studies"))
    import reward_dpo_miniature as study

    scores = study.stage_scores(tmp_path / "seed0")
    assert set(scores) == {"round0", "final", "heldout-base", "heldout-final"}
    assert all(len(scores[s]["action"]) == 9 for s in scores)  # 3 prompts × 3 samples, trained and held out
    table = study.in_sample({0: scores, 1: scores})
    assert list(table) == ["round0", "final", "heldout-base", "heldout-final"]
    assert table["final"]["action"] == (pytest.approx(np.mean(list(scores["final"]["action"].values()))), 0.0)


def test_a_prompt_the_action_reward_cannot_score_stops_magicid_before_any_work(tmp_path, capsys):
    from prefopt.cli import main

    code = main(["run", str(ROOT / "recipes" / "miniature.yaml"), f"run.output_dir={tmp_path}",
                 "prompts.eval=[a person flies]"])
    err = capsys.readouterr().err
    assert code == 2 and "reward `semantic`: prompt `a person flies` names no action" in err
    assert not list(tmp_path.glob("*/identity_lora-*"))


@pytest.mark.parametrize("recipe", ["miniature.yaml", "miniature-reward-dpo.yaml", "miniature-online-rl.yaml"])
def test_the_shipped_miniature_recipes_find_everything_from_any_directory(recipe, tmp_path, monkeypatch):
    """#24 item 10: models and photos are `package://` paths, found wherever the command runs."""
    from prefopt.runner import load_recipe

    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(ROOT / "recipes" / recipe, [f"run.output_dir={tmp_path}"])
    assert loaded.missing_requirements() == []


def test_a_missing_local_model_is_named_with_where_relative_paths_are_read_not_a_hub_download(tmp_path,
                                                                                             monkeypatch):
    from prefopt.runner import load_recipe

    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(ROOT / "recipes" / "miniature-online-rl.yaml",
                         ["backbone.options.pretrained=my/weights/model", f"run.output_dir={tmp_path}"])
    [message] = loaded.missing_requirements()
    assert "`my/weights/model`" in message and f"A relative path is read from `{tmp_path}`" in message
    assert "hf download" not in message and "Set `backbone.options.pretrained` to a directory" in message
