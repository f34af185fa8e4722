"""The generic reward-DPO loop on tiny models: named rewards, per-prompt selection, two rounds, resume."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prefopt.cli import main
from prefopt.tiny_models import save_tiny_clip
from prefopt_plugins.rewards.preference import aesthetic_head
from tests import ROOT

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)


def _config(tmp_path: Path) -> Path:
    clip = save_tiny_clip(tmp_path / "clip")
    torch.manual_seed(0)
    torch.save({f"layers.{k}": v for k, v in aesthetic_head(16).state_dict().items()}, tmp_path / "head.pth")
    config = tmp_path / "loop.yaml"
    config.write_text(f"""
recipe: reward-dpo
run: {{name: loop, output_dir: {tmp_path / 'runs'}, build_tiny_models: true}}
backbone: {{name: stable-diffusion, options: {{pretrained: {tmp_path / 'sd'}, dtype: float32, device: cpu}}}}
prompts: [a red cube, a blue ball]
heldout_prompts: [a green tree]
rounds: 2
rewards:
  prompt_match: {{name: clip-semantic, options: {{model: {clip}, device: cpu, raw_min: -60, raw_max: 60}}}}
  beauty: {{name: laion-aesthetic, options: {{model: {clip}, head: {tmp_path / 'head.pth'}, device: cpu,
                                            raw_min: -2, raw_max: 2}}}}
selection:
  selectors:
    - {{name: pareto, options: {{rewards: [prompt_match, beauty], depth: 1}}}}
    - {{name: topk, options: {{k: 3, reward: beauty}}}}
sampling: {{samples_per_prompt: 4, height: 32, width: 32, num_inference_steps: 2, guidance_scale: 1.0, batch_size: 4}}
trainer: {{max_steps: 2, learning_rate: 1.0e-2, lora_rank: 4, lora_alpha: 4, beta: 100.0, checkpoint_every: 10}}
""")
    return config


def test_two_rounds_with_named_rewards_sample_select_per_prompt_train_and_report(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["run", str(config)]) == 0
    run = tmp_path / "runs" / "loop"
    state = json.loads((run / "stages.json").read_text())
    assert list(state) == ["round0", "round1", "final"] and all(s["status"] == "done" for s in state.values())
    rows = json.loads((run / "rewards.json").read_text())
    assert [r["stage"] for r in rows] == ["round0", "round1", "final", "heldout-base", "heldout-final"]
    assert [r["samples"] for r in rows] == [8, 8, 8, 4, 4]  # 2 prompts × 4 samples; 1 held-out prompt × 4
    assert all(set(r) == {"stage", "samples", "prompt_match", "beauty"} for r in rows)
    import pyarrow.parquet as pq

    pairs = pq.read_table(run / f"round0-{state['round0']['hash']}" / "pairs.parquet").to_pylist()
    items = {r["id"]: r["prompt"] for part in (run / "repository" / "items").glob("*.parquet")
             for r in pq.read_table(part).to_pylist()}
    assert 0 < len(pairs) <= 3  # topk (k = 3) keeps the best pairs of the whole round
    assert all(items[p["winner_id"]] == items[p["loser_id"]] == p["prompt"] for p in pairs)  # made per prompt
    assert {"delta_prompt_match", "delta_beauty"} <= set(pairs[0])
    first, second = (load_file(run / f"round{r}-{state[f'round{r}']['hash']}" / "lora" /
                               "pytorch_lora_weights.safetensors") for r in (0, 1))
    assert any(not torch.equal(first[k], second[k]) for k in first)  # round 1 trained on from round 0's LoRA
    report = (run / "report" / "index.html").read_text()
    assert "<th>beauty</th>" in report and "round1_pairs.png" in report
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 3
    assert main(["run", str(config), "rounds=1"]) == 0  # one round fewer: round 0 is reused, the final reruns
    assert "round0: done earlier" in capsys.readouterr().out
    now = json.loads((run / "stages.json").read_text())
    assert list(now) == ["round0", "final"] and now["round0"]["hash"] == state["round0"]["hash"]
    old = run / f"round1-{state['round1']['hash']}"
    assert old.is_dir()  # a run never deletes another configuration's finished stages
    assert main(["clean", str(config), "rounds=1"]) == 0
    assert not old.is_dir() and not (run / f"final-{state['final']['hash']}").is_dir()
    assert (run / f"round0-{state['round0']['hash']}").is_dir() and (run / f"final-{now['final']['hash']}").is_dir()


def test_a_selector_naming_a_source_is_refused_in_the_loop(tmp_path, capsys):
    config = _config(tmp_path)
    code = main(["validate", str(config), "selection.selectors.1.options.reward=beuty"])
    assert code == 2 and "names `beuty`, which is not one of prompt_match, beauty" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("prompts_file={tmp}/binary.txt", "prompts file `{tmp}/binary.txt` is not UTF-8 text"),
    ("prompts_file={tmp}", "prompts file `{tmp}` is a folder, not a file"),
    ("prompts_file={tmp}/gone.txt", "prompts file `{tmp}/gone.txt` does not exist"),
    ("references=[{tmp}/ref.png]", "media file `{tmp}/ref.png` could not be read"),
    ("heldout_prompts=[a person flies]", "reward `action`: prompt `a person flies` names no action"),
    ("rewards.action.options.weights={tmp}/none", "the miniature action model `{tmp}/none.safetensors` is missing"),
])
def test_bad_inputs_stop_the_loop_before_any_sampling(tmp_path, capsys, override, message):
    """Found in the first seconds, in one sentence, not after a round of sampling and training."""
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00 not text")
    (tmp_path / "ref.png").write_bytes(b"not an image")
    code = main(["run", str(ROOT / "recipes" / "miniature-reward-dpo.yaml"), f"run.output_dir={tmp_path / 'runs'}",
                 override.format(tmp=tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert next(line for line in err.splitlines() if line.startswith("prefopt")).startswith("prefopt: error: ")
    assert not list((tmp_path / "runs").glob("*/round0-*"))
