"""First-party pair selectors: threshold (with tolerance), pareto (upper vs lower frontier), topk.

Every selector is a rule over (winner, loser) pairs. Without candidates it generates the pairs that
satisfy it; given candidates from an earlier selector in a chain, it keeps those that satisfy it.
Pair formation is vectorised in blocks with a cap per winner, never an O(N²) Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from prefopt.errors import ConfigError
from prefopt.hookspecs import hookimpl
from prefopt.interfaces import FILTERS_PAIRS, MAKES_PAIRS, PairIndices, ScoredItems
from prefopt.selection import dominates, upper_and_lower_fronts

WINNER_BLOCK = 1024
LOSER_BLOCK = 4096
FIRST_LOSER_CHUNK = 128


def _source_indices(items: ScoredItems, sources: list[str]) -> np.ndarray:
    mask = np.isin(items.sources, sources) if sources else np.ones(len(items), bool)
    return np.flatnonzero(mask)


def _column(items: ScoredItems, reward: str, option: str) -> np.ndarray:
    if reward not in items.scores:
        raise ConfigError(f"`{option}` names reward `{reward}`, but the items are scored on {sorted(items.scores)}.")
    return items.scores[reward]


@dataclass
class ThresholdConfig:
    reward: str = field(default="identity", metadata={"names": "reward", "help": "Primary reward: winner − loser must be ≥ margin."})
    margin: float = field(default=1.0, metadata={"help": "Minimum primary-reward difference (1–10 scale)."})
    tolerance: float = field(
        default=1.5, metadata={"help": "Maximum |difference| allowed on each tolerance reward (1–10 scale)."}
    )
    tolerance_rewards: list[str] = field(
        default_factory=list, metadata={"names": "reward", "help": "Rewards held within the tolerance; empty means every other reward."}
    )
    winner_sources: list[str] = field(default_factory=list, metadata={"names": "source", "help": "Sources winners come from; empty: any."})
    loser_sources: list[str] = field(default_factory=list, metadata={"names": "source", "help": "Sources losers come from; empty: any."})
    max_pairs_per_winner: int = field(
        default=8, metadata={"help": "Cap per winner; the losers with the largest primary gap are kept."}
    )

    def __post_init__(self) -> None:
        if self.margin < 0 or self.tolerance < 0 or self.max_pairs_per_winner < 1:
            raise ValueError("`margin` and `tolerance` must be ≥ 0 and `max_pairs_per_winner` ≥ 1, got "
                             f"{self.margin}, {self.tolerance}, {self.max_pairs_per_winner}")


class ThresholdSelector:
    """Pairs whose primary reward differs by at least a margin while the others stay within a tolerance."""

    name = "threshold"
    Config = ThresholdConfig
    roles = frozenset({MAKES_PAIRS, FILTERS_PAIRS})

    def __init__(self, config: ThresholdConfig):
        self.config = config

    def _others(self, items: ScoredItems) -> list[np.ndarray]:
        names = self.config.tolerance_rewards or [n for n in items.scores if n != self.config.reward]
        return [_column(items, n, "tolerance_rewards") for n in names]

    def _valid(self, items: ScoredItems, w: np.ndarray, l: np.ndarray) -> np.ndarray:
        """The rule on broadcastable index arrays."""
        primary = _column(items, self.config.reward, "reward")
        ok = (primary[w] - primary[l] >= self.config.margin) & (w != l)
        for other in self._others(items):
            ok &= np.abs(other[w] - other[l]) <= self.config.tolerance
        return ok

    def select(self, items: ScoredItems, candidates: PairIndices | None = None) -> PairIndices:
        if candidates is not None:
            return candidates.take(self._valid(items, candidates.winners, candidates.losers))
        winners = _source_indices(items, self.config.winner_sources)
        losers = _source_indices(items, self.config.loser_sources)
        primary = _column(items, self.config.reward, "reward")
        losers = losers[np.argsort(primary[losers], kind="stable")]  # largest gaps first for every winner
        found_w, found_l = [], []
        for start in range(0, len(winners), WINNER_BLOCK):
            block = winners[start : start + WINNER_BLOCK]
            w, l = self._pairs_for_block(items, block, losers, primary)
            found_w.append(w)
            found_l.append(l)
        w = np.concatenate(found_w) if found_w else np.zeros(0, np.int64)
        l = np.concatenate(found_l) if found_l else np.zeros(0, np.int64)
        return PairIndices(w, l, np.ones(len(w)))

    def _pairs_for_block(self, items, block, sorted_losers, primary) -> tuple[np.ndarray, np.ndarray]:
        """Scan losers in ascending primary order, in growing chunks, only for winners still short of pairs."""
        need = np.full(len(block), self.config.max_pairs_per_winner)
        out_w, out_l = [], []
        start, size = 0, FIRST_LOSER_CHUNK
        while start < len(sorted_losers):
            active = np.flatnonzero(need > 0)
            if not len(active):
                break
            chunk = sorted_losers[start : start + size]
            if primary[chunk[0]] > primary[block[active]].max() - self.config.margin:
                break  # sorted ascending: no later loser is far enough below any remaining winner
            rows_block = block[active]
            valid = self._valid(items, rows_block[:, None], chunk[None, :])
            keep = valid & (np.cumsum(valid, axis=1) <= need[active][:, None])
            rows, cols = np.nonzero(keep)
            out_w.append(rows_block[rows])
            out_l.append(chunk[cols])
            need[active] -= keep.sum(axis=1)
            start, size = start + size, min(size * 2, LOSER_BLOCK)
        if not out_w:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_w), np.concatenate(out_l)


@dataclass
class ParetoConfig:
    rewards: list[str] = field(
        default_factory=lambda: ["identity", "dynamic", "semantic"],
        metadata={"names": "reward", "help": "Rewards spanning the Pareto space (all maximised)."},
    )
    sources: list[str] = field(default_factory=list, metadata={"names": "source", "help": "Sources in the candidate pool; empty: any."})
    depth: int = field(default=1, metadata={"help": "How many fronts form the upper (and the lower) frontier."})
    dominance: Literal["standard", "strict"] = field(
        default="standard",
        metadata={"help": "`standard`: ≥ on all, > on one (pymoo's fronts); `strict`: > on every reward, the paper's "
                          "definition, whose fronts are the weakly Pareto-optimal sets (larger when scores tie)."},
    )
    rule: Literal["dominates", "primary_gain"] = field(
        default="dominates",
        metadata={"help": "A pair needs the winner to dominate the loser, or only a gain on `primary`."},
    )
    primary: str | None = field(
        default=None, metadata={"names": "reward", "help": "Reward for the `primary_gain` rule; empty: the first of `rewards`."})

    def __post_init__(self) -> None:
        # One reward is allowed: its fronts are the score levels (the paper's Table 3 "ID only" row).
        if self.depth < 1 or not self.rewards:
            raise ValueError(f"`depth` must be ≥ 1 and `rewards` name at least one reward, got {self.depth}, {self.rewards}")


class ParetoSelector:
    """Winners from the upper Pareto frontier, losers from the lower one (pymoo's fronts, or the paper's strict ones)."""

    name = "pareto"
    Config = ParetoConfig
    roles = frozenset({MAKES_PAIRS, FILTERS_PAIRS})

    def __init__(self, config: ParetoConfig):
        self.config = config

    def _matrix(self, items: ScoredItems) -> np.ndarray:
        return np.column_stack([_column(items, r, "rewards") for r in self.config.rewards])

    def _valid(self, items: ScoredItems, w: np.ndarray, l: np.ndarray) -> np.ndarray:
        matrix = self._matrix(items)
        if self.config.rule == "dominates":
            ok = dominates(matrix[w], matrix[l], strict=self.config.dominance == "strict")
        else:
            primary = _column(items, self.config.primary or self.config.rewards[0], "primary")
            ok = primary[w] > primary[l]
        return ok & (w != l)

    def frontiers(self, items: ScoredItems) -> tuple[np.ndarray, np.ndarray]:
        """(upper, lower) frontier item indices within the candidate pool."""
        pool = _source_indices(items, self.config.sources)
        if len(pool) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        upper, lower = upper_and_lower_fronts(self._matrix(items)[pool], self.config.depth,
                                              strict=self.config.dominance == "strict")
        return pool[upper], pool[lower]

    def select(self, items: ScoredItems, candidates: PairIndices | None = None) -> PairIndices:
        upper, lower = self.frontiers(items)
        if candidates is not None:
            keep = np.isin(candidates.winners, upper) & np.isin(candidates.losers, lower)
            keep &= self._valid(items, candidates.winners, candidates.losers)
            return candidates.take(keep)
        w, l = (a.ravel() for a in np.meshgrid(upper, lower, indexing="ij"))
        keep = self._valid(items, w, l)
        return PairIndices(w[keep], l[keep], np.ones(int(keep.sum())))


@dataclass
class TopKConfig:
    k: int = field(default=100, metadata={"help": "Pairs kept (paper: 100)."})
    reward: str = field(default="identity", metadata={"names": "reward", "help": "Pairs ranked by winner − loser on this reward."})

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"`k` must be at least 1, got {self.k}")


class TopKSelector:
    """Keeps the K candidate pairs with the largest difference on one reward (chain it after another selector)."""

    name = "topk"
    Config = TopKConfig
    roles = frozenset({FILTERS_PAIRS})

    def __init__(self, config: TopKConfig):
        self.config = config

    def select(self, items: ScoredItems, candidates: PairIndices | None = None) -> PairIndices:
        if candidates is None:
            raise ConfigError("selector `topk` ranks pairs from an earlier selector; put it after one in the chain "
                              "(e.g. `[pareto, topk]`).")
        column = _column(items, self.config.reward, "reward")
        delta = column[candidates.winners] - column[candidates.losers]
        order = np.argsort(-delta, kind="stable")[: self.config.k]
        return candidates.take(order)


@hookimpl
def register_pair_selectors(register):
    register(ThresholdSelector)
    register(ParetoSelector)
    register(TopKSelector)
