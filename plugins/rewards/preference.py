"""Human-preference rewards for images (and video frames), both CLIP-based.

``pickscore``: PickScore (Kirstain et al., 2023), a CLIP-H fine-tuned on Pick-a-Pic preferences; the raw score is
CLIP's ``logit_scale.exp() × cos(text, image)`` (about 17–24 for real images), mapped from ``raw_range`` to 1–10.
Weights: ``yuvalkirstain/PickScore_v1`` with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; see
their model cards for the licences (prefopt does not redistribute them).

``laion-aesthetic``: the LAION aesthetic predictor (improved-aesthetic-predictor, C. Schuhmann): a linear MLP on
the unit-norm CLIP ViT-L/14 image embedding that predicts a 1–10 aesthetic rating. Weights: the CLIP model from
the hub and the head file ``sac+logos+ava1-l14-linearMSE.pth`` from the project's GitHub repository (its
licence is in that repository). Video frames are scored one by one and averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefopt.errors import MissingWeightsError, PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.media import linspace_indices
from prefopt.scale import check_raw_range, to_scale
from prefopt_plugins.rewards.semantic import (
    ClipSemanticConfig,
    ClipSemanticReward,
    clip_image_features,
    load_clip,
)

AESTHETIC_HEAD_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                      "sac+logos+ava1-l14-linearMSE.pth")


@dataclass
class PickScoreConfig(ClipSemanticConfig):
    model: str = field(default="yuvalkirstain/PickScore_v1", metadata={"help": "Hub id or local PickScore directory."})
    processor: str | None = field(
        default="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        metadata={"help": "Hub id or local directory of the CLIP processor; empty: the model's own."},
    )
    frames: int = field(default=4, metadata={"min": 1, "help": "Frames scored per video (evenly spaced)."})
    raw_min: float = field(default=17.0, metadata={"help": "Raw PickScore mapped to score 1."})
    raw_max: float = field(default=24.0, metadata={"help": "Raw PickScore mapped to score 10."})


class PickScoreReward(ClipSemanticReward):
    """Human preference for a prompt's image (PickScore: CLIP-H fine-tuned on Pick-a-Pic), on the 1–10 scale."""

    name = "pickscore"
    Config = PickScoreConfig
    measures = frozenset()  # CLIP features, but its raw score is not CLIP-T: no CLIP metrics from it

    @classmethod
    def missing_weights(cls, config: PickScoreConfig) -> str | None:
        from prefopt.hub import missing_weights_message

        for path, what in ((config.model, "PickScore"), (config.processor, "PickScore's CLIP processor")):
            message = path and missing_weights_message(path, what, "config.json" if what == "PickScore" else
                                                       "preprocessor_config.json", "the reward's options")
            if message:
                return message
        return None

    def __init__(self, config: PickScoreConfig):
        super().__init__(config)
        if config.processor:
            from transformers import CLIPProcessor

            from prefopt.hub import pretrained_kwargs

            self.processor = CLIPProcessor.from_pretrained(config.processor, **pretrained_kwargs())

    def score(self, videos, prompts, references) -> list[RewardScore]:
        sampled = [np.asarray(v)[linspace_indices(len(v), self.config.frames)] for v in videos]
        images = self.image_features(np.concatenate(sampled))
        texts = self.text_features(list(prompts))
        scale = float(self.model.logit_scale.exp())
        results, offset = [], 0
        for i, frames in enumerate(sampled):
            per_frame = (scale * (images[offset : offset + len(frames)] @ texts[i])).float().cpu().numpy()
            offset += len(frames)
            raw = float(per_frame.mean())
            results.append(RewardScore(value=to_scale(raw, self.raw_range), raw=raw,
                                       metadata={"frames": len(frames), "per_frame": [round(float(s), 4) for s in per_frame]}))
        return results

    def provenance(self) -> dict:
        return {**super().provenance(), "processor": self.config.processor}


