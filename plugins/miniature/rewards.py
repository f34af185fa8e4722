"""The miniature world's reward plugins (their networks load only when a reward is built):

* ``miniature-id``: the cosine similarity of each sampled frame's embedding from the identity net (the analogue of
  insightface's ArcFace) to the mean embedding of the reference stills. The world has exactly one avatar per
  frame, so there is no detector.
* ``miniature-action``: prompt following, 1 + 9 × the action net's calibrated probability of the prompt's action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from prefopt.errors import PrefoptError
from prefopt.hub import resolve_path
from prefopt.interfaces import RewardScore
from prefopt.scale import to_scale
from prefopt_plugins.miniature.world import ACTIONS
from prefopt_plugins.rewards.identity import IdentityConfig, IdentityReward

PACKAGE_WEIGHTS = "package://prefopt_plugins/miniature/weights"  # the shipped weights, wherever the package is

@dataclass
class MiniatureIdentityConfig(IdentityConfig):
    weights: str = field(default=f"{PACKAGE_WEIGHTS}/identity",
                         metadata={"help": "The identity net (without suffix); `package://` paths resolve inside an installed package."})


class MiniatureIdentityReward(IdentityReward):
    """Identity in the miniature world: cosine of the identity net's frame embeddings to the reference stills'."""

    name = "miniature-id"
    Config = MiniatureIdentityConfig

    @classmethod
    def missing_weights(cls, config: MiniatureIdentityConfig) -> str | None:
        from prefopt_plugins.miniature.nets import missing_net

        return missing_net(resolve_path(config.weights), "identity")

    def __init__(self, config: MiniatureIdentityConfig):
        super().__init__(config)
        from prefopt_plugins.miniature.nets import IdentityNet, load_net

        self.net, self.info = load_net(IdentityNet, resolve_path(config.weights), "identity")

    @torch.no_grad()
    def embed_largest_face(self, image: np.ndarray) -> np.ndarray | None:
        from prefopt_plugins.miniature.nets import resize_to_world, to_tensor

        return self.net(to_tensor(resize_to_world(image[..., :3]))[None])[0].double().numpy()

    def aggregate_references(self, embeddings: np.ndarray) -> np.ndarray:
        mean = embeddings.mean(axis=0)
        return mean / np.linalg.norm(mean)

    def similarity(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return embeddings @ reference

    def provenance(self) -> dict:
        return {"model": "miniature identity net", "weights": self.config.weights,
                "rank1_accuracy_held_out": self.info.get("rank1_accuracy")}


def action_of(prompt: str) -> str:
    """The world's action a prompt asks for (its sentence, or a keyword of it)."""
    text = prompt.lower()
    for action, sentence in ACTIONS.items():
        if sentence in text:
            return action
    keywords = {"left": "walk_left", "right": "walk_right", "jump": "jump", "nod": "nod", "spin": "spin",
                "closer": "zoom", "still": "still"}
    found = [action for word, action in keywords.items() if word in text]
    if len(found) != 1:
        raise PrefoptError(f"prompt `{prompt}` names {'no' if not found else 'more than one'} action of the "
                           f"miniature world; use one of: {'; '.join(ACTIONS.values())}.")
    return found[0]


@dataclass
class MiniatureActionConfig:
    weights: str = field(default=f"{PACKAGE_WEIGHTS}/action",
                         metadata={"help": "The action classifier (without suffix); `package://` paths resolve inside an installed package."})


class MiniatureActionReward:
    """Prompt following in the miniature world: 1 + 9 × the calibrated probability of the prompt's action."""

    name = "miniature-action"
    Config = MiniatureActionConfig
    raw_range = (0.0, 1.0)

    @classmethod
    def missing_weights(cls, config: MiniatureActionConfig) -> str | None:
        from prefopt_plugins.miniature.nets import missing_net

        return missing_net(resolve_path(config.weights), "action")

    @classmethod
    def check_prompts(cls, config: MiniatureActionConfig, prompts: list[str]) -> None:
        """Every prompt must name one action of the world (found before any sampling, not after a round)."""
        for prompt in prompts:
            action_of(prompt)

    def __init__(self, config: MiniatureActionConfig):
        self.config = config
        from prefopt_plugins.miniature.nets import ActionNet, load_net

        self.net, self.info = load_net(ActionNet, resolve_path(config.weights), "action")
        self.temperature = float(self.info["temperature"])

    @torch.no_grad()
    def probabilities(self, video) -> np.ndarray:
        """The calibrated probability of each of the world's actions (``ACTIONS`` order) for one video."""
        from prefopt_plugins.miniature.nets import resize_to_world, to_tensor

        clip = resize_to_world(np.asarray(video)[..., :3])
        clip = clip[np.linspace(0, len(clip) - 1, 8).round().astype(int)]  # the classifier's 8 frames
        return torch.softmax(self.net(to_tensor(clip).movedim(0, 1)[None]) / self.temperature, -1)[0].numpy()

    def score(self, videos, prompts, references) -> list[RewardScore]:
        results = []
        for video, prompt in zip(videos, prompts):
            probs = self.probabilities(video)
            p = float(probs[list(ACTIONS).index(action_of(prompt))])
            results.append(RewardScore(value=to_scale(p, self.raw_range), raw=p,
                                       metadata={"predicted": list(ACTIONS)[int(probs.argmax())]}))
        return results

    def provenance(self) -> dict:
        return {"model": "miniature action classifier", "weights": self.config.weights,
                "accuracy_held_out": self.info.get("accuracy"), "temperature": self.temperature}
