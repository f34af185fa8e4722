"""Extra evidence on real weights, when the machine has them (skipped with a reason otherwise).

Every feature here is also tested without these weights elsewhere; these tests check that the real
checkpoints behave as the random stand-ins let us assume.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from prefopt.config import parse
from prefopt.plugins import get_registry

pytestmark = pytest.mark.weights


def _missing(name, **options):
    entry = get_registry().get("rewards", name)
    return entry.cls.missing_weights(parse(entry.config_class, options))


def test_real_raft_sees_more_motion_in_a_translating_video(make_reward):
    reason = _missing("raft-dynamic", model="raft_small")
    if reason:
        pytest.skip(reason)
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[100:356, 150:406])
    static = np.repeat(image[None], 9, axis=0)
    moving = np.stack([np.roll(image, shift=6 * i, axis=1) for i in range(9)])
    reward = make_reward("raft-dynamic", model="raft_small", video_fps=8.0)
    low, high = reward.score([static, moving], ["", ""], [])
    assert low.raw < 1.0 and high.raw > 4.0  # 6 px/frame at 256 px is 6 on the normalised scale
    assert high.metadata["vbench_dynamic"] and not low.metadata["vbench_dynamic"]


def test_real_insightface_pack_separates_people(make_reward):
    pack_dir = Path(os.path.expanduser("~/.insightface/models/antelopev2"))
    reason = _missing("insightface-id", pack="antelopev2")
    if reason:
        pytest.skip(reason)
    import imageio.v3 as iio
    import insightface
    import skimage.data

    from prefopt.media import ReferencePhoto

    astronaut = np.ascontiguousarray(skimage.data.astronaut()[20:260, 110:330])
    t1 = iio.imread(os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg"))
    reward = make_reward("insightface-id", model_dir=str(pack_dir), frames=1)
    same, other = reward.score([astronaut[None, :, ::-1], t1[None, 230:450, 20:230]], ["", ""],
                               [ReferencePhoto(astronaut, "astronaut.png")])
    assert same.raw > 0.5 > other.raw
