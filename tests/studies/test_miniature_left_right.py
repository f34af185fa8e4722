"""The left/right study's measure and claims, on hand-made probabilities and hits (its runs are in docs/miniature.md)."""

import sys

import numpy as np
import pytest

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from miniature_left_right import claims, correct_direction


def test_direction_is_judged_between_the_two_walks_only():
    def probs(left, right):  # the other five actions take the rest
        rest = (1 - left - right) / 5
        return np.array([[left, right, rest, rest, rest, rest, rest]])

    found = correct_direction({"walk_left": np.concatenate([probs(0.2, 0.1), probs(0.1, 0.2)]),
                               "walk_right": np.concatenate([probs(0.05, 0.06), probs(0.3, 0.0)])})
    assert found.tolist() == [True, False, True, False]


def test_the_four_claims_with_exact_tests_and_holm():
    def hits(right):
        return {"judge": {"correct": [True] * right + [False] * (32 - right)}}

    results = {"B": hits(16), "C (character)": hits(20), "W (word)": hits(30)}
    rows = claims(results)
    assert [row["estimate"] for row in rows[:3]] == [0.5, 20 / 32, 30 / 32]
    # P(X ≥ 16 | n 32, ½) = ½ + ½·P(X = 16); P(X ≥ 30) = (1 + 32 + 496) / 2³²
    assert rows[0]["p"] == pytest.approx(0.5 + 0.5 * 601080390 / 2**32)
    assert rows[2]["p"] == pytest.approx(529 / 2**32)
    assert rows[3]["discordant"] == {"only W right": 10, "only C right": 0} and rows[3]["p"] == pytest.approx(2**-10)
    assert [row["holds"] for row in rows] == [False, False, True, True]
    low, high = rows[2]["interval"]
    assert low < 30 / 32 < high and low > 0.79  # Wilson: 0.80 to 0.98
