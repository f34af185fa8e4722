"""Pair selection: fronts against brute force, selector rules, chains, unions, outputs."""


import numpy as np
import pytest

from prefopt.interfaces import PairIndices
from prefopt.selection import (
    dominates,
    nondominated_fronts,
    plot_selection,
    read_pairs_table,
    strict_fronts,
    to_records,
    unite,
    upper_and_lower_fronts,
    write_pairs,
)


def _brute_force_fronts(points, maximize=True):
    points = points if maximize else -points
    remaining, fronts = list(range(len(points))), []
    while remaining:
        front = [i for i in remaining
                 if not any(np.all(points[j] >= points[i]) and np.any(points[j] > points[i]) for j in remaining)]
        fronts.append(sorted(front))
        remaining = [i for i in remaining if i not in front]
    return fronts


@pytest.mark.parametrize("seed", range(5))
def test_fronts_equal_brute_force_peeling_with_ties(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(1, 5, size=(60, 3)).astype(float)  # few levels: many ties and duplicates
    for maximize in (True, False):
        got = [f.tolist() for f in nondominated_fronts(points, maximize=maximize)]
        assert got == _brute_force_fronts(points, maximize)


def _brute_force_strict_fronts(points, maximize=True):
    """The paper's definition, written out: j beats i iff R(j) > R(i) on every reward."""
    points = points if maximize else -points
    remaining, fronts = list(range(len(points))), []
    while remaining:
        front = [i for i in remaining if not any(np.all(points[j] > points[i]) for j in remaining)]
        fronts.append(sorted(front))
        remaining = [i for i in remaining if i not in front]
    return fronts


@pytest.mark.parametrize("seed", range(5))
def test_strict_fronts_equal_brute_force_peeling_with_ties(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(1, 5, size=(60, 3)).astype(float)  # few levels: many ties and duplicates
    for maximize in (True, False):
        assert [f.tolist() for f in strict_fronts(points, maximize=maximize)] == _brute_force_strict_fronts(points, maximize)
    standard, strict = nondominated_fronts(points)[0], strict_fronts(points)[0]
    assert set(standard) < set(strict)  # with ties the paper's first front is strictly larger






def test_lower_front_is_the_front_of_the_reversed_problem():
    points = np.array([[1, 1], [2, 2], [3, 1], [1, 3], [3, 3], [2, 1.5]], float)
    upper, lower = upper_and_lower_fronts(points)
    assert sorted(upper) == [4]  # (3,3) dominates everything else
    assert sorted(lower) == [0]  # (1,1) is dominated by everything else
    assert dominates(points[4], points[1]) and not dominates(points[2], points[3])
    assert dominates(points[4], points[1], strict=True) and not dominates(points[4], points[2], strict=True)


def test_union_records_parquet_and_plot(scored_items, tmp_path):
    items = scored_items()
    a = PairIndices(np.array([0, 1]), np.array([2, 3]), np.array([1.0, 0.5]))
    b = PairIndices(np.array([1, 4]), np.array([3, 5]), np.array([1.0, 1.0]))
    pairs = unite([(items, a, "stage1"), (items, b, "stage2")])
    assert [(p.winner_id, p.loser_id, p.selector) for p in pairs] == [
        ("item0", "item2", "stage1"), ("item1", "item3", "stage1"), ("item4", "item5", "stage2")]
    assert pairs[0].prompt == items.prompts[2]  # the loser's prompt conditions the pair
    assert pairs[0].deltas["identity"] == pytest.approx(items.scores["identity"][0] - items.scores["identity"][2])
    path = write_pairs(tmp_path / "pairs.parquet", pairs)
    assert read_pairs_table(path) == pairs
    png = plot_selection(tmp_path / "pairs.png", items, a, "identity", "dynamic", "stage 1")
    assert png.stat().st_size > 10_000
    assert to_records(items, a, "x", prompt_from="winner")[0].prompt == items.prompts[0]
