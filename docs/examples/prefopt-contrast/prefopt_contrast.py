"""A complete prefopt reward plugin: the contrast (luma standard deviation) of a video's frames."""

from dataclasses import dataclass, field

import numpy as np

from prefopt import RewardScore, hookimpl, to_scale


@dataclass
class ContrastConfig:
    max_std: float = field(default=80.0, metadata={"help": "Luma std that maps to a score of 10."})


class ContrastReward:
    """Frame contrast: the mean over frames of the luma standard deviation."""

    name = "contrast"
    Config = ContrastConfig

    def __init__(self, config: ContrastConfig):
        self.config = config
        self.raw_range = (0.0, config.max_std)

    def score(self, videos, prompts, references):
        results = []
        for video in videos:  # uint8 [F, H, W, 3]
            luma = video.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            raw = float(luma.reshape(len(video), -1).std(axis=1).mean())
            results.append(RewardScore(value=to_scale(raw, self.raw_range), raw=raw))
        return results

    def provenance(self):
        return {"model": "none", "version": "0.1.0"}


@hookimpl
def register_rewards(register):
    register(ContrastReward)
