"""The miniature world's shipped reward models, loaded through the plugin registry like any reward."""

import numpy as np
import pytest

from prefopt.errors import PrefoptError
from prefopt_plugins.miniature.rewards import action_of
from prefopt_plugins.miniature.world import ACTIONS, World


def test_the_identity_reward_names_a_missing_model():
    from prefopt_plugins.miniature.rewards import MiniatureIdentityConfig, MiniatureIdentityReward

    assert "miniature identity model" in MiniatureIdentityReward.missing_weights(MiniatureIdentityConfig(weights="/nowhere/identity"))
    assert MiniatureIdentityReward.missing_weights(MiniatureIdentityConfig()) is None  # the shipped one


def test_the_identity_reward_separates_held_out_identities(make_reward):
    """16 held-out identities (never seen in training): a clip of each, scored against every identity's three
    64-pixel reference stills, as the recipe scores generated videos against the user's photos."""
    world, reward = World(), make_reward("miniature-id")
    identities = list(range(448, 464))
    references = np.stack([reward.reference_embedding([world.still(i, seed, 64) for seed in (0, 1, 2)])
                           for i in identities])
    clips = [world.clip(i, list(ACTIONS)[row % len(ACTIONS)], 7) for row, i in enumerate(identities)]
    frames = np.stack([np.stack([reward.embed_largest_face(frame) for frame in clip]) for clip in clips])
    similarity = (frames @ references.T).mean(axis=1)  # [clip, identity]: the reward's raw value
    assert np.allclose(similarity[3, 5], reward.score([clips[3]], [""], [world.still(453, s, 64) for s in (0, 1, 2)])[0].raw)
    rank1 = float((similarity.argmax(1) == np.arange(len(identities))).mean())
    same, other = np.diag(similarity).mean(), similarity[~np.eye(len(identities), dtype=bool)].mean()
    assert rank1 >= 0.9 and same - other > 0.5, (rank1, same, other)  # measured: 1.0, 0.90 vs 0.05


def test_the_action_reward_prefers_the_prompt_a_clip_follows(make_reward):
    world, reward = World(), make_reward("miniature-action")
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
