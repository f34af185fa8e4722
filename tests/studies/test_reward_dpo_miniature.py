"""The reward-DPO study's tables on hand-computed numbers: out-of-sample gains over runs with the claims, the
in-sample stage means beside them (the runs themselves are the study's to make)."""

import sys

import pytest

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from reward_dpo_miniature import ARM, CLAIMS, in_sample, markdown


def _scores(action):
    return {"round0": {"action": {"0-0": 4.0, "0-1": 6.0}, "motion": {"0-0": 5.0, "0-1": 5.0}},
            "final": {"action": {"0-0": action, "0-1": action}, "motion": {"0-0": 5.0, "0-1": 5.0}}}


def test_in_sample_means_are_over_runs():
    table = in_sample({1: _scores(6.0), 2: _scores(8.0)})
    assert table["round0"]["action"] == (5.0, 0.0)
    mean, half = table["final"]["action"]  # run means 6 and 8: sd √2, t(0.975, 1) = 12.706 → 12.706
    assert mean == 7.0 and half == pytest.approx(12.7062, rel=1e-4)


def test_the_table_leads_with_out_of_sample_gains_and_states_every_claim():
    evaluated = {s: {"action": [5.0, 5.0], "judge": [5.0, 5.0]} for s in ("trained", "heldout")}
    better = {s: {"action": [6.0, 6.5], "judge": [5.5, 5.5]} for s in ("trained", "heldout")}
    runs = {"__base__": {seed: {"scores": evaluated} for seed in (1, 2, 3)},
            ARM: {seed: {"scores": better, "cpu_seconds": 240.0, "length": 2, "curve": []} for seed in (1, 2, 3)}}
    text = markdown(runs, {seed: _scores(7.0) for seed in (1, 2, 3)})
    assert text.startswith("Out of sample: final − base on 8 fresh seeds per prompt")
    assert all(claim[4] in text for claim in CLAIMS)
    assert text.index("Out of sample") < text.index("In sample") and "| final | 7.00 ± 0.00 | 5.00 ± 0.00 |" in text
