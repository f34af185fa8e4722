"""Dynamics rewards (MagicID's R_dy): optical-flow motion between sampled frames, as VBench measures it.

Frames are sampled at about ``sample_fps`` (VBench: 8 fps). For each consecutive pair the flow magnitude
is computed and the mean of its top 5 % taken (VBench's ``get_score``). Dividing by ``min(H, W) / 256``
makes that resolution-independent: VBench calls a pair "moving" above 6·min(H, W)/256, i.e. above 6 on
this normalised scale. The raw reward is the mean normalised value over pairs, mapped linearly from
``raw_range`` (default 0–12, so VBench's threshold of 6 lands mid-scale at 5.5) to 1–10.

Backends: ``raft-dynamic`` (torchvision RAFT, batched, GPU when present) and ``opencv-dynamic`` (DIS or
Farneback; no weights; the offline default).
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from prefopt.errors import ConfigError, MissingWeightsError
from prefopt.interfaces import OPTICAL_FLOW, RewardScore
from prefopt.media import fps_indices
from prefopt.scale import check_raw_range, to_scale

VBENCH_THRESHOLD = 6.0  # on the min(H, W)/256-normalised scale
RAFT_MIN_SIDE = 128


def top_fraction_mean(magnitude: np.ndarray, fraction: float = 0.05) -> float:
    """Mean of the largest ``fraction`` of values (VBench: top 5 % of flow magnitudes)."""
    flat = np.asarray(magnitude, dtype=np.float64).ravel()
    count = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - count)[flat.size - count :].mean())


def vbench_is_dynamic(pair_scores: list[float], height: int, width: int, sampled_frames: int) -> bool:
    """VBench's boolean dynamic degree from un-normalised per-pair top-5 % magnitudes."""
    threshold = VBENCH_THRESHOLD * min(height, width) / 256.0
    needed = round(4 * sampled_frames / 16.0)
    return sum(score > threshold for score in pair_scores) >= needed


@dataclass
class DynamicsConfig:
    video_fps: float = field(default=24.0, metadata={"above": 0, "help": "Frame rate of the videos being scored."})
    sample_fps: float = field(default=8.0, metadata={"above": 0, "help": "Rate frames are sampled at (VBench: 8)."})
    raw_min: float = field(default=0.0, metadata={"help": "Normalised motion mapped to score 1."})
    raw_max: float = field(default=12.0, metadata={"help": "Normalised motion mapped to score 10 (VBench moving: > 6)."})

    def __post_init__(self) -> None:
        check_raw_range(self)


