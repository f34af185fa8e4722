"""The miniature world's shipped reward models, loaded through the plugin registry like any reward."""

import numpy as np
import pytest

from prefopt.config import parse
from prefopt.errors import PrefoptError
from prefopt.registry import get_registry
from prefopt_recipes.miniature.rewards import action_of
from prefopt_recipes.miniature.world import ACTIONS, World


def _reward(name, **options):
    entry = get_registry().get("rewards", name)
    return entry.cls(parse(entry.config_class, options))


def test_the_identity_reward_says_its_model_is_missing():
    """The identity net is not shipped yet (its first training collapsed, docs/miniature.md)."""
    from prefopt_recipes.miniature.rewards import MiniatureIdentityConfig, MiniatureIdentityReward

    assert "miniature identity model" in MiniatureIdentityReward.missing_weights(MiniatureIdentityConfig(weights="/nowhere/identity"))


def test_the_action_reward_prefers_the_prompt_a_clip_follows():
    world, reward = World(), _reward("miniature-action")
    hits = 0
    for k, action in enumerate(ACTIONS):
        clip = world.clip(460 + k, action, 123)  # held-out identities
        scores = reward.score([clip] * len(ACTIONS), list(ACTIONS.values()), [])
        hits += int(np.argmax([s.value for s in scores]) == k)
        assert all(1.0 <= s.value <= 10.0 for s in scores)
    assert hits >= 6  # of 7


def test_prompts_map_to_actions():
    assert action_of("A person walks to the left, slowly") == "walk_left"
    assert action_of("someone jumps") == "jump"
    with pytest.raises(PrefoptError, match="names no action of the miniature world"):
        action_of("a person sings")
