"""Pair selection at scale: MagicID's two stages on synthetic scored repositories.

Stage 1: threshold (static winners vs base losers, ΔID ≥ 1, |Δdynamic| ≤ 1.5, cap 8 per winner).
Stage 2: pareto (base ∪ lora, upper vs lower frontier on three rewards) → top 100 by ΔID.
The baseline is the straightforward stage 1: one full winners × losers boolean matrix, then the cap by
sorting each row, run where it fits in memory; both must give the same pairs.

    python benchmarks/selection.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from prefopt.config import parse
from prefopt.interfaces import PairIndices, ScoredItems
from prefopt.plugins import get_registry
from prefopt.selection import run_chain

BASELINE_LIMIT = 20_000


def synthetic(n: int, seed: int = 0) -> ScoredItems:
    rng = np.random.default_rng(seed)
    sources = np.array(["static", "base", "lora"], dtype=object)[rng.integers(0, 3, n)]
    return ScoredItems(
        ids=np.array([f"i{i}" for i in range(n)], dtype=object), sources=sources,
        prompts=np.array([f"p{i % 20}" for i in range(n)], dtype=object),
        scores={r: rng.uniform(1, 10, n) for r in ("identity", "dynamic", "semantic")},
    )


def selector(name: str, **options):
    entry = get_registry().get("pair_selectors", name)
    return entry.cls(parse(entry.config_class, options))


STAGE1 = dict(margin=1.0, tolerance=1.5, tolerance_rewards=["dynamic"], winner_sources=["static"],  # noqa: C408
              loser_sources=["base"], max_pairs_per_winner=8)


def baseline_stage1(items: ScoredItems) -> PairIndices:
    w = np.flatnonzero(items.sources == "static")
    l = np.flatnonzero(items.sources == "base")
    ident, dyn = items.scores["identity"], items.scores["dynamic"]
    valid = (ident[w][:, None] - ident[l][None, :] >= 1.0) & (np.abs(dyn[w][:, None] - dyn[l][None, :]) <= 1.5)
    gaps = np.where(valid, ident[w][:, None] - ident[l][None, :], -np.inf)
    order = np.argsort(-gaps, axis=1, kind="stable")[:, :8]
    rows = np.repeat(np.arange(len(w)), order.shape[1])
    cols = order.ravel()
    keep = np.isfinite(gaps[rows, cols])
    return PairIndices(w[rows[keep]], l[cols[keep]], np.ones(int(keep.sum())))


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    print("| items | stage 1 s | stage 1 pairs | baseline stage 1 s | speed-up | stage 2 s | stage 2 pairs | total s |")
    print("|---|---|---|---|---|---|---|---|")
    run_chain(synthetic(1000), [selector("threshold", **STAGE1)])  # warm up imports and caches
    for n in args.sizes:
        items = synthetic(n)
        stage1, t1 = timed(run_chain, items, [selector("threshold", **STAGE1)])
        chain2 = [selector("pareto", sources=["base", "lora"]), selector("topk", k=100)]
        stage2, t2 = timed(run_chain, items, chain2)
        if n <= BASELINE_LIMIT:
            base, tb = timed(baseline_stage1, items)
            same = {(a, c, items.scores["identity"][c]) for a, c in zip(stage1.winners, stage1.losers)}
            ref = {(a, c, items.scores["identity"][c]) for a, c in zip(base.winners, base.losers)}
            # Ties in identity gap may pick different losers; the gaps chosen per winner must agree.
            ok = sorted((a, round(g, 9)) for a, _, g in same) == sorted((a, round(g, 9)) for a, _, g in ref)
            baseline = f"{tb:.3f}{'' if ok else ' (MISMATCH)'}"
            ratio = f"{tb / t1:.0f}×"
        else:
            baseline, ratio = "too large for one matrix", "–"
        print(f"| {n:,} | {t1:.3f} | {len(stage1):,} | {baseline} | {ratio} | {t2:.3f} | {len(stage2)} | {t1 + t2:.3f} |")


if __name__ == "__main__":
    main()