@dataclass
class AestheticConfig:
    model: str = field(default="openai/clip-vit-large-patch14", metadata={"help": "Hub id or local CLIP ViT-L/14."})
    head: str = field(
        default="sac+logos+ava1-l14-linearMSE.pth",
        metadata={"help": f"The predictor's MLP weights (.pth or .safetensors), e.g. downloaded from {AESTHETIC_HEAD_URL}."},
    )
    frames: int = field(default=4, metadata={"min": 1, "help": "Frames scored per video (evenly spaced)."})
    raw_min: float = field(default=1.0, metadata={"help": "Predicted rating mapped to score 1 (the predictor's scale is "
                                                          "already 1–10; real images mostly rate 4–7)."})
    raw_max: float = field(default=10.0, metadata={"help": "Predicted rating mapped to score 10."})
    batch_size: int = field(default=64, metadata={"min": 1, "help": "Frames per image-encoder call."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu` or `cuda:N`."})

    def __post_init__(self) -> None:
        check_raw_range(self)


def aesthetic_head(input_size: int):
    """The predictor's MLP: linear layers (no activations, as trained), dropout between them."""
    from torch import nn

    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_aesthetic_head(path: str):
    """The MLP from the project's state dict (keys ``layers.N.*``), on CPU in eval mode."""
    import torch

    file = Path(path)
    if not file.is_file():
        raise MissingWeightsError(_missing_head(path))
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise PrefoptError(f"aesthetic head `{path}` could not be read ({e}).") from e
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    if "0.weight" not in state:
        raise PrefoptError(f"aesthetic head `{path}` has no `layers.0.weight`: it is not an improved-aesthetic-"
                           "predictor MLP.")
    head = aesthetic_head(state["0.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval()


def _missing_head(path: str) -> str:
    return (f"the aesthetic predictor's head `{path}` does not exist; download it from {AESTHETIC_HEAD_URL} and set "
            "the reward's `head` option to the file.")


class AestheticReward:
    """Aesthetic quality (the LAION improved aesthetic predictor: an MLP on CLIP ViT-L/14 image embeddings), 1–10."""

    name = "laion-aesthetic"
    Config = AestheticConfig

    @classmethod
    def save_tiny_model(cls, config, seed: int) -> None:
        """A tiny random CLIP at `model` (tests and demos: the head file is yours to give)."""
        from prefopt.tiny_models import save_tiny_clip

        save_tiny_clip(config.model, seed=seed)

    @classmethod
    def missing_weights(cls, config: AestheticConfig) -> str | None:
        from prefopt.hub import missing_weights_message

        clip = missing_weights_message(config.model, "CLIP (aesthetic predictor)", "config.json",
                                       "the reward's `model` option")
        return clip or (None if Path(config.head).is_file() else _missing_head(config.head))

    def __init__(self, config: AestheticConfig):
        from prefopt.diffusers_backbone import resolve_device

        self.config = config
        self.raw_range = (config.raw_min, config.raw_max)
        self.device = resolve_device(config.device)
        self.model, self.processor = load_clip(config.model, self.device)
        self.head = load_aesthetic_head(config.head).to(self.device)
        width = self.model.config.projection_dim
        if self.head[0].in_features != width:
            raise PrefoptError(f"aesthetic head `{config.head}` takes {self.head[0].in_features}-d embeddings but CLIP "
                               f"`{config.model}` makes {width}-d ones; the head was trained for CLIP ViT-L/14 (768).")

    def score(self, videos, prompts, references) -> list[RewardScore]:
        import torch

        sampled = [np.asarray(v)[linspace_indices(len(v), self.config.frames)] for v in videos]
        features = clip_image_features(self.model, self.processor, np.concatenate(sampled), self.config.batch_size,
                                       self.device)
        with torch.inference_mode():
            ratings = self.head(features.float()).squeeze(-1).cpu().numpy()
        results, offset = [], 0
        for frames in sampled:
            per_frame = ratings[offset : offset + len(frames)]
            offset += len(frames)
            raw = float(per_frame.mean())
            results.append(RewardScore(value=to_scale(raw, self.raw_range), raw=raw,
                                       metadata={"frames": len(frames), "per_frame": [round(float(r), 4) for r in per_frame]}))
        return results

    def provenance(self) -> dict:
        import hashlib

        digest = hashlib.sha256(Path(self.config.head).read_bytes()).hexdigest()[:16]
        return {"model": self.config.model, "head": Path(self.config.head).name, "head_sha256": digest}
