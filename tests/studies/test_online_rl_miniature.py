"""The online-RL study's statistics on hand-computed numbers: the run is the unit, gains are trained − base per
seed, verdicts follow the interval (the runs themselves are the study's to make)."""

import sys

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from online_rl_miniature import CLAIMS, gains, holm, markdown, plot, verdict


def _runs():
    def scores(action, judge):
        return {s: {"action": [action, action + 2], "judge": [judge, judge]} for s in ("trained", "heldout")}

    base = {seed: {"scores": scores(4.0, 5.0)} for seed in (1, 2, 3)}
    grpo = {seed: {"scores": scores(4.0 + seed, 5.0), "cpu_seconds": 120.0, "length": 6, "curve": [(0, 4), (2, 5)]}
            for seed in (1, 2, 3)}
    return {"__base__": base, "grpo": grpo}


def test_a_runs_gain_is_the_mean_of_trained_minus_base_over_its_samples():
    table = gains(_runs())
    assert table["grpo"]["trained"]["action"] == [1.0, 2.0, 3.0]  # one value per run, not per sample
    assert table["grpo"]["trained"]["judge"] == [0.0, 0.0, 0.0]


def test_verdicts_follow_the_interval():
    assert verdict(1.0, 0.5, +1) == "holds"
    assert verdict(0.2, 0.5, +1).startswith("did not appear")
    assert verdict(-1.0, 0.5, +1) == "reversed"
    assert verdict(0.0, 0.1, 0).startswith("holds (no loss beyond")
    assert verdict(-0.5, 0.1, 0).startswith("not shown")
    assert verdict(1.0, 0.5, +1, survives=False) == "holds, does not survive Holm"
    assert verdict(0.43, 0.45, +1, survives=True).startswith("holds, survives Holm (one-sided test;")


def test_holm_rejects_step_down():
    # m = 3: 0.01 ≤ 0.05/3, 0.02 ≤ 0.05/2, 0.04 ≤ 0.05/1: all three; with 0.03 second, the third stops at 0.05/2.
    assert holm([0.04, 0.01, 0.02]) == [True, True, True]
    assert holm([0.01, 0.03, 0.026]) == [True, False, False]


def test_the_table_counts_runs_and_states_every_claim_it_can():
    text = markdown(_runs(), 2.0)
    assert "| grpo | 3 | 6 | 2.0 ± 0.0 | +2.00 ± 2.48 |" in text  # t(0.975, 2) · 1/√3 = 2.484
    claims = [c for c in CLAIMS if c[0] == "grpo"]
    assert all(text.count(c[4]) == 1 for c in claims)
    assert "GRPO's gain is confirmed by the independent judge | +0.00 ± 0.00 | 1.000 | did not appear" in text


def test_the_evaluation_samples_every_prompt_set_scores_with_both_classifiers_and_is_read_back(tmp_path):
    """The real evaluation path (miniature model, both action classifiers) at one seed and one step per prompt."""
    from online_rl_miniature import HELDOUT, TRAINED, evaluate

    scores = evaluate(tmp_path, 1, "base", None, seeds_per_prompt=1, steps=1)
    assert {s: {k: len(v) for k, v in by.items()} for s, by in scores.items()} == {
        "trained": {"action": len(TRAINED), "judge": len(TRAINED)},
        "heldout": {"action": len(HELDOUT), "judge": len(HELDOUT)}}
    assert all(1 <= v <= 10 for by in scores.values() for values in by.values() for v in values)
    assert evaluate(tmp_path, 1, "base", None, seeds_per_prompt=1, steps=1) == scores  # read, not redone


def test_the_figure_is_drawn_from_the_runs(tmp_path):
    plot(tmp_path / "study.png", _runs())
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
