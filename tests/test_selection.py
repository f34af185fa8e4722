"""Pair selection: fronts against brute force, selector rules, chains, unions, outputs."""

import itertools

import numpy as np
import pytest

from prefopt.config import parse
from prefopt.errors import ConfigError
from prefopt.interfaces import PairIndices, ScoredItems
from prefopt.plugins import get_registry
from prefopt.selection import (
    dominates,
    nondominated_fronts,
    plot_selection,
    read_pairs_table,
    run_chain,
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


def test_strict_dominance_uses_the_papers_fronts_in_the_pareto_selector():
    # (3,3) is better than (3,1) on one reward and tied on the other: standard dominance ranks (3,1) in front 2,
    # the paper's rule keeps it in the first front.
    items = ScoredItems(ids=np.array(["a", "b", "c"], dtype=object), sources=np.array(["base"] * 3, dtype=object),
                        prompts=np.array(["p"] * 3, dtype=object),
                        scores={"identity": np.array([3.0, 3.0, 1.0]), "dynamic": np.array([3.0, 1.0, 0.5])})
    standard = _selector("pareto", rewards=["identity", "dynamic"]).frontiers(items)[0]
    strict = _selector("pareto", rewards=["identity", "dynamic"], dominance="strict").frontiers(items)[0]
    assert sorted(standard) == [0] and sorted(strict) == [0, 1]


def test_pareto_on_one_reward_pairs_its_top_level_with_its_bottom_level():
    """The paper's Table 3 "ID only" row: a one-reward Pareto selection."""
    items = _items()
    pairs = _selector("pareto", rewards=["identity"]).select(items)
    identity = items.scores["identity"]
    assert len(pairs.winners) and np.all(identity[pairs.winners] == identity.max())
    assert np.all(identity[pairs.losers] == identity.min())


def test_lower_front_is_the_front_of_the_reversed_problem():
    points = np.array([[1, 1], [2, 2], [3, 1], [1, 3], [3, 3], [2, 1.5]], float)
    upper, lower = upper_and_lower_fronts(points)
    assert sorted(upper) == [4]  # (3,3) dominates everything else
    assert sorted(lower) == [0]  # (1,1) is dominated by everything else
    assert dominates(points[4], points[1]) and not dominates(points[2], points[3])
    assert dominates(points[4], points[1], strict=True) and not dominates(points[4], points[2], strict=True)


def _items(n=200, seed=0):
    rng = np.random.default_rng(seed)
    sources = np.array(["static", "base", "lora"], dtype=object)[rng.integers(0, 3, n)]
    identity = rng.uniform(1, 10, n) + (sources == "static") * 2
    return ScoredItems(
        ids=np.array([f"item{i}" for i in range(n)], dtype=object), sources=sources,
        prompts=np.array([f"prompt {i % 7}" for i in range(n)], dtype=object),
        scores={"identity": np.clip(identity, 1, 10), "dynamic": rng.uniform(1, 10, n), "semantic": rng.uniform(1, 10, n)},
    )


def _selector(name, **options):
    entry = get_registry().get("pair_selectors", name)
    return entry.cls(parse(entry.config_class, options))


def test_threshold_finds_exactly_the_pairs_that_satisfy_its_rule():
    items = _items()
    selector = _selector("threshold", margin=2.0, tolerance=1.0, tolerance_rewards=["dynamic"],
                         winner_sources=["static"], loser_sources=["base"], max_pairs_per_winner=10_000)
    pairs = selector.select(items)
    got = set(zip(pairs.winners.tolist(), pairs.losers.tolist()))
    s = items.scores
    expected = {(w, l) for w, l in itertools.product(range(len(items)), repeat=2)
                if items.sources[w] == "static" and items.sources[l] == "base"
                and s["identity"][w] - s["identity"][l] >= 2.0 and abs(s["dynamic"][w] - s["dynamic"][l]) <= 1.0}
    assert got == expected and len(expected) > 20


def test_threshold_cap_keeps_the_largest_gaps_per_winner():
    items = _items()
    capped = _selector("threshold", margin=1.0, tolerance=3.0, winner_sources=["static"], loser_sources=["base"],
                       max_pairs_per_winner=2).select(items)
    full = _selector("threshold", margin=1.0, tolerance=3.0, winner_sources=["static"], loser_sources=["base"],
                     max_pairs_per_winner=10_000).select(items)
    identity = items.scores["identity"]
    for w in np.unique(capped.winners):
        mine = capped.losers[capped.winners == w]
        everyone = full.losers[full.winners == w]
        assert len(mine) == min(2, len(everyone))
        assert set(identity[mine]) == set(np.sort(identity[everyone])[: len(mine)])


def test_pareto_pairs_come_from_the_fronts_and_satisfy_the_rule():
    items = _items(seed=1)
    selector = _selector("pareto", sources=["base", "lora"])
    pairs = selector.select(items)
    upper, lower = selector.frontiers(items)
    matrix = np.column_stack([items.scores[r] for r in ("identity", "dynamic", "semantic")])
    assert len(pairs) > 0
    assert np.isin(pairs.winners, upper).all() and np.isin(pairs.losers, lower).all()
    assert not np.isin(items.sources[np.concatenate([pairs.winners, pairs.losers])], ["static"]).any()
    assert dominates(matrix[pairs.winners], matrix[pairs.losers]).all()
    strict = _selector("pareto", sources=["base", "lora"], dominance="strict").select(items)
    assert np.all(matrix[strict.winners] > matrix[strict.losers])
    gain = _selector("pareto", sources=["base", "lora"], rule="primary_gain").select(items)
    assert len(gain) >= len(pairs)
    assert (items.scores["identity"][gain.winners] > items.scores["identity"][gain.losers]).all()


def test_chain_pareto_then_topk_keeps_largest_identity_gaps():
    items = _items(n=400, seed=2)
    pareto = _selector("pareto", sources=["base", "lora"], depth=3, rule="primary_gain")
    everything = pareto.select(items)
    top = run_chain(items, [pareto, _selector("topk", k=10, reward="identity")])
    gaps = items.scores["identity"][everything.winners] - items.scores["identity"][everything.losers]
    top_gaps = items.scores["identity"][top.winners] - items.scores["identity"][top.losers]
    assert len(top) == 10 and np.allclose(np.sort(top_gaps)[::-1], np.sort(gaps)[::-1][:10])
    with pytest.raises(ConfigError, match="put it after one in the chain"):
        _selector("topk").select(items)


def test_filtering_candidates_applies_the_same_rule():
    items = _items()
    candidates = PairIndices(np.arange(0, 100), np.arange(100, 200), np.ones(100))
    threshold = _selector("threshold", margin=2.0, tolerance=9.0)
    kept = threshold.select(items, candidates)
    assert (items.scores["identity"][kept.winners] - items.scores["identity"][kept.losers] >= 2.0).all()
    assert 0 < len(kept) < 100


def test_union_records_parquet_and_plot(tmp_path):
    items = _items()
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
