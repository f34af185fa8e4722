"""Preference data as people have it: layouts, sources, ties, bad rows and media, paths, offline by default."""

import io
from pathlib import Path

import pytest
from PIL import Image

from prefopt.errors import PrefoptError
from prefopt.preferences import PreferenceDataConfig, read_rows, resolve_columns, to_examples


def test_an_unreadable_media_file_is_named_with_its_row(image_bytes, tmp_path):
    (tmp_path / "ok.png").write_bytes(image_bytes(0))  # a JPEG named .png still reads
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rows = [{"prompt": "p", "winner": "ok.png", "loser": "ok.png"}, {"prompt": "q", "winner": "ok.png", "loser": "bad.png"}]
    examples, sources = to_examples(PreferenceDataConfig(path="x"), rows, tmp_path, tmp_path / "media")
    from prefopt.preferences import check_media

    with pytest.raises(PrefoptError, match=r"row 1 \(loser\): media file `.*bad.png` could not be read"):
        check_media(examples, sources)


def test_ties_can_train_both_orders_and_labels_can_be_renamed(image_bytes, pick_a_pic, tmp_path):
    data = pick_a_pic(tmp_path / "pairs.parquet", labels=(0.5, 1.0))
    config = PreferenceDataConfig(path=str(data), ties="both", tie_weight=0.25)
    rows, base = read_rows(config)
    examples, sources = to_examples(config, rows, base, tmp_path / "media")
    assert sources == [0, 0, 1] and [e.weight for e in examples] == [0.25, 0.25, 1.0]
    assert (examples[0].winner, examples[0].loser) == (examples[1].loser, examples[1].winner)
    renamed = PreferenceDataConfig(path=str(data), winner_column="jpg_1", loser_column="jpg_0", label_column="label_1")
    examples, _ = to_examples(renamed, rows, base, tmp_path / "media")
    assert Path(examples[0].winner).read_bytes() == image_bytes(2)  # row 1: label_1 = 0, so jpg_0 wins


def test_pair_folders_and_saved_datasets_are_read(image_bytes, tmp_path):
    import datasets

    for i in range(2):
        folder = tmp_path / "pairs" / f"{i:03d}"
        folder.mkdir(parents=True)
        (folder / "prompt.txt").write_text(f"prompt {i}\n")
        for role in ("winner", "loser"):
            (folder / f"{role}.jpg").write_bytes(image_bytes(i))
    rows, base = read_rows(PreferenceDataConfig(path=str(tmp_path / "pairs")))
    assert [r["prompt"] for r in rows] == ["prompt 0", "prompt 1"] and rows[0]["winner"].endswith("winner.jpg")
    saved = tmp_path / "saved"
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Image(),
                                  "rejected": datasets.Image()})
    images = [Image.open(io.BytesIO(image_bytes(i))) for i in range(2)]
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


def test_bad_cells_are_one_sentence_naming_the_row(image_bytes, tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(0))
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


def test_rows_are_read_only_until_max_pairs_pairs_are_made(image_bytes, tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(0))
    read = []

    def rows():  # a streamed dataset: reading past what is needed would download it
        for i in range(1000):
            read.append(i)
            yield {"caption": "p", "jpg_0": "a.png", "jpg_1": "a.png", "label_0": 0.5 if i % 2 else 1}

    _, sources = to_examples(PreferenceDataConfig(path="x", max_pairs=3), rows(), tmp_path, tmp_path / "m")
    assert sources == [0, 2, 4] and len(read) <= 6


def test_media_from_bytes_get_absolute_paths_that_read_from_anywhere(image_bytes, tmp_path, monkeypatch):
    """A pairs file written from these examples must still find its media when read from another directory."""
    monkeypatch.chdir(tmp_path)
    rows = [{"caption": "p", "jpg_0": image_bytes(0), "jpg_1": image_bytes(1), "label_0": 1}]
    examples, _ = to_examples(PreferenceDataConfig(path="x"), rows, Path("."), Path("run") / "media")
    assert Path(examples[0].winner).is_absolute()
    monkeypatch.chdir(tmp_path.parent)
    assert Path(examples[0].winner).read_bytes() == image_bytes(0)


def test_paths_outside_the_data_folder_are_read_when_the_user_allows_them(image_bytes, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "outside.png").write_bytes(image_bytes(2, "PNG", 32))
    rows = [{"prompt": "p", "winner": "../outside.png", "loser": str(tmp_path / "outside.png")}]
    with pytest.raises(PrefoptError, match="leads outside the data folder"):
        to_examples(PreferenceDataConfig(path="x"), rows, data, tmp_path / "media")
    examples, _ = to_examples(PreferenceDataConfig(path="x", allow_outside_paths=True), rows, data, tmp_path / "m")
    assert examples[0].winner == examples[0].loser == str((tmp_path / "outside.png").resolve())
