"""Prompt-following rewards (MagicID's R_sem): CLIP text–frame similarity, and a VLM rater.

``clip-semantic``: 100 × the cosine similarity between the prompt's CLIP text embedding and each sampled
frame's image embedding (CLIP-T), averaged over frames, mapped from ``raw_range`` (default 15–35) to 1–10.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefopt.errors import MissingWeightsError
from prefopt.interfaces import RewardScore
from prefopt.scale import to_scale
from prefopt_plugins.rewards.common import linspace_indices


@dataclass
class ClipSemanticConfig:
    model: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "Hub id or local CLIP directory."})
    frames: int = field(default=8, metadata={"help": "Frames sampled per video (evenly spaced)."})
    raw_min: float = field(default=15.0, metadata={"help": "100·cosine mapped to score 1."})
    raw_max: float = field(default=35.0, metadata={"help": "100·cosine mapped to score 10."})
    batch_size: int = field(default=64, metadata={"help": "Frames per image-encoder call."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu` or `cuda:N`."})


def load_clip(model: str, device):
    """A CLIP model and processor from a local directory or the hub cache (never downloaded implicitly)."""
    from transformers import CLIPModel, CLIPProcessor

    from prefopt.hub import missing_weights_message

    message = missing_weights_message(model, "CLIP", "config.json", "the reward's `model` option")
    if message:
        raise MissingWeightsError(message)
    return CLIPModel.from_pretrained(model).to(device).eval(), CLIPProcessor.from_pretrained(model)


class ClipSemanticReward:
    """Prompt following as CLIP text–frame similarity (CLIP-T), averaged over sampled frames."""

    name = "clip-semantic"
    Config = ClipSemanticConfig

    @classmethod
    def missing_weights(cls, config: ClipSemanticConfig) -> str | None:
        from prefopt.hub import missing_weights_message

        return missing_weights_message(config.model, "CLIP", "config.json", "the reward's `model` option")

    def __init__(self, config: ClipSemanticConfig):
        from prefopt_plugins.backbones.base import resolve_device

        self.config = config
        self.raw_range = (config.raw_min, config.raw_max)
        self.device = resolve_device(config.device)
        self.model, self.processor = load_clip(config.model, self.device)

    def image_features(self, frames: np.ndarray):
        """Unit-norm image embeddings for uint8 frames ``[N, H, W, 3]``, batched."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.config.batch_size):
                batch = self.processor(images=list(frames[start : start + self.config.batch_size]), return_tensors="pt")
                out.append(_unit(self.model.get_image_features(pixel_values=batch["pixel_values"].to(self.device))))
        return torch.cat(out)

    def text_features(self, texts: list[str]):
        import torch

        with torch.inference_mode():
            tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
            return _unit(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))

    def score(self, videos, prompts, references) -> list[RewardScore]:
        sampled = [np.asarray(v)[linspace_indices(len(v), self.config.frames)] for v in videos]
        images = self.image_features(np.concatenate(sampled))
        texts = self.text_features(list(prompts))
        results, offset = [], 0
        for i, frames in enumerate(sampled):
            cosine = (images[offset : offset + len(frames)] @ texts[i]).float().cpu().numpy()
            offset += len(frames)
            raw = float(100.0 * cosine.mean())
            results.append(RewardScore(value=to_scale(raw, self.raw_range), raw=raw,
                                       metadata={"frames": len(frames), "per_frame": [round(100 * c, 3) for c in cosine]}))
        return results

    def provenance(self) -> dict:
        import transformers

        return {"model": self.config.model, "transformers": transformers.__version__}


def _unit(features):
    # transformers 5 may return a model output rather than a tensor from get_*_features.
    tensor = getattr(features, "pooler_output", features)
    return tensor / tensor.norm(dim=-1, keepdim=True)
