"""The first-party pair selectors: each rule finds exactly the pairs that satisfy it, alone and in a chain."""

import itertools

import numpy as np
import pytest

from prefopt.config import parse
from prefopt.errors import ConfigError
from prefopt.interfaces import PairIndices, ScoredItems
from prefopt.plugins import get_registry
from prefopt.selection import (
    dominates,
    run_chain,
)


def test_strict_dominance_uses_the_papers_fronts_in_the_pareto_selector():
    # (3,3) is better than (3,1) on one reward and tied on the other: standard dominance ranks (3,1) in front 2,
    # the paper's rule keeps it in the first front.
    items = ScoredItems(ids=np.array(["a", "b", "c"], dtype=object), sources=np.array(["base"] * 3, dtype=object),
                        prompts=np.array(["p"] * 3, dtype=object),
                        scores={"identity": np.array([3.0, 3.0, 1.0]), "dynamic": np.array([3.0, 1.0, 0.5])})
    standard = _selector("pareto", rewards=["identity", "dynamic"]).frontiers(items)[0]
    strict = _selector("pareto", rewards=["identity", "dynamic"], dominance="strict").frontiers(items)[0]
    assert sorted(standard) == [0] and sorted(strict) == [0, 1]


def test_pareto_on_one_reward_pairs_its_top_level_with_its_bottom_level(scored_items):
    """The paper's Table 3 "ID only" row: a one-reward Pareto selection."""
    items = scored_items()
    pairs = _selector("pareto", rewards=["identity"]).select(items)
    identity = items.scores["identity"]
    assert len(pairs.winners) and np.all(identity[pairs.winners] == identity.max())
    assert np.all(identity[pairs.losers] == identity.min())


def _selector(name, **options):
    entry = get_registry().get("pair_selectors", name)
    return entry.cls(parse(entry.config_class, options))


def test_threshold_finds_exactly_the_pairs_that_satisfy_its_rule(scored_items):
    items = scored_items()
    selector = _selector("threshold", margin=2.0, tolerance=1.0, tolerance_rewards=["dynamic"],
                         winner_sources=["static"], loser_sources=["base"], max_pairs_per_winner=10_000)
    pairs = selector.select(items)
    got = set(zip(pairs.winners.tolist(), pairs.losers.tolist()))
    s = items.scores
    expected = {(w, l) for w, l in itertools.product(range(len(items)), repeat=2)
                if items.sources[w] == "static" and items.sources[l] == "base"
                and s["identity"][w] - s["identity"][l] >= 2.0 and abs(s["dynamic"][w] - s["dynamic"][l]) <= 1.0}
    assert got == expected and len(expected) > 20


def test_threshold_cap_keeps_the_largest_gaps_per_winner(scored_items):
    items = scored_items()
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


def test_pareto_pairs_come_from_the_fronts_and_satisfy_the_rule(scored_items):
    items = scored_items(seed=1)
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


def test_chain_pareto_then_topk_keeps_largest_identity_gaps(scored_items):
    items = scored_items(n=400, seed=2)
    pareto = _selector("pareto", sources=["base", "lora"], depth=3, rule="primary_gain")
    everything = pareto.select(items)
    top = run_chain(items, [pareto, _selector("topk", k=10, reward="identity")])
    gaps = items.scores["identity"][everything.winners] - items.scores["identity"][everything.losers]
    top_gaps = items.scores["identity"][top.winners] - items.scores["identity"][top.losers]
    assert len(top) == 10 and np.allclose(np.sort(top_gaps)[::-1], np.sort(gaps)[::-1][:10])
    with pytest.raises(ConfigError, match="put it after one in the chain"):
        _selector("topk").select(items)


def test_filtering_candidates_applies_the_same_rule(scored_items):
    items = scored_items()
    candidates = PairIndices(np.arange(0, 100), np.arange(100, 200), np.ones(100))
    threshold = _selector("threshold", margin=2.0, tolerance=9.0)
    kept = threshold.select(items, candidates)
    assert (items.scores["identity"][kept.winners] - items.scores["identity"][kept.losers] >= 2.0).all()
    assert 0 < len(kept) < 100

