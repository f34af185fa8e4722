"""The left/right study's measure and claims, on hand-made probabilities and scores (its runs: docs/miniature.md)."""

import sys

import numpy as np
import pytest

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from miniature_left_right import claims, seed_scores


def test_a_seed_scores_the_fraction_of_its_two_walks_that_go_the_prompted_way():
    def probs(*left_right):  # per clip P(walk left), P(walk right); the other five actions take the rest
        return np.array([[left, right, *[(1 - left - right) / 5] * 5] for left, right in left_right])

    found = seed_scores({"walk_left": probs((0.2, 0.1), (0.1, 0.2), (0.3, 0.3)),
                         "walk_right": probs((0.05, 0.06), (0.3, 0.0), (0.1, 0.4))})
    assert found.tolist() == [1.0, 0.0, 0.5]  # a tie between the walks is not the prompted way


def test_the_six_claims_use_seeds_as_the_unit_with_sign_tests_and_holm():
    def model(both, neither, one):
        return {"judge": {"seed_scores": [1.0] * both + [0.0] * neither + [0.5] * one}}

    results = {"B (shipped)": model(0, 0, 20), "C (character)": model(6, 2, 12), "R (redrawn)": model(5, 5, 10),
               "W (word)": model(18, 0, 2)}
    rows = claims(results)
    assert [row["claim"] for row in rows] == [
        "B tells left from right", "C tells left from right", "R tells left from right", "W tells left from right",
        "W beats R on the same seeds", "W beats C on the same seeds"]
    assert [row["estimate"] for row in rows[:4]] == pytest.approx([0.0, 0.1, 0.0, 0.45])
    assert rows[0]["p"] == 1.0 and rows[0]["seeds up, down"] == [0, 0]  # ignores the word: no seed moves
    assert rows[1]["p"] == pytest.approx(37 / 256)  # P(X ≥ 6 | 8, ½) = (28 + 8 + 1) / 2⁸
    assert rows[3]["p"] == pytest.approx(2.0 ** -18)
    # W − R per seed: 5 seeds 1 − 1 = 0, 5 seeds 1 − 0, 8 seeds 1 − 0.5, 2 seeds 0.5 − 0.5: 13 up, 0 down
    assert rows[4]["seeds up, down"] == [13, 0] and rows[4]["p"] == pytest.approx(2.0 ** -13)
    assert [row["holds"] for row in rows] == [False, False, False, True, True, True]
    low, high = rows[3]["interval"]
    assert low < 0.45 < high and high - low == pytest.approx(2 * 2.093 * np.std([0.5] * 18 + [0] * 2, ddof=1)
                                                             / np.sqrt(20), rel=1e-3)  # t(19) = 2.093
