"""The study's statistics and table, on hand-computed numbers (the runs themselves are the study's to make)."""

import math
import sys

import pytest

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from miniature_study import METRICS, REWARD_ABLATION, TABLE2, interval, markdown, summarise


def test_interval_is_the_t_interval():
    mean, half = interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027 → 4.3027 / √3
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_summary_has_table_2_and_3_rows_and_every_metric():
    def row(value):
        return {m: value for m in METRICS}

    runs = [{"table2": {label: row(v) for label in TABLE2}, "table3": {label: row(v) for label in REWARD_ABLATION}}
            for v in (0.4, 0.6)]
    rows = summarise(runs)
    assert list(rows) == [*TABLE2, *(f"rewards: {label}" for label in REWARD_ABLATION)]
    assert rows["base"]["face_sim"][0] == pytest.approx(0.5)
    text = markdown(rows, 2)
    assert "over 2 runs" in text and text.count("\n| ") == len(rows) + 1  # the header, then one line per row


def test_the_evaluator_sees_a_still_avatar_as_itself_and_consistent(tmp_path):
    """The study's independent metrics on a video of the reference avatar standing still: near-perfect
    temporal consistency, and a face similarity far above another avatar's."""
    from miniature_study import independent_metrics

    from prefopt.media import write_media
    from prefopt_plugins.miniature.world import World

    world = World()
    photos = [ROOT / "plugins" / "miniature" / "references" / f"avatar-448-{s}.png"
              for s in range(3)]
    write_media(tmp_path / "000.mp4", world.clip(448, "still", 3), fps=8)
    (tmp_path / "other").mkdir()
    write_media(tmp_path / "other" / "000.mp4", world.clip(459, "still", 3), fps=8)
    same, other = independent_metrics(tmp_path, photos), independent_metrics(tmp_path / "other", photos)
    assert same["temporal"] > 0.95 and same["face_sim_eval"] > other["face_sim_eval"] + 0.3, (same, other)


def test_claims_are_paired_differences_with_a_verdict():
    from miniature_study import CLAIMS, claims, verdict

    def run(lora_flow, base_flow):
        table2 = {label: {m: 0.5 for m in METRICS} for label in TABLE2}
        table2["identity LoRA"]["flow_score"], table2["base"]["flow_score"] = lora_flow, base_flow
        return {"table2": table2, "table3": {label: {m: 0.5 for m in METRICS} for label in REWARD_ABLATION}}

    first = claims([run(0.5, 0.7), run(0.6, 0.7), run(0.55, 0.7)])[0]  # LoRA lower than base in every run
    assert first["claim"] == CLAIMS[0][0] and first["mean"] == pytest.approx(-0.15)
    assert first["runs_agreeing"] == 3 and first["verdict"] == "reproduced"
    assert verdict(0.1, 0.05, -1).startswith("not reproduced: the opposite")
    assert verdict(0.01, 0.05, +1).startswith("not resolved")
    assert verdict(-0.01, 0.05, 0).startswith("reproduced (no significant loss)")
    assert verdict(-0.1, 0.05, 0) == "not reproduced: significantly lower"
