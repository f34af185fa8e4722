"""The study's statistics and table, on hand-computed numbers (the runs themselves are the study's to make)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
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
