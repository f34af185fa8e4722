"""The MagicID study's statistics, claims and measures on hand-computed numbers and real world videos (the runs
themselves are the study's to make)."""

import math
import sys

import numpy as np
import pytest

from tests import ROOT

sys.path.insert(0, str(ROOT / "studies"))
from miniature_study import (
    CLAIMS,
    MARGIN,
    METRICS,
    REWARD_ABLATION,
    TABLE2,
    claims,
    markdown,
    pairs_markdown,
    summarise,
    verdict,
)
from study_stats import detectable_effect, holm, interval, one_sided_p


def test_interval_is_the_t_interval():
    mean, half = interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027 → 4.3027 / √3
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_one_sided_tests_directional_and_non_inferior():
    # mean 2, sd 1, n 3: t = 2/(1/√3) = 3.4641, one-sided p(df 2) = 0.03709
    assert one_sided_p([1.0, 2.0, 3.0], +1) == pytest.approx(0.03709, abs=1e-4)
    assert one_sided_p([-1.0, -2.0, -3.0], -1) == pytest.approx(0.03709, abs=1e-4)
    # no loss beyond 0.5: the values + 0.5 = 0.5, 1.0, 1.5 → t = 1/(0.5/√3) = 3.4641
    assert one_sided_p([0.0, 0.5, 1.0], 0, margin=0.5) == pytest.approx(0.03709, abs=1e-4)
    assert one_sided_p([-1.0, -2.0, -3.0], 0, margin=0.5) > 0.9


def test_holm_rejects_step_down_and_the_detectable_effect_is_the_power_formula():
    assert holm([0.04, 0.01, 0.02]) == [True, True, True]  # 0.01 ≤ .05/3, 0.02 ≤ .05/2, 0.04 ≤ .05
    assert holm([0.01, 0.03, 0.026]) == [True, False, False]  # 0.026 > .05/2 stops the procedure
    # sd 1, n 3: (t(0.95, 2) + t(0.8, 2)) / √3 = (2.919986 + 1.060660) / 1.732051
    assert detectable_effect([1.0, 2.0, 3.0]) == pytest.approx((2.919986 + 1.060660) / math.sqrt(3), rel=1e-5)


def _run(lora_flow=0.5, base_flow=0.7, stage1_face=0.5, final_face=0.5):
    table2 = {label: {m: 0.5 for m in METRICS} for label in TABLE2}
    table2["identity LoRA"]["flow_score"], table2["base"]["flow_score"] = lora_flow, base_flow
    table2["stage 1 (ID pairs)"]["face_sim"], table2["MagicID (final)"]["face_sim"] = stage1_face, final_face
    pairs = {"pairs": 10, "trained_on": 10, "identity": 2.0, "dynamic": -0.5, "semantic": 0.1}
    return {"table2": table2, "table3": {label: {m: 0.5 for m in METRICS} for label in REWARD_ABLATION},
            "pairs": {s: pairs for s in ("stage1", "stage2")}, "table3_pairs": {a: pairs for a in REWARD_ABLATION}}


def test_claims_are_paired_differences_tested_with_holm_and_the_margin():
    runs = [_run(0.5, 0.7, 0.50, 0.51), _run(0.6, 0.7, 0.50, 0.49), _run(0.55, 0.7, 0.50, 0.50),
            _run(0.52, 0.7, 0.40, 0.41)]
    found = claims(runs)
    assert [c["claim"] for c in found] == [c[0] for c in CLAIMS]
    lora = found[0]  # LoRA lower than base in every run, by 0.2, 0.1, 0.15, 0.18
    assert lora["mean"] == pytest.approx(-0.1575) and lora["runs_agreeing"] == 4
    assert lora["holm"] and lora["verdict"] == "reproduced (survives Holm)"
    no_loss = found[4]  # final − stage 1 face: +0.01, −0.01, 0, +0.01: within MARGIN = 0.03
    assert no_loss["verdict"] == f"no loss beyond −{MARGIN} (non-inferior, survives Holm)"
    flat = found[3]  # no difference at all: nothing detected, said with the interval
    assert flat["verdict"].startswith("not detected: interval") and not flat["holm"]


