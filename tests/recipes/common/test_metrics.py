"""Evaluation metrics on real faces (dlib) and tiny CLIP, each checked against a hand-made expectation."""

from typing import ClassVar

import numpy as np
import pytest
import skimage.data

from prefopt.media import ReferencePhoto
from prefopt.tiny_models import save_tiny_clip
from prefopt_recipes.common.metrics import (
    UNAVAILABLE,
    evaluate_videos,
    face_similarity_all_frames,
    face_similarity_consisid,
    temporal_consistency,
)


@pytest.fixture(scope="module")
def clip(make_reward, tmp_path_factory):
    return make_reward("clip-semantic", model=str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "c")), device="cpu")


@pytest.mark.slow
def test_face_similarity_is_one_for_the_reference_itself_and_zero_without_faces(make_reward):
    face = skimage.data.astronaut()[20:260, 110:330]
    identity = make_reward("dlib-id")
    references = [ReferencePhoto(face, "astronaut.png")]
    video = np.repeat(np.ascontiguousarray(face)[None], 3, axis=0)
    assert face_similarity_all_frames(identity, [video], references) == pytest.approx(1.0, abs=1e-6)
    assert face_similarity_all_frames(identity, [np.zeros((3, 64, 64, 3), np.uint8)], references) == 0.0
    assert face_similarity_consisid(identity, [video], references) == (pytest.approx(1.0, abs=1e-6), 0, 16)


class _CodedFaces:
    """A stand-in detector + embedder: a 32×32 frame's centre pixel says what it holds. 1 and 2: faces seen at
    once; 3: a face found only in the grey-padded frame (ConsisID's retry); 0: no face, padded or not."""

    EMBEDDINGS: ClassVar[dict] = {1: np.array([1.0, 0.0]), 2: np.array([0.6, 0.8]), 3: np.array([-1.0, 0.0])}

    def embed_largest_face(self, image):
        code = int(image[image.shape[0] // 2, image.shape[1] // 2, 0])
        padded = image.shape[:2] != (32, 32)
        if code == 3 and not padded:
            return None
        return self.EMBEDDINGS.get(code)

    def similarity(self, embeddings, reference):
        return embeddings @ reference


def _coded_video(codes):
    return np.stack([np.full((32, 32, 3), c, np.uint8) for c in codes])


def test_face_sim_follows_consisids_protocol_on_hand_computed_frames():
    references = [ReferencePhoto(_coded_video([1])[0], "me.png"), ReferencePhoto(_coded_video([2])[0], "other.png")]
    # 16 frames: sampled one by one. 8 × face 1 (cos 1), 4 × face 2 (cos 0.6), 2 × face 3, found only when padded
    # (cos −1, floored at 0), 2 × no face (skipped): (8·1 + 4·0.6 + 2·0) / 14 = 10.4 / 14.
    mixed = _coded_video([1] * 8 + [2] * 4 + [3] * 2 + [0] * 2)
    empty = _coded_video([0] * 16)  # no face at all: the video scores 0
    # 20 frames: ConsisID truncates linspace(0, 19, 16) = 0, 1.27, 2.53, … to frames 0, 1, 2, 3, 5, …, so the
    # face-less frame 2 is sampled (rounding would take frame 3 instead): one face-less frame, the rest cos 1.
    truncated = _coded_video([1, 1, 0] + [1] * 17)
    score, faceless, sampled = face_similarity_consisid(_CodedFaces(), [mixed, empty, truncated], references)
    assert score == pytest.approx((10.4 / 14 + 0.0 + 1.0) / 3, abs=1e-12)  # only the first reference counts
    assert (faceless, sampled) == (2 + 16 + 1, 48)


def test_temporal_consistency_is_one_for_a_static_video_and_lower_for_noise(clip):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    static = np.repeat(frame[None], 4, axis=0)
    noisy = rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    assert temporal_consistency(clip, [static]) == pytest.approx(1.0, abs=1e-5)
    assert temporal_consistency(clip, [noisy]) < 1.0 - 1e-4


def test_evaluate_videos_reports_every_metric_and_fvd_as_unavailable(make_reward, clip):
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)]
    reference = ReferencePhoto(videos[0][0], "frame.png")
    dynamics = make_reward("opencv-dynamic", video_fps=8.0)
    table = evaluate_videos(videos, ["a person"], [reference], dynamics=dynamics, clip=clip)
    assert table["fvd"] == UNAVAILABLE and table["face_sim"] == UNAVAILABLE
    assert 0.0 <= table["dynamic_degree"] <= 1.0 and table["temporal_consistency"] <= 1.0
    assert isinstance(table["clip_t"], float) and isinstance(table["clip_i"], float)




def test_a_third_party_reward_that_declares_face_embeddings_gets_face_sim():
    """Evaluation asks rewards what they measure instead of checking for first-party classes."""
    from prefopt.interfaces import FACE_EMBEDDING
    from prefopt_recipes.magicid.evaluation import _score

    class ThirdPartyFaces(_CodedFaces):
        measures = frozenset({FACE_EMBEDDING})

        def score(self, videos, prompts, references):
            from prefopt.interfaces import RewardScore

            return [RewardScore(value=5.0, raw=0.5) for _ in videos]

    class Undeclared(ThirdPartyFaces):
        measures = frozenset()

    videos = [("a person", _coded_video([1] * 16))]
    references = [ReferencePhoto(_coded_video([1])[0], "me.png")]
    for reward, expected in ((ThirdPartyFaces(), 1.0), (Undeclared(), "unavailable")):
        row = _score({"identity": reward, "dynamic": reward}, None, videos, references, reward, "consisid")
        assert row["face_sim"] == expected and row["identity"] == 5.0
