"""The media repository: crash-safe appends, datasets-loadable parquet, score bookkeeping, static videos."""

from pathlib import Path

import numpy as np
import pytest

from prefopt.errors import PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.media import read_media, write_media
from prefopt.repository import MediaRecord, MediaRepository, add_static_videos, reward_key


def _record(i, source="base"):
    return MediaRecord(id=f"v{i}", source=source, prompt=f"prompt {i}", media_path=f"media/v{i}.mp4", seed=i)


def test_append_reload_and_load_with_datasets(tmp_path):
    repo = MediaRepository(tmp_path / "repo")
    repo.add([_record(0), _record(1, "lora")])
    repo.add([_record(2, "static")])
    again = MediaRepository(tmp_path / "repo")  # a new process sees everything
    assert [r.id for r in sorted(again.items(), key=lambda r: r.id)] == ["v0", "v1", "v2"]
    assert [r.id for r in again.items(["lora"])] == ["v1"]
    with pytest.raises(PrefoptError, match="already has item `v1`"):
        again.add([_record(1)])
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=str(tmp_path / "repo" / "items" / "*.parquet"), split="train")
    assert sorted(dataset["id"]) == ["v0", "v1", "v2"] and "source" in dataset.column_names


def test_a_torn_write_leaves_no_visible_part(tmp_path):
    repo = MediaRepository(tmp_path / "repo")
    repo.add([_record(0)])
    # A crash between write and rename leaves only a hidden temporary file, which readers ignore.
    (tmp_path / "repo" / "items" / ".part-dead.parquet.tmp").write_bytes(b"half a parquet file")
    assert [r.id for r in MediaRepository(tmp_path / "repo").items()] == ["v0"]


def test_a_corrupt_part_is_named(tmp_path):
    repo = MediaRepository(tmp_path / "repo")
    repo.add([MediaRecord(id="v0", source="lora", prompt="p", media_path="media/v0.mp4")])
    part = next((tmp_path / "repo" / "items").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:40])
    with pytest.raises(PrefoptError, match=rf"repository part `{part}` cannot be read .* it is corrupt"):
        MediaRepository(tmp_path / "repo").items()


def test_scores_are_kept_per_reward_configuration(tmp_path):
    repo = MediaRepository(tmp_path / "repo")
    repo.add([_record(i, "base" if i % 2 else "static") for i in range(4)])
    key = reward_key("identity", {"floor": 1.0}, {"model": "dlib"})
    assert key != reward_key("identity", {"floor": 2.0}, {"model": "dlib"})
    repo.add_scores(key, "identity", {"v0": RewardScore(9.0, 0.9, {"faces": 3}), "v1": RewardScore(2.0, 0.2)},
                    {"model": "dlib"})
    assert repo.scored_ids(key) == {"v0", "v1"}
    dyn = reward_key("dynamic", {}, {})
    repo.add_scores(dyn, "dynamic", {f"v{i}": RewardScore(float(i + 1), 0.0) for i in range(4)}, {})
    table = repo.score_table({"identity": key, "dynamic": dyn})
    assert list(table.ids) == ["v0", "v1"]  # only items scored by every reward
    np.testing.assert_allclose(table.scores["identity"], [9.0, 2.0])
    np.testing.assert_allclose(table.scores["dynamic"], [1.0, 2.0])
    assert repo.score_metadata(key)["v0"] == {"faces": 3}


def test_static_videos_inflate_each_photo_once(tmp_path):
    photo = write_media(tmp_path / "me.png", np.random.default_rng(0).integers(0, 255, (1, 60, 40, 3), dtype=np.uint8))
    repo = MediaRepository(tmp_path / "repo")
    records = add_static_videos(repo, [str(photo)], num_frames=5, height=32, width=48, prompt="a photo of sks")
    assert len(records) == 1 and records[0].source == "static"
    frames = read_media(repo.path(records[0].media_path))
    assert frames.shape == (5, 32, 48, 3)
    assert np.abs(frames.astype(int) - frames[0].astype(int)).max() <= 3  # static (up to codec noise)
    assert add_static_videos(repo, [str(photo)], num_frames=5, height=32, width=48, prompt="x") == records
    assert len(repo.items()) == 1
    assert Path(repo.path(records[0].media_path)).is_file()
