"""The online-RL recipe end to end on the miniature world (the shipped YAML, shrunk): train, evaluate on fresh
seeds and held-out prompts with a judge, report, resume; prompts from a dataset column."""

import json

import pytest

from prefopt.cli import main
from prefopt.errors import PrefoptError
from prefopt.online_rl import evaluation_seed
from prefopt_recipes.online_rl.config import PromptDataConfig
from prefopt_recipes.online_rl.recipe import dataset_prompts
from tests import ROOT

RECIPE = ROOT / "recipes" / "miniature-online-rl.yaml"
SMALL = ["trainer.epochs=2", "trainer.group_size=3", "trainer.sampling_steps=3", "trainer.micro_batch_size=9",
         "trainer.updates_per_epoch=1", "evaluation.seeds_per_prompt=1", "evaluation.num_inference_steps=3", "heldout_prompts=[a person stands still]"]


def test_prompts_come_from_a_dataset_column(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"text": "a person nods their head", "id": 1}\n{"text": " a person jumps up and down "}\n')
    assert dataset_prompts(PromptDataConfig(path=str(data), column="text")) == [
        "a person nods their head", "a person jumps up and down"]
    assert dataset_prompts(PromptDataConfig(path=str(data), column="text", limit=1)) == ["a person nods their head"]
    with pytest.raises(PrefoptError, match=r"row 1, has no column `prompt` \(it has text, id\)"):
        dataset_prompts(PromptDataConfig(path=str(data)))
    with pytest.raises(PrefoptError, match="prompts dataset `.*missing.jsonl` does not exist"):
        dataset_prompts(PromptDataConfig(path=str(tmp_path / "missing.jsonl")))


@pytest.mark.slow
def test_the_miniature_recipe_trains_evaluates_on_fresh_seeds_reports_and_resumes(tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"text": p}) + "\n" for p in
                            ["a person jumps up and down", "a person nods their head", "a person spins around"]))
    args = ["run", str(RECIPE), f"run.output_dir={tmp_path}", "prompts=[]", f"prompts_dataset.path={data}",
            "prompts_dataset.column=text", *SMALL]
    assert main(args) == 0
    run = tmp_path / "miniature-online-rl"
    state = json.loads((run / "stages.json").read_text())
    assert list(state) == ["train", "evaluation"] and all(s["status"] == "done" for s in state.values())
    train, evaluation = (run / f"{name}-{state[name]['hash']}" for name in ("train", "evaluation"))
    metrics = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and {"reward/action", "ratio", "kl", "clip_fraction"} <= set(metrics[0])
    table = json.loads((evaluation / "table.json").read_text())
    assert [(r["model"], r["prompts"]) for r in table] == [("base", "trained"), ("trained", "trained"),
                                                           ("base", "heldout"), ("trained", "heldout")]
    assert all({"action", "judge"} <= set(r) for r in table)
    scores = json.loads((evaluation / "scores.json").read_text())
    training_seeds = {s["seed"] for e in (1, 2) for s in json.loads(
        (train / "rollouts" / f"epoch-{e:04d}.json").read_text())["samples"]}
    assert {s["seed"] for s in scores} == {evaluation_seed(0, p, 0) for p in range(3)}
    assert not training_seeds & {s["seed"] for s in scores}
    report = (run / "report" / "index.html").read_text()
    assert "rewards.png" in report and "health.png" in report and "judge (judge)" in report
    assert (run / "report" / "rollouts" / "epoch-0002.png").is_file()
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done earlier") == 2
    assert main([*args, "trainer.epochs=3"]) == 0  # longer: continues from epoch 2, not from 0
    out = " ".join(capsys.readouterr().out.split())
    assert "only `epochs` changed (2 → 3)" in out and "(epoch 2/3)" in out
    longer = run / f"train-{json.loads((run / 'stages.json').read_text())['train']['hash']}"
    assert [json.loads(line)["epoch"] for line in (longer / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main([*args, "trainer.algorithm=nft", "trainer.epochs=1"]) == 0  # a new train stage, then evaluation
    assert json.loads((run / "stages.json").read_text())["train"]["hash"] != state["train"]["hash"]
