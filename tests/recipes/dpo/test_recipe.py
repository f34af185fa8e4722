"""The offline DPO recipe end to end on tiny models, and the preference-data formats it reads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prefopt.cli import main
from prefopt.media import write_media
from prefopt.preferences import PreferenceDataConfig, read_rows
from tests import ROOT

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)


def _overrides(tmp_path, kind: str, size: tuple[int, int, int]) -> list[str]:
    frames, height, width = size
    return [f"backbone.name={kind}", f"backbone.options.pretrained={tmp_path / 'models' / kind}",
            "backbone.options.dtype=float32", "backbone.options.device=cpu", "run.build_tiny_models=true",
            f"run.output_dir={tmp_path / 'runs'}", "trainer.max_steps=2", f"trainer.num_frames={frames}",
            f"trainer.height={height}", f"trainer.width={width}", "trainer.mixed_precision=no",
            "trainer.gradient_checkpointing=false", "trainer.gradient_accumulation_steps=1",
            "trainer.learning_rate=1e-3", "trainer.beta=100"]


def test_a_pick_a_pic_parquet_trains_a_tiny_sdxl_lora_with_a_named_reward(image_bytes, pick_a_pic, tmp_path):
    from prefopt.tiny_models import save_tiny_clip

    data = pick_a_pic(tmp_path / "pairs.parquet")
    clip = save_tiny_clip(tmp_path / "clip")
    config = tmp_path / "eval.yaml"
    config.write_text((ROOT / "recipes" / "dpo.yaml").read_text().replace(
        "rewards: {}", f"rewards: {{prompt_match: {{name: clip-semantic, options: {{model: {clip}, device: cpu}}}}}}"))
    code = main(["run", str(config), f"data.path={data}", *_overrides(tmp_path, "sdxl", (1, 32, 32)),
                 "evaluation.prompts=[a red fox]", "evaluation.seeds_per_prompt=1",
                 "evaluation.num_inference_steps=2"])
    assert code == 0
    run = tmp_path / "runs" / "dpo"
    train = next(run.glob("train-*"))  # the config it was trained with is kept with it, the pairs in their stage
    pairs_file = next(run.glob("pairs-*/pairs.jsonl"))
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert json.loads((train / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert [p["row"] for p in pairs] == [0, 1, 3]  # the tie (row 2) dropped
    # media paths relative to the pairs file (the parquet's images live in the run's media/ folder): the run moves
    assert not Path(pairs[1]["winner"]).is_absolute()
    assert (pairs_file.parent / pairs[1]["winner"]).read_bytes() == image_bytes(3)  # label_0 = 0: jpg_1 wins
    first_train = next(run.glob("train-*"))
    pick_a_pic(data, labels=(0.0, 0.0, 0.5, 1.0))  # the data edited in place: trains anew, keeps the old run
    assert main(["run", str(config), f"data.path={data}", *_overrides(tmp_path, "sdxl", (1, 32, 32))]) == 0
    assert first_train.is_dir() and len(list(run.glob("train-*"))) == 2
    lora = first_train / "lora" / "pytorch_lora_weights.safetensors"
    table = json.loads(next(run.glob("evaluation-*/table.json")).read_text())
    assert [r["model"] for r in table] == ["base", "trained"] and all(1 <= r["prompt_match"] <= 10 for r in table)
    report = (run / "report" / "index.html").read_text()
    assert "prompt_match" in report and "training.png" in report
    _assert_lora_changes_the_pipeline("sdxl", tmp_path / "models" / "sdxl", lora)
    # `prefopt sample` on the run: its current training's LoRA, the run's backbone and its evaluation settings
    assert main(["sample", str(run), "--prompt", "a red fox", "--out", str(tmp_path / "samples")]) == 0
    record = json.loads((tmp_path / "samples" / "sample.json").read_text())
    current = json.loads((run / "stages.json").read_text())["train"]["hash"]
    assert [entry["path"] for entry in record["loras"]] == [str(run / f"train-{current}" / "lora" /
                                                             "pytorch_lora_weights.safetensors")]
    assert record["sampling"]["num_inference_steps"] == 30 and record["sampling"]["height"] == 32
    # the run folder moved whole: its pairs still name their media (#24 item 8)
    from prefopt.layout import RunLayout
    from prefopt_recipes.dpo.recipe import read_trained_pairs

    run.rename(tmp_path / "moved")
    moved = read_trained_pairs(RunLayout(tmp_path / "moved").current("pairs"))
    assert Path(moved[1].winner).read_bytes() == image_bytes(3) and str(tmp_path / "moved") in moved[1].winner


def _assert_lora_changes_the_pipeline(kind, pretrained, lora):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(pretrained))
    denoiser = getattr(pipe, "unet" if kind == "sdxl" else "transformer")
    before = [p.detach().clone() for p in denoiser.parameters()]
    pipe.load_lora_weights(str(lora.parent))
    pipe.fuse_lora()
    assert any(not torch.equal(a, b) for a, b in zip(before, denoiser.parameters()))


def test_trl_columns_with_video_pairs_train_a_tiny_ltx_video_lora(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        chosen, rejected = (write_media(tmp_path / f"v{i}{tag}.mp4", rng.integers(0, 255, (9, 32, 32, 3), np.uint8))
                            for tag in "ab")
        rows.append({"prompt": f"a clip {i}", "chosen": chosen.name, "rejected": rejected.name})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["run", str(ROOT / "recipes" / "dpo.yaml"), f"data.path={tmp_path / 'pairs.jsonl'}",
                 *_overrides(tmp_path, "ltx-video", (9, 32, 32)), "backbone.options.max_sequence_length=16"])
    assert code == 0
    (lora,) = (tmp_path / "runs" / "dpo").glob("train-*/lora/pytorch_lora_weights.safetensors")
    _assert_lora_changes_the_pipeline("ltx-video", tmp_path / "models" / "ltx-video", lora)


def test_a_missing_media_file_stops_before_any_model_loads(tmp_path, capsys):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "winner": "gone.png", "loser": "gone2.png"}) + "\n")
    code = main(["run", str(ROOT / "recipes" / "dpo.yaml"), f"data.path={tmp_path / 'pairs.jsonl'}",
                 *_overrides(tmp_path, "sdxl", (1, 32, 32))])
    assert code == 2
    error = capsys.readouterr().err
    assert "row 0 (winner): media file" in error and "gone.png` does not exist" in error
    assert not list((tmp_path / "runs" / "dpo").glob("train-*"))
















def _one_sentence(stderr: str) -> bool:
    """prefopt said one line, an error, and no traceback (other libraries' import notices aside)."""
    ours = [line for line in stderr.splitlines() if line.startswith("prefopt")]
    return len(ours) == 1 and ours[0].startswith("prefopt: error: ") and "Traceback" not in stderr


def _run_dpo(tmp_path, data_path: str, *extra: str) -> int:
    return main(["run", str(ROOT / "recipes" / "dpo.yaml"), f"data.path={data_path}",
                 *_overrides(tmp_path, "sdxl", (1, 32, 32)), *extra])


def test_a_missing_path_that_looks_like_a_hub_id_never_reaches_the_hub(tmp_path, monkeypatch, capsys):
    """`data/pairs` mistyped (it does not exist here) is a missing local path, not a hub dataset: nothing connects
    unless `run.allow_downloads` is set."""
    import socket

    import datasets

    attempts = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: attempts.append(("load_dataset", a)) or [])
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(("connect", address)))
    monkeypatch.chdir(tmp_path)
    assert _run_dpo(tmp_path, "data/pairs") == 2
    error = capsys.readouterr().err
    assert "preference data `data/pairs` is not a file or folder here" in error and "run.allow_downloads" in error
    assert attempts == [] and _one_sentence(error)

    from prefopt.hub import downloads

    with downloads(True):  # allowed, the same id is read as a hub dataset (here the spy, not the network)
        read_rows(PreferenceDataConfig(path="data/pairs"))
    assert attempts and attempts[0][0] == "load_dataset" and attempts[0][1] == ("data/pairs",)


