"""Prompt-following rewards with tiny random models saved and loaded through the real loading code."""

import numpy as np
import pytest
import torch

from prefopt.errors import MissingWeightsError
from prefopt.tiny_models import save_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def test_clip_semantic_matches_an_independent_computation(make_reward, clip_dir):
    reward = make_reward("clip-semantic", model=clip_dir, frames=3, device="cpu")
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8) for _ in range(2)]
    prompts = ["a man walks", "a woman dances"]
    scores = reward.score(videos, prompts, [])
    # Independent: CLIPModel's own logits_per_image are logit_scale · cosine.
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    for video, prompt, score in zip(videos, prompts, scores):
        frames = list(video[[0, 2, 4]])
        with torch.no_grad():
            out = model(**processor(text=[prompt], images=frames, return_tensors="pt", padding=True))
        cosine = (out.logits_per_image[:, 0] / model.logit_scale.exp()).mean().item()
        assert score.raw == pytest.approx(100 * cosine, abs=1e-3)
        assert 1.0 <= score.value <= 10.0 and score.metadata["frames"] == 3
    assert reward.provenance()["model"] == clip_dir


def test_clip_missing_weights_is_one_clear_sentence(make_reward, tmp_path):
    with pytest.raises(MissingWeightsError, match=r"CLIP weights `.*` are neither a local directory"):
        make_reward("clip-semantic", model=str(tmp_path / "no-clip"))


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    from prefopt.tiny_models import save_tiny_vlm

    return str(save_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl"))


def test_vlm_score_is_the_expected_rating_under_the_token_probabilities(make_reward, vlm_dir):
    reward = make_reward("vlm-semantic", model=vlm_dir, frames=2, dtype="float32", device="cpu")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    (score,) = reward.score([video], ["a man walks"], [])
    distribution = np.array(score.metadata["distribution"])
    assert distribution.sum() == pytest.approx(1.0, abs=1e-3) and (distribution >= 0).all()
    assert score.raw == pytest.approx(float(np.dot(np.arange(1, 11), distribution)), abs=1e-2)
    assert 1.0 <= score.value <= 10.0 and score.value == pytest.approx(score.raw, abs=1e-9)
    # Independently: the model's own next-token probabilities for the digits after the chat prompt.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(vlm_dir).eval()
    frames = list(video[[0, 3]])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": reward.config.question.format(prompt="a man walks")}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(**processor(text=[text], images=frames, return_tensors="pt")).logits[0, -1]
    probs = torch.softmax(logits, dim=-1)
    digits = [processor.tokenizer.encode(str(r), add_special_tokens=False)[0] for r in range(2, 10)]
    expected = (probs[digits] / probs[digits].sum()).numpy()
    np.testing.assert_allclose(distribution[1:9] / distribution[1:9].sum(), expected, atol=2e-3)


def test_vlm_missing_weights_is_one_clear_sentence(make_reward, tmp_path):
    with pytest.raises(MissingWeightsError, match=r"VLM weights `.*` are neither a local directory"):
        make_reward("vlm-semantic", model=str(tmp_path / "nothing"))
