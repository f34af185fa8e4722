"""Prompt-following rewards (MagicID's R_sem): CLIP text–frame similarity, and a VLM rater.

``clip-semantic``: 100 × the cosine similarity between the prompt's CLIP text embedding and each sampled
frame's image embedding (CLIP-T), averaged over frames, mapped from ``raw_range`` (default 15–35) to 1–10.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefopt.errors import MissingWeightsError, PrefoptError
from prefopt.interfaces import CLIP_FEATURES, RewardScore
from prefopt.media import linspace_indices
from prefopt.scale import check_raw_range, to_scale


@dataclass
class ClipSemanticConfig:
    model: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "Hub id or local CLIP directory."})
    frames: int = field(default=8, metadata={"min": 1, "help": "Frames sampled per video (evenly spaced)."})
    raw_min: float = field(default=15.0, metadata={"help": "100·cosine mapped to score 1."})
    raw_max: float = field(default=35.0, metadata={"help": "100·cosine mapped to score 10."})
    batch_size: int = field(default=64, metadata={"min": 1, "help": "Frames per image-encoder call."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu` or `cuda:N`."})

    def __post_init__(self) -> None:
        check_raw_range(self)


def load_clip(model: str, device):
    """A CLIP model and processor from a local directory or the hub cache (never downloaded implicitly)."""
    from transformers import CLIPModel, CLIPProcessor

    from prefopt.hub import missing_weights_message

    message = missing_weights_message(model, "CLIP", "config.json", "the reward's `model` option")
    if message:
        raise MissingWeightsError(message)
    from prefopt.hub import pretrained_kwargs

    return (CLIPModel.from_pretrained(model, **pretrained_kwargs()).to(device).eval(),
            CLIPProcessor.from_pretrained(model, **pretrained_kwargs()))


class ClipSemanticReward:
    """Prompt following as CLIP text–frame similarity (CLIP-T), averaged over sampled frames."""

    name = "clip-semantic"
    Config = ClipSemanticConfig
    measures = frozenset({CLIP_FEATURES})

    @classmethod
    def save_tiny_model(cls, config, seed: int) -> None:
        """A tiny random CLIP at `model` (tests and demos; its scores are noise)."""
        from prefopt.tiny_models import save_tiny_clip

        save_tiny_clip(config.model, seed=seed)

    @classmethod
    def missing_weights(cls, config: ClipSemanticConfig) -> str | None:
        from prefopt.hub import missing_weights_message

        return missing_weights_message(config.model, "CLIP", "config.json", "the reward's `model` option")

    def __init__(self, config: ClipSemanticConfig):
        from prefopt.diffusers_backbone import resolve_device

        self.config = config
        self.raw_range = (config.raw_min, config.raw_max)
        self.device = resolve_device(config.device)
        self.model, self.processor = load_clip(config.model, self.device)

    def image_features(self, frames: np.ndarray):
        """Unit-norm image embeddings for uint8 frames ``[N, H, W, 3]``, batched."""
        return clip_image_features(self.model, self.processor, frames, self.config.batch_size, self.device)

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


def clip_image_features(model, processor, frames: np.ndarray, batch_size: int, device):
    """Unit-norm CLIP image embeddings for uint8 frames ``[N, H, W, 3]``, ``batch_size`` frames per call."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            batch = processor(images=list(frames[start : start + batch_size]), return_tensors="pt")
            out.append(_unit(model.get_image_features(pixel_values=batch["pixel_values"].to(device))))
    return torch.cat(out)


def _unit(features):
    # transformers 5 may return a model output rather than a tensor from get_*_features.
    tensor = getattr(features, "pooler_output", features)
    return tensor / tensor.norm(dim=-1, keepdim=True)


# --- VLM rater ------------------------------------------------------------------------------------------

DEFAULT_QUESTION = (
    'How well do these video frames match the description: "{prompt}"? Rate from 1 (not at all) to 10 '
    "(perfectly). Answer with a single number."
)


