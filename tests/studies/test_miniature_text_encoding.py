"""The text-encoding measurement on the shipped miniature model: symmetric cosines, ones on the diagonal, and the
two walking prompts told apart (not identical), as docs/miniature.md reports, in token order and order-free."""

import sys

import numpy as np

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from miniature_text_encoding import prompt_cosines


def test_the_walking_prompts_are_encoded_apart_but_closest():
    found = prompt_cosines()
    assert set(found) == {"prompt_embeds", "pooled_prompt_embeds", "prompt_embeds, order-free"}
    cosines = found["prompt_embeds"]
    np.testing.assert_allclose(np.diag(cosines), 1.0, atol=1e-9)
    np.testing.assert_allclose(cosines, cosines.T, atol=1e-12)
    left_right = cosines[0, 1]  # ACTIONS order: walk_left, walk_right, …
    assert left_right < 0.99 and left_right == cosines[~np.eye(7, dtype=bool)].max()
    order_free = found["prompt_embeds, order-free"]  # what the transformer can read: closer, but not the closest
    others = order_free[~np.eye(7, dtype=bool)]
    assert left_right < order_free[0, 1] < others.max()
