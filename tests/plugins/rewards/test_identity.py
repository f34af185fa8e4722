"""Identity rewards on real faces (dlib's public-domain model) and their error paths."""

import os

import numpy as np
import pytest

from prefopt.errors import PrefoptError
from prefopt.media import ReferencePhoto, resize_frames

insightface = pytest.importorskip("insightface")
IMAGES = os.path.join(os.path.dirname(insightface.__file__), "data", "images")
# Face boxes (left, top, right, bottom) in insightface's t1.jpg, six different people.
T1_FACES = [(1118, 283, 1226, 390), (67, 283, 175, 390), (724, 367, 832, 474), (450, 295, 557, 402),
            (870, 67, 999, 196), (275, 176, 364, 265)]


def _crop(image, box, margin):
    left, top, right, bottom = box
    h, w = image.shape[:2]
    return image[max(0, top - margin) : min(h, bottom + margin), max(0, left - margin) : min(w, right + margin)]


def _video(image, frames=3):
    return np.repeat(resize_frames(image[None], 192, 192), frames, axis=0)


@pytest.fixture(scope="module")
def faces():
    import imageio.v3 as iio
    import skimage.data

    astronaut = skimage.data.astronaut()[20:260, 110:330]  # Eileen Collins' face only
    t1 = iio.imread(os.path.join(IMAGES, "t1.jpg"))
    others = [_crop(t1, box, 50) for box in T1_FACES]
    hanks = iio.imread(os.path.join(IMAGES, "Tom_Hanks_54745.png"))[..., :3]
    return astronaut, others + [np.pad(hanks, ((40, 40), (40, 40), (0, 0)), mode="edge")]


@pytest.mark.slow
def test_dlib_same_face_under_changes_beats_every_other_person(make_reward, faces):
    astronaut, others = faces
    reward = make_reward("dlib-id", frames=3)
    same = [
        astronaut[:, ::-1],  # mirror
        astronaut[15:-15, 10:-20],  # tighter crop
        np.clip(astronaut.astype(float) * 0.6, 0, 255).astype(np.uint8),  # darker
        np.clip((astronaut / 255.0) ** 0.7 * 255, 0, 255).astype(np.uint8),  # gamma
    ]
    references = [ReferencePhoto(astronaut, "astronaut.png")]
    same_scores = reward.score([_video(x) for x in same], [""] * len(same), references)
    other_scores = reward.score([_video(x) for x in others], [""] * len(others), references)
    assert all(s.metadata["frames_without_face"] == 0 for s in same_scores + other_scores)
    assert min(s.value for s in same_scores) > max(s.value for s in other_scores)
    assert min(s.raw for s in same_scores) > 0.4 > max(s.raw for s in other_scores)  # dlib's 0.6 distance rule
    assert reward.provenance()["model"] == "dlib_face_recognition_resnet_model_v1"


def test_no_face_gives_the_floor_and_says_so(make_reward, faces):
    astronaut, _ = faces
    reward = make_reward("dlib-id", frames=4, no_face_floor=0.0)
    noise = np.random.default_rng(0).integers(0, 255, (6, 128, 128, 3), dtype=np.uint8)
    half = np.concatenate([_video(astronaut, 3), np.repeat(resize_frames(noise[:1], 192, 192), 3, axis=0)])
    blank, mixed = reward.score([noise, half], ["", ""], [ReferencePhoto(astronaut, "me.png")])
    assert blank.value == 1.0 and blank.raw == 0.0
    assert blank.metadata["frames_without_face"] == blank.metadata["frames"] == 4
    assert mixed.metadata["frames_without_face"] == 2 and mixed.value > blank.value


def test_reference_without_a_face_is_an_error_naming_the_file(make_reward):
    reward = make_reward("dlib-id")
    noise = np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(PrefoptError, match=r"no face was detected in reference `photos/cat\.jpg`"):
        reward.score([np.zeros((2, 64, 64, 3), np.uint8)], [""], [ReferencePhoto(noise, "photos/cat.jpg")])


