"""PickScore and the LAION aesthetic predictor, on tiny random CLIP models saved and loaded through transformers."""

import numpy as np
import pytest
import torch

from prefopt.errors import MissingWeightsError, PrefoptError
from prefopt.tiny_models import save_tiny_clip
from prefopt_plugins.rewards.preference import (
    AestheticConfig,
    AestheticReward,
    PickScoreConfig,
    PickScoreReward,
    aesthetic_head,
)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip"))


def _images(n=3, seed=0):
    return [np.random.default_rng(seed + i).integers(0, 255, (2, 40, 40, 3), dtype=np.uint8) for i in range(n)]


def test_pickscore_is_clips_own_image_text_logit(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    reward = PickScoreReward(PickScoreConfig(model=clip_dir, processor=clip_dir, device="cpu", frames=1,
                                             raw_min=-50, raw_max=50))
    videos, prompts = _images(), ["a cat", "a dog on a hill", "a bowl"]
    scores = reward.score(videos, prompts, [])
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        inputs = processor(text=prompts, images=[v[0] for v in videos], return_tensors="pt", padding=True)
        logits = model(**inputs).logits_per_image  # logit_scale.exp() · cos, every image against every text
    np.testing.assert_allclose([s.raw for s in scores], logits.diagonal().numpy(), rtol=1e-4, atol=1e-4)
    assert all(1.0 <= s.value <= 10.0 for s in scores)


def test_pickscore_names_missing_weights():
    message = PickScoreReward.missing_weights(PickScoreConfig(model="/nowhere/pickscore", processor=None))
    assert "PickScore" in message and "/nowhere/pickscore" in message


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    torch.manual_seed(0)
    head = aesthetic_head(16)  # the tiny CLIP's projection width
    path = tmp_path_factory.mktemp("head") / "head.pth"
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, path)  # the project's key layout
    return path


def test_aesthetic_score_is_the_head_on_unit_clip_embeddings(clip_dir, head_file):
    from transformers import CLIPModel, CLIPProcessor

    reward = AestheticReward(AestheticConfig(model=clip_dir, head=str(head_file), device="cpu", frames=2,
                                             raw_min=-5, raw_max=5))
    videos = _images(2)
    scores = reward.score(videos, ["", ""], [])
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    head = aesthetic_head(16)
    head.load_state_dict({k.removeprefix("layers."): v for k, v in torch.load(head_file).items()})
    head.eval()
    with torch.no_grad():
        for video, score in zip(videos, scores):
            pixels = processor(images=list(video), return_tensors="pt")["pixel_values"]
            embeds = model.get_image_features(pixel_values=pixels)
            embeds = getattr(embeds, "pooler_output", embeds)
            expected = head(embeds / embeds.norm(dim=-1, keepdim=True)).mean().item()
            assert score.raw == pytest.approx(expected, abs=1e-5)
    assert scores[0].raw != scores[1].raw


def test_aesthetic_head_problems_are_one_sentence(clip_dir, tmp_path):
    with pytest.raises(MissingWeightsError, match="improved-aesthetic-predictor"):
        AestheticReward(AestheticConfig(model=clip_dir, head=str(tmp_path / "gone.pth"), device="cpu"))
    assert "gone.pth" in AestheticReward.missing_weights(AestheticConfig(model=clip_dir, head=str(tmp_path / "gone.pth")))
    wide = tmp_path / "wide.pth"
    torch.save({f"layers.{k}": v for k, v in aesthetic_head(768).state_dict().items()}, wide)
    with pytest.raises(PrefoptError, match="takes 768-d embeddings but CLIP .* makes 16-d ones"):
        AestheticReward(AestheticConfig(model=clip_dir, head=str(wide), device="cpu"))
