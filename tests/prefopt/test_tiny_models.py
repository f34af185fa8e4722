"""Tiny random models: each backbone family builds its own, saved whole and loaded through the real code."""

import pytest

from prefopt.errors import PrefoptError
from prefopt.tiny_models import save_tiny_pipeline, tiny_backbones


def test_every_first_party_backbone_family_has_a_tiny_pipeline():
    assert set(tiny_backbones()) == {"hunyuan-video", "wan", "ltx-video", "cogvideox", "stable-diffusion", "sdxl",
                                     "sd3", "flux"}


def test_a_tiny_pipeline_is_saved_once_and_never_over_a_folder_of_the_users(tmp_path):
    folder = save_tiny_pipeline("stable-diffusion", tmp_path / "sd")
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert save_tiny_pipeline("stable-diffusion", folder) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp  # there already: not built again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(PrefoptError, match="is not a folder prefopt wrote"):
        save_tiny_pipeline("stable-diffusion", mine)


def test_a_family_without_a_tiny_version_says_so(make_backbone_class):
    with pytest.raises(PrefoptError, match="backbone `none` has no tiny random version"):
        make_backbone_class("none").tiny_pipeline()
