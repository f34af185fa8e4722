"""The offline DPO recipe end to end on tiny models, and the preference-data formats it reads."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prefopt.cli import main
from prefopt.errors import PrefoptError
from prefopt.media import write_media
from prefopt.preferences import PreferenceDataConfig, read_rows, resolve_columns, to_examples

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _pick_a_pic(path: Path, labels=(1.0, 0.0, 0.5, 1.0)) -> Path:
    """A Pick-a-Pic v2-format parquet: caption, jpg_0, jpg_1 (JPEG bytes), label_0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"caption": [f"a photo of thing {i}" for i in range(len(labels))],
            "jpg_0": [_jpeg(2 * i) for i in range(len(labels))], "jpg_1": [_jpeg(2 * i + 1) for i in range(len(labels))],
            "label_0": list(labels), "label_1": [1 - x for x in labels]}
    pq.write_table(pa.table(rows), path)
    return path


def _overrides(tmp_path, kind: str, size: tuple[int, int, int]) -> list[str]:
    frames, height, width = size
    return [f"backbone.name={kind}", f"backbone.options.pretrained={tmp_path / 'models' / kind}",
            "backbone.options.dtype=float32", "backbone.options.device=cpu", "run.build_tiny_models=true",
            f"run.output_dir={tmp_path / 'runs'}", "trainer.max_steps=2", f"trainer.num_frames={frames}",
            f"trainer.height={height}", f"trainer.width={width}", "trainer.mixed_precision=no",
            "trainer.gradient_checkpointing=false", "trainer.gradient_accumulation_steps=1",
            "trainer.learning_rate=1e-3", "trainer.beta=100"]


def test_a_pick_a_pic_parquet_trains_a_tiny_sdxl_lora_with_a_named_reward(tmp_path):
    from prefopt.tiny_models import save_tiny_clip

    data = _pick_a_pic(tmp_path / "pairs.parquet")
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
    pairs = [json.loads(line) for line in next(run.glob("pairs-*/pairs.jsonl")).read_text().splitlines()]
    assert json.loads((train / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert [p["row"] for p in pairs] == [0, 1, 3]  # the tie (row 2) dropped
    assert Path(pairs[1]["winner"]).read_bytes() == _jpeg(3)  # label_0 = 0: jpg_1 wins
    first_train = next(run.glob("train-*"))
    _pick_a_pic(data, labels=(0.0, 0.0, 0.5, 1.0))  # the data edited in place: trains anew, keeps the old run
    assert main(["run", str(config), f"data.path={data}", *_overrides(tmp_path, "sdxl", (1, 32, 32))]) == 0
    assert first_train.is_dir() and len(list(run.glob("train-*"))) == 2
    lora = first_train / "lora" / "pytorch_lora_weights.safetensors"
    table = json.loads(next(run.glob("evaluation-*/table.json")).read_text())
    assert [r["model"] for r in table] == ["base", "trained"] and all(1 <= r["prompt_match"] <= 10 for r in table)
    report = (run / "report" / "index.html").read_text()
    assert "prompt_match" in report and "training.png" in report
    _assert_lora_changes_the_pipeline("sdxl", tmp_path / "models" / "sdxl", lora)


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


def test_an_unreadable_media_file_is_named_with_its_row(tmp_path):
    (tmp_path / "ok.png").write_bytes(_jpeg(0))  # a JPEG named .png still reads
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rows = [{"prompt": "p", "winner": "ok.png", "loser": "ok.png"}, {"prompt": "q", "winner": "ok.png", "loser": "bad.png"}]
    examples, sources = to_examples(PreferenceDataConfig(path="x"), rows, tmp_path, tmp_path / "media")
    from prefopt.preferences import check_media

    with pytest.raises(PrefoptError, match=r"row 1 \(loser\): media file `.*bad.png` could not be read"):
        check_media(examples, sources)


def test_ties_can_train_both_orders_and_labels_can_be_renamed(tmp_path):
    data = _pick_a_pic(tmp_path / "pairs.parquet", labels=(0.5, 1.0))
    config = PreferenceDataConfig(path=str(data), ties="both", tie_weight=0.25)
    rows, base = read_rows(config)
    examples, sources = to_examples(config, rows, base, tmp_path / "media")
    assert sources == [0, 0, 1] and [e.weight for e in examples] == [0.25, 0.25, 1.0]
    assert (examples[0].winner, examples[0].loser) == (examples[1].loser, examples[1].winner)
    renamed = PreferenceDataConfig(path=str(data), winner_column="jpg_1", loser_column="jpg_0", label_column="label_1")
    examples, _ = to_examples(renamed, rows, base, tmp_path / "media")
    assert Path(examples[0].winner).read_bytes() == _jpeg(2)  # row 1: label_1 = 0, so jpg_0 wins


def test_pair_folders_and_saved_datasets_are_read(tmp_path):
    import datasets

    for i in range(2):
        folder = tmp_path / "pairs" / f"{i:03d}"
        folder.mkdir(parents=True)
        (folder / "prompt.txt").write_text(f"prompt {i}\n")
        for role in ("winner", "loser"):
            (folder / f"{role}.jpg").write_bytes(_jpeg(i))
    rows, base = read_rows(PreferenceDataConfig(path=str(tmp_path / "pairs")))
    assert [r["prompt"] for r in rows] == ["prompt 0", "prompt 1"] and rows[0]["winner"].endswith("winner.jpg")
    saved = tmp_path / "saved"
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Image(),
                                  "rejected": datasets.Image()})
    images = [Image.open(io.BytesIO(_jpeg(i))) for i in range(2)]
    datasets.Dataset.from_dict({"prompt": ["a", "b"], "chosen": images, "rejected": images[::-1]},
                               features=features).save_to_disk(str(saved))
    config = PreferenceDataConfig(path=str(saved))
    rows, base = read_rows(config)
    examples, _ = to_examples(config, rows, base, tmp_path / "media")
    assert [e.prompt for e in examples] == ["a", "b"] and all(Path(e.winner).is_file() for e in examples)