def test_dlib_missing_models_folder_is_a_clear_message(make_reward, tmp_path):
    with pytest.raises(PrefoptError, match="dlib model file\\(s\\) shape_predictor_5_face_landmarks.dat"):
        make_reward("dlib-id", models_dir=str(tmp_path))


def test_insightface_missing_pack_is_one_clear_message(make_reward, tmp_path):
    with pytest.raises(PrefoptError, match=r"insightface model pack `antelopev2` is not in `.*models/antelopev2`"):
        make_reward("insightface-id", root=str(tmp_path))


@pytest.fixture(scope="module")
def fake_pack(tmp_path_factory):
    from tests.plugins.rewards.insightface_fakes import write_fake_pack

    return write_fake_pack(tmp_path_factory.mktemp("insightface") / "fakepack")


def _bright_face(seed, size=160, square=(40, 120)):
    image = np.zeros((size, size, 3), np.uint8)
    rng = np.random.default_rng(seed)
    top, bottom = square
    image[top:bottom, top:bottom] = rng.integers(150, 256, (bottom - top, bottom - top, 3))
    return image


def test_insightface_reward_through_insightfaces_loading_path(make_reward, fake_pack):
    reward = make_reward("insightface-id", model_dir=str(fake_pack), det_size=160, frames=2, device="cpu")
    me, someone_else = _bright_face(0), _bright_face(1)
    references = [ReferencePhoto(me, "me.png")]
    same, other, empty = reward.score(
        [np.stack([me, me]), np.stack([someone_else, someone_else]), np.zeros((2, 160, 160, 3), np.uint8)],
        ["", "", ""], references)
    assert same.raw == pytest.approx(1.0, abs=1e-5) and same.value == pytest.approx(10.0, abs=1e-3)
    assert other.raw < same.raw and other.metadata["frames_without_face"] == 0
    assert empty.metadata["frames_without_face"] == 2 and empty.value == 1.0
    assert reward.provenance()["files"] == ["det_fake.onnx", "w600k_fake.onnx"]
    with pytest.raises(PrefoptError, match="no face was detected in reference `black.png`"):
        reward.score([np.stack([me])], [""], [ReferencePhoto(np.zeros((160, 160, 3), np.uint8), "black.png")])


def test_reference_embeddings_are_cached_by_content_not_by_object():
    """The cache once keyed on id(): a freed photo's address reused by another photo would return the first
    photo's embedding."""
    from prefopt_plugins.rewards.identity import IdentityConfig, IdentityReward

    class MeanColour(IdentityReward):
        name, calls = "mean-colour", 0

        def embed_largest_face(self, image):
            MeanColour.calls += 1
            return image.reshape(-1, 3).mean(axis=0)

        def similarity(self, embeddings, reference):
            return embeddings @ reference

    reward = MeanColour(IdentityConfig())
    red, green = np.zeros((4, 4, 3)), np.zeros((4, 4, 3))
    red[..., 0], green[..., 1] = 1.0, 1.0
    assert reward.reference_embedding([red]).tolist() == [1.0, 0.0, 0.0]
    assert reward.reference_embedding([red.copy()]).tolist() == [1.0, 0.0, 0.0] and MeanColour.calls == 1
    red[...] = green  # the same object, new content
    assert reward.reference_embedding([red]).tolist() == [0.0, 1.0, 0.0] and MeanColour.calls == 2


def test_without_the_insightface_extra_the_reward_says_what_to_install_before_any_work(monkeypatch, tmp_path):
    """insightface is an optional extra (#24 item 9): its absence is found with the weights, in one sentence."""
    import importlib.util

    from prefopt_plugins.rewards.identity import InsightFaceIdentityConfig, InsightFaceIdentityReward

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "insightface" else real(name, *a))
    message = InsightFaceIdentityReward.missing_weights(InsightFaceIdentityConfig(model_dir=str(tmp_path)))
    assert message == ("reward `insightface-id` needs insightface, not installed: "
                       "`pip install 'prefopt[insightface]'`.")