class DynamicsReward(abc.ABC):
    """Shared scoring over per-pair flow magnitudes; backends compute the flow."""

    name: str
    measures = frozenset({OPTICAL_FLOW})

    def __init__(self, config: DynamicsConfig):
        self.config = config
        self.raw_range = (config.raw_min, config.raw_max)

    @abc.abstractmethod
    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Flow magnitude ``[P, H, W]`` for frame pairs given as uint8 ``[P, H, W, 3]`` arrays."""

    def score(self, videos, prompts, references) -> list[RewardScore]:
        sampled = [np.asarray(v)[fps_indices(len(v), self.config.video_fps, self.config.sample_fps)] for v in videos]
        # One batched flow call over every pair of every video.
        firsts = [v[:-1] for v in sampled if len(v) > 1]
        seconds = [v[1:] for v in sampled if len(v) > 1]
        magnitudes = self.flow_magnitudes(np.concatenate(firsts), np.concatenate(seconds)) if firsts else []
        results, offset = [], 0
        for video in sampled:
            pairs = max(0, len(video) - 1)
            per_pair = [top_fraction_mean(m) for m in magnitudes[offset : offset + pairs]]
            offset += pairs
            results.append(self._result(video, per_pair))
        return results

    def _result(self, video: np.ndarray, per_pair: list[float]) -> RewardScore:
        height, width = video.shape[1:3]
        scale = min(height, width) / 256.0
        raw = float(np.mean(per_pair) / scale) if per_pair else 0.0
        metadata = {"pairs": len(per_pair), "per_pair_top5": [round(p, 4) for p in per_pair],
                    "vbench_dynamic": vbench_is_dynamic(per_pair, height, width, len(video))}
        return RewardScore(value=to_scale(raw, self.raw_range), raw=raw, metadata=metadata)


@dataclass
class OpenCVDynamicsConfig(DynamicsConfig):
    method: Literal["dis", "farneback"] = field(default="dis", metadata={"help": "OpenCV optical-flow method."})


class OpenCVDynamicsReward(DynamicsReward):
    """Motion from OpenCV optical flow (DIS or Farneback): no weights, fast on CPU."""

    name = "opencv-dynamic"
    Config = OpenCVDynamicsConfig

    def __init__(self, config: OpenCVDynamicsConfig):
        super().__init__(config)
        import cv2

        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if config.method == "dis" else None

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        out = []
        for a, b in zip(first, second):
            ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
            if self._dis is not None:
                flow = self._dis.calc(ga, gb, None)
            else:
                flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            out.append(np.hypot(flow[..., 0], flow[..., 1]))
        return np.stack(out)

    def provenance(self) -> dict:
        return {"model": f"opencv-{self.config.method}", "opencv": self._cv2.__version__}


@dataclass
class RaftDynamicsConfig(DynamicsConfig):
    model: Literal["raft_small", "raft_large"] = field(default="raft_large", metadata={"help": "torchvision RAFT."})
    torchvision_weights: str = field(
        default="C_T_V1",
        metadata={"help": "torchvision weights of `model`: `C_T_V1` (default) is the original RAFT's `raft-things` "
                          "(FlyingChairs + FlyingThings), which VBench's Dynamic Degree uses; `C_T_SKHT_V2` "
                          "(torchvision's DEFAULT) is fine-tuned on Sintel, KITTI and HD1K."},
    )
    weights: str = field(
        default="",
        metadata={"help": "A RAFT state-dict file; empty takes `torchvision_weights` from the torch hub cache."},
    )
    iterations: int = field(default=20, metadata={"min": 1, "help": "RAFT refinement iterations (VBench: 20)."})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "Frame pairs per RAFT call."})
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu` or `cuda:N`."})


class RaftDynamicsReward(DynamicsReward):
    """Motion from torchvision's RAFT optical flow (the paper's choice), batched on the GPU when present."""

    name = "raft-dynamic"
    Config = RaftDynamicsConfig

    @classmethod
    def missing_weights(cls, config: RaftDynamicsConfig) -> str | None:
        try:
            cls._weights_source(config)
        except MissingWeightsError as e:
            return str(e)
        return None

    @staticmethod
    def _weights_source(config: RaftDynamicsConfig):
        """(weights file, torchvision weights enum or None); raises when neither is available."""
        import torch
        import torchvision.models.optical_flow as of

        if config.weights:
            if not Path(config.weights).is_file():
                raise MissingWeightsError(
                    f"RAFT weights file `{config.weights}` does not exist; set `weights` to a state-dict file.")
            return Path(config.weights), None
        choices = getattr(of, "Raft_Small_Weights" if config.model == "raft_small" else "Raft_Large_Weights")
        if config.torchvision_weights not in choices.__members__:
            raise ConfigError(f"`torchvision_weights` of {config.model} must be one of "
                              f"{', '.join(choices.__members__)}, got `{config.torchvision_weights}`.")
        enum = choices[config.torchvision_weights]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
        if not cached.is_file():
            raise MissingWeightsError(
                f"torchvision {config.model} weights are not in the torch hub cache (`{cached}`): download "
                f"{enum.url} there, or set the reward's `weights` option to a local state-dict file."
            )
        return cached, enum

    def __init__(self, config: RaftDynamicsConfig):
        super().__init__(config)
        import torch

        from prefopt.diffusers_backbone import resolve_device

        self._torch = torch
        self.device = resolve_device(config.device)
        self.model, self._source = self._load(config)
        self.model.to(self.device).eval()

    @classmethod
    def _load(cls, config: RaftDynamicsConfig):
        import torch
        import torchvision.models.optical_flow as of

        builder = getattr(of, config.model)
        path, enum = cls._weights_source(config)
        if enum is not None:
            return builder(weights=enum), str(path)
        model = builder(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model, os.fspath(path)

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(first), self.config.batch_size):
                a = self._prepare(first[start : start + self.config.batch_size])
                b = self._prepare(second[start : start + self.config.batch_size])
                flow = self.model(a, b, num_flow_updates=self.config.iterations)[-1]
                h, w = first.shape[1:3]
                out.append(torch.linalg.vector_norm(flow[:, :, :h, :w], dim=1).float().cpu().numpy())
        return np.concatenate(out)

    def _prepare(self, frames: np.ndarray):
        """uint8 [P, H, W, 3] → float [-1, 1] [P, 3, H', W'], padded (replicating edges) to multiples of 8
        and at least 128 px, the smallest input RAFT's correlation pyramid accepts."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        pad_h = max(RAFT_MIN_SIDE, x.shape[2] + (-x.shape[2]) % 8) - x.shape[2]
        pad_w = max(RAFT_MIN_SIDE, x.shape[3] + (-x.shape[3]) % 8) - x.shape[3]
        return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")

    def provenance(self) -> dict:
        import torchvision

        return {"model": self.config.model, "weights": self._source, "iterations": self.config.iterations,
                "torchvision_weights": "" if self.config.weights else self.config.torchvision_weights,
                "torchvision": torchvision.__version__}