@dataclass
class VLMSemanticConfig:
    model: str = field(default="Qwen/Qwen2.5-VL-7B-Instruct",
                       metadata={"help": "Hub id or local directory of an image-text-to-text model."})
    frames: int = field(default=4, metadata={"min": 1, "help": "Frames shown to the model per video (evenly spaced)."})
    max_side: int = field(default=448, metadata={"min": 1, "help": "Frames are downscaled so their longer side is at most this."})
    question: str = field(default=DEFAULT_QUESTION, metadata={"help": "The rating question; `{prompt}` is replaced."})
    dtype: str = field(default="bfloat16", metadata={"help": "Model dtype: bfloat16, float16 or float32."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu` or `cuda:N`."})


class VLMSemanticReward:
    """Prompt following rated 1–10 by a vision-language model: the expected rating under its token probabilities."""

    name = "vlm-semantic"
    Config = VLMSemanticConfig
    raw_range = (1.0, 10.0)

    @classmethod
    def save_tiny_model(cls, config, seed: int) -> None:
        """A tiny random Qwen2-VL at `model` (tests and demos; its ratings are noise)."""
        from prefopt.tiny_models import save_tiny_vlm

        save_tiny_vlm(config.model, seed=seed)

    @classmethod
    def missing_weights(cls, config: VLMSemanticConfig) -> str | None:
        from prefopt.hub import missing_weights_message

        return missing_weights_message(config.model, "VLM", "config.json", "the reward's `model` option")

    def __init__(self, config: VLMSemanticConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from prefopt.diffusers_backbone import DTYPES, resolve_device

        message = self.missing_weights(config)
        if message:
            raise MissingWeightsError(message)
        self.config = config
        self.device = resolve_device(config.device)
        from prefopt.hub import pretrained_kwargs

        self.processor = AutoProcessor.from_pretrained(config.model, **pretrained_kwargs())
        self.model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=DTYPES[config.dtype],
                                                                 **pretrained_kwargs()).to(self.device)
        self.model.eval()
        self._torch = torch
        self._one, self._digits, self._ten = self._rating_tokens()

    def _rating_tokens(self):
        """Token ids of the ratings; "10" may be one token or "1" followed by "0"."""
        encode = self.processor.tokenizer
        digits = [encode.encode(str(r), add_special_tokens=False) for r in range(1, 10)]
        if any(len(d) != 1 for d in digits):
            raise PrefoptError(f"VLM `{self.config.model}`: the ratings 1–9 are not single tokens in its tokenizer.")
        ten = encode.encode("10", add_special_tokens=False)
        return digits[0][0], [d[0] for d in digits], ten

    def rating_distribution(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """P(rating = 1..10) from one forward pass over the question with "1" appended."""
        torch = self._torch
        messages = [{"role": "user", "content": [{"type": "image"} for _ in frames]
                     + [{"type": "text", "text": self.config.question.format(prompt=prompt)}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=[text + "1"], images=list(frames), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits[0].float()
        first = torch.softmax(logits[-2], dim=-1)  # the answer's first token (position before the appended "1")
        probs = first[self._digits].clone()
        if len(self._ten) == 1:
            probs = torch.cat([probs, first[self._ten]])
        else:  # "10" = "1" then "0": split P("1…") by the probability of "0" after "1"
            after_one = torch.softmax(logits[-1], dim=-1)[self._ten[1]]
            probs = torch.cat([probs, (probs[0] * after_one)[None]])
            probs[0] = probs[0] * (1 - after_one)
        return (probs / probs.sum()).cpu().numpy()

    def score(self, videos, prompts, references) -> list[RewardScore]:
        results = []
        for video, prompt in zip(videos, prompts):
            frames = downscale_frames(np.asarray(video)[linspace_indices(len(video), self.config.frames)], self.config.max_side)
            distribution = self.rating_distribution(frames, prompt)
            raw = float(np.dot(np.arange(1, 11), distribution))
            results.append(RewardScore(value=to_scale(raw, self.raw_range), raw=raw,
                                       metadata={"distribution": [round(float(p), 4) for p in distribution]}))
        return results

    def provenance(self) -> dict:
        import transformers

        return {"model": self.config.model, "transformers": transformers.__version__}


def downscale_frames(frames: np.ndarray, max_side: int) -> np.ndarray:
    from prefopt.media import resize_frames

    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return frames
    return resize_frames(frames, max(28, int(height * scale)), max(28, int(width * scale)))
