"""Evaluation metrics on real faces (dlib) and tiny CLIP, each checked against a hand-made expectation."""

import numpy as np
import pytest
import skimage.data

from prefopt.config import parse
from prefopt.registry import get_registry
from prefopt_plugins.evaluation import UNAVAILABLE, evaluate_videos, face_similarity, temporal_consistency
from prefopt_plugins.rewards.common import ReferencePhoto
from prefopt_plugins.tiny import save_tiny_clip


def _reward(name, **options):
    entry = get_registry().get("rewards", name)
    return entry.cls(parse(entry.config_class, options))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _reward("clip-semantic", model=str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "c")), device="cpu")


def test_face_similarity_is_one_for_the_reference_itself_and_zero_without_faces():
    face = skimage.data.astronaut()[20:260, 110:330]
    identity = _reward("dlib-id")
    references = [ReferencePhoto(face, "astronaut.png")]
    video = np.repeat(np.ascontiguousarray(face)[None], 3, axis=0)
    assert face_similarity(identity, [video], references) == pytest.approx(1.0, abs=1e-6)
    assert face_similarity(identity, [np.zeros((3, 64, 64, 3), np.uint8)], references) == 0.0


def test_temporal_consistency_is_one_for_a_static_video_and_lower_for_noise(clip):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    static = np.repeat(frame[None], 4, axis=0)
    noisy = rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    assert temporal_consistency(clip, [static]) == pytest.approx(1.0, abs=1e-5)
    assert temporal_consistency(clip, [noisy]) < 1.0 - 1e-4


def test_evaluate_videos_reports_every_metric_and_fvd_as_unavailable(clip):
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)]
    reference = ReferencePhoto(videos[0][0], "frame.png")
    dynamics = _reward("opencv-dynamic", video_fps=8.0)
    table = evaluate_videos(videos, ["a person"], [reference], dynamics=dynamics, clip=clip)
    assert table["fvd"] == UNAVAILABLE and table["face_sim"] == UNAVAILABLE
    assert 0.0 <= table["dynamic_degree"] <= 1.0 and table["temporal_consistency"] <= 1.0
    assert isinstance(table["clip_t"], float) and isinstance(table["clip_i"], float)