def test_unknown_columns_name_the_known_layouts_and_the_options():
    with pytest.raises(PrefoptError, match=r"columns \(text, a, b\) match no known layout.*data\.prompt_column"):
        resolve_columns(PreferenceDataConfig(path="x"), ["text", "a", "b"])
    assert resolve_columns(PreferenceDataConfig(path="x", prompt_column="text", winner_column="a",
                                                loser_column="b"), ["text", "a", "b"]) == ("text", "a", "b", None)


def test_bad_cells_are_one_sentence_naming_the_row(tmp_path):
    (tmp_path / "a.png").write_bytes(_jpeg(0))
    config = PreferenceDataConfig(path="x", label_column="label")
    good = {"prompt": "p", "winner": "a.png", "loser": "a.png", "label": "1"}  # CSV cells are strings
    cases = [({"label": ""}, r"row 1: column `label` is empty"), ({"label": "yes"}, r"row 1: `yes` in column `label`"),
             ({"prompt": None}, r"row 1: column `prompt` is empty"), ({"weight": 0}, r"row 1: weight 0 must be positive"),
             ({"label": 2}, r"row 1: label `2` in column `label` must be 1, 0 or 0.5")]
    for change, message in cases:
        with pytest.raises(PrefoptError, match=message):
            to_examples(config, [good, {**good, **change}], tmp_path, tmp_path / "media")
    examples, _ = to_examples(config, [good, {**good, "weight": "2.5"}], tmp_path, tmp_path / "media")
    assert [e.weight for e in examples] == [1.0, 2.5]


def test_rows_are_read_only_until_max_pairs_pairs_are_made(tmp_path):
    (tmp_path / "a.png").write_bytes(_jpeg(0))
    read = []

    def rows():  # a streamed dataset: reading past what is needed would download it
        for i in range(1000):
            read.append(i)
            yield {"caption": "p", "jpg_0": "a.png", "jpg_1": "a.png", "label_0": 0.5 if i % 2 else 1}

    _, sources = to_examples(PreferenceDataConfig(path="x", max_pairs=3), rows(), tmp_path, tmp_path / "m")
    assert sources == [0, 2, 4] and len(read) <= 6


def test_media_from_bytes_get_absolute_paths_that_read_from_anywhere(tmp_path, monkeypatch):
    """A pairs file written from these examples must still find its media when read from another directory."""
    monkeypatch.chdir(tmp_path)
    rows = [{"caption": "p", "jpg_0": _jpeg(0), "jpg_1": _jpeg(1), "label_0": 1}]
    examples, _ = to_examples(PreferenceDataConfig(path="x"), rows, Path("."), Path("run") / "media")
    assert Path(examples[0].winner).is_absolute()
    monkeypatch.chdir(tmp_path.parent)
    assert Path(examples[0].winner).read_bytes() == _jpeg(0)


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


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
def test_every_bad_row_or_media_file_stops_the_run_before_a_model_loads(tmp_path, capsys, row, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(_png(0))
    corrupt = bytearray(_png(1))
    corrupt[corrupt.index(b"IHDR") + 12] = 7  # an impossible colour type: PIL raises SyntaxError, not OSError
    (data / "broken.png").write_bytes(bytes(corrupt))
    (tmp_path / "outside.png").write_bytes(_png(2))
    (data / "pairs.jsonl").write_text('{"prompt": "p", "winner": "a.png", "loser": "a.png"}\n' + row + "\n")
    assert _run_dpo(tmp_path, str(data / "pairs.jsonl")) == 2
    error = capsys.readouterr().err
    assert _one_sentence(error)
    import re

    assert re.search(message, error), error
    assert not list((tmp_path / "runs").glob("dpo/train-*"))  # no training began


def test_paths_outside_the_data_folder_are_read_when_the_user_allows_them(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "outside.png").write_bytes(_png(2))
    rows = [{"prompt": "p", "winner": "../outside.png", "loser": str(tmp_path / "outside.png")}]
    with pytest.raises(PrefoptError, match="leads outside the data folder"):
        to_examples(PreferenceDataConfig(path="x"), rows, data, tmp_path / "media")
    examples, _ = to_examples(PreferenceDataConfig(path="x", allow_outside_paths=True), rows, data, tmp_path / "m")
    assert examples[0].winner == examples[0].loser == str((tmp_path / "outside.png").resolve())