@pytest.mark.parametrize(("row", "message"), [
    ('{"prompt": "p", "winner": "a.png", "loser": "broken.png"}',
     r"row 1 \(loser\): media file `.*broken.png` could not be read \(SyntaxError: broken PNG file"),
    ('["p", "a.png", "a.png"]', r"row 1: expected named columns \(an object or a table row\), got list"),
    ('{"prompt": {"text": "p"}, "winner": "a.png", "loser": "a.png"}', r"row 1: the prompt in column `prompt` is dict"),
    ('{"prompt": "p", "winner": "a.png", "loser": "a.png", "weight": NaN}',
     r"row 1: `nan` in column `weight` must be a finite number"),
    ('{"prompt": "p", "winner": "../outside.png", "loser": "a.png"}',
     r"row 1, column `winner`: media path `../outside.png` leads outside the data folder"),
    ('{"prompt": "p", "winner": "a.png", "loser": "a.png"', r"line 2, is not valid JSON"),
])
def test_every_bad_row_or_media_file_stops_the_run_before_a_model_loads(image_bytes, tmp_path, capsys, row, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(image_bytes(0, "PNG", 32))
    corrupt = bytearray(image_bytes(1, "PNG", 32))
    corrupt[corrupt.index(b"IHDR") + 12] = 7  # an impossible colour type: PIL raises SyntaxError, not OSError
    (data / "broken.png").write_bytes(bytes(corrupt))
    (tmp_path / "outside.png").write_bytes(image_bytes(2, "PNG", 32))
    (data / "pairs.jsonl").write_text('{"prompt": "p", "winner": "a.png", "loser": "a.png"}\n' + row + "\n")
    assert _run_dpo(tmp_path, str(data / "pairs.jsonl")) == 2
    error = capsys.readouterr().err
    assert _one_sentence(error)
    import re

    assert re.search(message, error), error
    assert not list((tmp_path / "runs").glob("dpo/train-*"))  # no training began




def test_raising_only_max_steps_continues_the_finished_training_to_the_same_lora_as_a_longer_run(
        pick_a_pic, tmp_path, capsys):
    """Extending a run (#24 item 3): 2 steps, then `trainer.max_steps=4`, equals 4 steps from scratch (constant
    learning rate: the schedule is the only thing the length changes)."""
    from safetensors.torch import load_file

    data = pick_a_pic(tmp_path / "pairs.parquet")
    common = [str(ROOT / "recipes" / "dpo.yaml"), f"data.path={data}", *_overrides(tmp_path, "sdxl", (1, 32, 32)),
              "trainer.lr_scheduler=constant"]
    assert main(["run", *common, "run.name=extended"]) == 0
    shorter = next((tmp_path / "runs" / "extended").glob("train-*"))
    capsys.readouterr()
    # a tracker run renamed on the way (names are outside the hashes) does not stop the continuation
    assert main(["run", *common, "run.name=extended", "trainer.max_steps=4", "trainer.tracker_run_name=longer"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"only `max_steps` changed (2 → 4): continuing from {shorter.name}/checkpoints/step-000002" in out, out
    assert "resuming training from" in out and "(step 2/4)" in out and shorter.is_dir()  # the shorter one is kept
    assert main(["run", *common, "run.name=fresh", "trainer.max_steps=4"]) == 0

    def final(name):
        run = tmp_path / "runs" / name
        digest = json.loads((run / "stages.json").read_text())["train"]["hash"]
        return load_file(run / f"train-{digest}" / "lora" / "pytorch_lora_weights.safetensors")

    extended, fresh = final("extended"), final("fresh")
    assert extended.keys() == fresh.keys()
    for key in fresh:
        torch.testing.assert_close(extended[key], fresh[key], rtol=0, atol=0)
    metrics = [json.loads(line)["step"] for line in next((tmp_path / "runs" / "extended").glob(
        f"train-{json.loads((tmp_path / 'runs' / 'extended' / 'stages.json').read_text())['train']['hash']}"
        "/metrics.jsonl")).read_text().splitlines()]
    assert metrics == [1, 2, 3, 4]
    cosine = [*common, "run.name=cosine", "trainer.lr_scheduler=cosine"]  # the schedule depends on the length
    assert main(["run", *cosine]) == 0 and main(["run", *cosine, "trainer.max_steps=4"]) == 0
    assert "continuing from" not in " ".join(capsys.readouterr().out.split())  # so a longer run starts over


def test_a_size_the_model_cannot_take_stops_the_run_with_one_sentence(pick_a_pic, tmp_path, capsys):
    """#24 item 2: the spatial multiple needs the loaded model (its VAE and patch size), so it is checked when the
    model loads, before any training: one sentence, exit 2."""
    data = pick_a_pic(tmp_path / "pairs.parquet")
    assert _run_dpo(tmp_path, str(data), "trainer.height=34") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prefopt: error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert "takes heights and widths that are multiples of 4" in errors[0] and errors[0].endswith("got 34×32.")
    assert not list((tmp_path / "runs" / "dpo").glob("train-*/checkpoints/*"))  # nothing trained
