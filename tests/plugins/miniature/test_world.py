"""The miniature world: deterministic, hundreds of distinct identities with a held-out set, actions that move."""

import itertools

import numpy as np
import pytest

from prefopt_plugins.miniature.world import ACTIONS, World, _poses
from tests import ROOT


def test_the_world_is_deterministic_from_its_seeds():
    world = World()
    assert np.array_equal(world.clip(5, "jump", 3), World().clip(5, "jump", 3))
    assert np.array_equal(world.still(400, 1), World().still(400, 1))
    assert not np.array_equal(world.clip(5, "jump", 3), world.clip(5, "jump", 4))  # another clip seed
    assert World(seed=1).identity(5) != world.identity(5)  # another world seed shuffles the identities


def test_identities_are_distinct_and_the_held_out_set_is_never_in_training():
    world = World(num_identities=512, held_out=64)
    looks = [world.identity(i) for i in range(world.num_identities)]
    assert len(set(looks)) == 512
    assert set(world.train_identities).isdisjoint(world.held_out_identities)
    assert len(world.held_out_identities) == 64 and max(world.train_identities) < min(world.held_out_identities)
    with pytest.raises(ValueError, match="identity 512 is not in this world"):
        world.identity(512)


def test_clips_have_the_worlds_shape_and_every_action_has_a_prompt_without_the_identity():
    world = World(frames=8, size=32)
    for action in ACTIONS:
        clip = world.clip(0, action, 0)
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
        assert "person" in world.prompt(action) and world.identity(0).face not in world.prompt(action)
    with pytest.raises(ValueError, match="unknown action `dance`"):
        world.clip(0, "dance", 0)


def test_actions_move_as_their_prompts_say():
    rng = np.random.default_rng(0)
    start = np.zeros(2)
    xs = [p.x for p in _poses("walk_left", 8, start, rng)]
    assert all(b < a for a, b in itertools.pairwise(xs))
    xs = [p.x for p in _poses("walk_right", 8, start, rng)]
    assert all(b > a for a, b in itertools.pairwise(xs))
    scales = [p.scale for p in _poses("zoom", 8, start, rng)]
    assert all(b > a for a, b in itertools.pairwise(scales))
    assert min(p.squash for p in _poses("spin", 8, start, rng)) < 0.5
    assert np.ptp([p.y for p in _poses("jump", 8, start, rng)]) > 0.1
    assert np.ptp([p.tilt for p in _poses("nod", 8, start, rng)]) > 0.1
    world = World()
    still = world.clip(3, "still", 0)
    assert all(np.array_equal(still[0], frame) for frame in still)  # nothing moves
    walking = world.clip(3, "walk_left", 0)
    assert np.abs(walking[0].astype(int) - walking[-1].astype(int)).mean() > 5


def test_stills_of_one_identity_look_alike_and_unlike_another():
    world = World()
    # The face (the centre of the photo): the background shade and a small shift vary from photo to photo.
    a1, a2, b = (world.still(i, s, 64)[22:42, 22:42].astype(float) for i, s in ((450, 0), (450, 1), (451, 0)))
    assert np.abs(a1 - a2).mean() < np.abs(a1 - b).mean()


def test_the_shipped_reference_photos_are_the_worlds_stills():

    from prefopt.media import read_media

    folder = ROOT / "plugins" / "miniature" / "references"
    photos = sorted(folder.glob("avatar-*.png"))
    assert len(photos) == 6
    world = World()
    for photo in photos:
        _, identity, seed = photo.stem.split("-")
        assert int(identity) in world.held_out_identities  # never seen in pretraining
        assert np.array_equal(read_media(photo)[0], world.still(int(identity), int(seed), 64))