def test_verdicts_do_not_overstate():
    assert verdict(0.1, 0.05, -1, 0.99, False) == "the opposite, nominally: interval [+0.050, +0.150]"
    assert verdict(0.1, 0.11, +1, 0.04, False) == "nominal only (p < 0.05), not after Holm"
    assert verdict(0.01, 0.05, +1, 0.3, False) == "not detected: interval [-0.040, +0.060]"
    assert verdict(-0.05, 0.04, 0, 0.4, False) == f"not shown to be within −{MARGIN}: interval [-0.090, -0.010]"
    assert verdict(-0.09, 0.04, 0, 0.99, False) == f"a loss beyond −{MARGIN}: interval [-0.130, -0.050]"


def test_tables_have_every_row_metric_and_stage():
    runs = [_run(), _run()]
    rows = summarise(runs)
    assert list(rows) == [*TABLE2, *(f"rewards: {label}" for label in REWARD_ABLATION)]
    text = markdown(rows, 2)
    assert "over 2 runs" in text and text.count("\n| ") == len(rows) + 1
    pairs = pairs_markdown(runs)
    assert "| stage1 | 10.00 ± 0.00 | 10.00 ± 0.00 | 2.00 ± 0.00 | -0.50 ± 0.00 | 0.10 ± 0.00 |" in pairs
    assert "| ID only | 10.00 ± 0.00 | 2.00 ± 0.00 | -0.50 ± 0.00 |" in pairs


def test_stage_2_pair_differences_count_its_own_pairs_apart_from_stage_1_s(tmp_path):
    """Stage 2 trains on stage 1's pairs too; its own are those its selectors chose (the `selector` column)."""
    from miniature_study import pair_differences

    from prefopt.interfaces import Pair
    from prefopt.selection import write_pairs

    def pair(selector, identity, dynamic):
        return Pair("w", "l", "p", selector=selector, deltas={"identity": identity, "dynamic": dynamic})

    class Layout:
        def current(self, stage):
            class Folder:
                pairs = tmp_path / f"{stage}.parquet"
            return Folder

    write_pairs(tmp_path / "stage1.parquet", [pair("stage1:threshold", 8.0, -0.5)] * 3)
    write_pairs(tmp_path / "stage2.parquet", [pair("stage1:threshold", 8.0, -0.5)] * 3
                + [pair("stage2:pareto→topk", 1.0, 2.0), pair("stage2:pareto→topk", 3.0, 0.0)])
    found = pair_differences(Layout())
    assert found["stage1"] == {"pairs": 3, "trained_on": 3, "identity": 8.0, "dynamic": -0.5}
    assert found["stage2"] == {"pairs": 2, "trained_on": 5, "identity": 2.0, "dynamic": 1.0}


def test_the_independent_measures_see_identity_stillness_and_the_prompt(tmp_path):
    """On videos of the reference avatar drawn by the world: near-perfect temporal consistency, a face similarity
    far above another avatar's, and the judge's probability high for videos that do what their prompt says."""
    from miniature_study import EVAL_PROMPTS, VIDEOS_PER_PROMPT, independent_metrics, reference_photos

    from prefopt.media import write_media
    from prefopt_plugins.miniature.world import World

    world = World()
    photos = reference_photos(tmp_path, 460)
    actions = {"a person jumps up and down": "jump", "a person spins around": "spin"}
    index = 0
    for prompt in EVAL_PROMPTS:
        for k in range(VIDEOS_PER_PROMPT):
            write_media(tmp_path / "evaluation-x" / "right" / f"{index:03d}.mp4", world.clip(460, actions[prompt], k), fps=8)
            write_media(tmp_path / "evaluation-x" / "wrong" / f"{index:03d}.mp4", world.clip(466, "still", k), fps=8)
            index += 1
    right, wrong = (independent_metrics(tmp_path / "evaluation-x" / name, photos) for name in ("right", "wrong"))
    assert right["judge_raw"] > 0.9 and wrong["judge_raw"] < 0.1, (right, wrong)
    assert right["face_sim_eval"] > wrong["face_sim_eval"] + 0.3 and wrong["temporal"] > 0.95


def test_the_study_refuses_an_identity_seen_in_pretraining(tmp_path):
    from miniature_study import reference_photos

    with pytest.raises(SystemExit, match="identity 12 was seen in pretraining"):
        reference_photos(tmp_path, 12)
    assert [p.name for p in reference_photos(tmp_path, 490)] == [f"avatar-490-{s}.png" for s in range(3)]
    assert np.asarray([p.is_file() for p in reference_photos(tmp_path, 490)]).all()
