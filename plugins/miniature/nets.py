"""The miniature world's reward networks and their files: an identity embedding net and an action classifier.

``train_rewards`` trains them; ``rewards`` are the reward plugins that score with them. The shipped weights, with
their accuracy on held-out identities, are in ``plugins/miniature/weights/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prefopt.errors import MissingWeightsError
from prefopt_plugins.miniature.world import ACTIONS

WEIGHTS = Path(__file__).resolve().parent / "weights"
EMBEDDING = 64


class IdentityNet(nn.Module):
    """32 × 32 RGB frame → unit-norm 64-d identity embedding."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for width, stride in ((32, 1), (32, 2), (64, 2), (64, 2), (128, 2)):
            layers += [nn.Conv2d(channels, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, EMBEDDING)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [N, 3, 32, 32] in [-1, 1]
        return nn.functional.normalize(self.head(self.features(frames)), dim=-1)


class ActionNet(nn.Module):
    """[N, 3, 8, 32, 32] clip → logits over the world's actions."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, 32, 3, 1, 1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(32, 64, 3, (1, 2, 2), 1), nn.BatchNorm3d(64), nn.ReLU(),
            nn.Conv3d(64, 64, 3, (2, 2, 2), 1), nn.BatchNorm3d(64), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, len(ACTIONS)),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` → float ``[..., 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 127.5 - 1.0


def resize_to_world(frames: np.ndarray, size: int = 32) -> np.ndarray:
    from prefopt.media import resize_frames

    frames = np.asarray(frames)
    single = frames.ndim == 3
    frames = frames[None] if single else frames
    if frames.shape[1:3] != (size, size):
        frames = resize_frames(frames, size, size)
    return frames[0] if single else frames


def save_net(net: nn.Module, path: Path, record: dict) -> None:
    from prefopt.data import save_tensors
    from prefopt.files import write_json

    save_tensors(path.with_suffix(".safetensors"), net.state_dict())
    write_json(path.with_suffix(".json"), record)


def missing_net(path: Path, what: str) -> str | None:
    """One sentence naming a missing miniature reward model (its weights or their record), or None."""
    weights, info = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if weights.is_file() and info.is_file():
        return None
    return (f"the miniature {what} model `{weights}` is missing; train it with "
            "`python -m prefopt_plugins.miniature.train_rewards --out DIR` or use the shipped one.")


def load_net(cls, path: Path, what: str) -> tuple[nn.Module, dict]:
    from prefopt.data import load_tensors

    missing = missing_net(path, what)
    if missing:
        raise MissingWeightsError(missing)
    weights, info = path.with_suffix(".safetensors"), path.with_suffix(".json")
    net = cls()
    net.load_state_dict(load_tensors(weights, f"miniature {what} model"))
    return net.eval(), json.loads(info.read_text())
