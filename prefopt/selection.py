"""Pair selection: non-dominated sorting, selector chains, stage unions, and their outputs.

A *stage* runs a chain of selectors (the first generates pairs from the scored items, the next ones
filter them, e.g. ``pareto → topk``); stage results unite (MagicID: P = P_id ∪ P_dy). Each stage
writes a pairs parquet and a PNG of the items on two reward axes with the fronts and chosen pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prefopt.errors import PrefoptError
from prefopt.files import write_parquet
from prefopt.interfaces import Pair, PairIndices, ScoredItems
from prefopt.layout import StageFolder
from prefopt.report import save_figure

STRICT_BLOCK = 512  # rows of the strict-dominance matrix built at once (bounds the N×M temporary)


def nondominated_fronts(scores: np.ndarray, maximize: bool = True, n_fronts: int | None = None) -> list[np.ndarray]:
    """Index arrays of the Pareto fronts of ``scores`` (``[N, M]``), best front first.

    Standard dominance: a dominates b when it is at least as good on every column and better on one.
    Identical points share a front. Uses pymoo's non-dominated sorting (which minimises).
    """
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, M], got shape {scores.shape}")
    if len(scores) == 0:
        return []
    objective = -scores if maximize else scores
    fronts = NonDominatedSorting().do(objective, n_stop_if_ranked=None, n_fronts=n_fronts)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in fronts]


def strict_fronts(scores: np.ndarray, maximize: bool = True, n_fronts: int | None = None) -> list[np.ndarray]:
    """Fronts under the paper's dominance (MagicID Sec. 3.4: a ≻ b iff R(a) > R(b) for *every* reward).

    The first front is every item that no item beats on all rewards at once: the weakly Pareto-optimal set,
    a superset of the standard first front whenever scores tie (common on clipped 1–10 scales). Later fronts
    peel the same way. Vectorised: an N×N "beats on every reward" matrix, built in row blocks.
    """
    scores = np.asarray(scores, dtype=np.float64)
    s = scores if maximize else -scores
    n = len(s)
    beats = np.zeros((n, n), dtype=bool)  # beats[i, j]: i is better than j on every reward
    for start in range(0, n, STRICT_BLOCK):
        beats[start : start + STRICT_BLOCK] = np.all(s[start : start + STRICT_BLOCK, None, :] > s[None, :, :], axis=-1)
    beaten_by = beats.sum(axis=0)
    remaining = np.ones(n, dtype=bool)
    fronts: list[np.ndarray] = []
    while remaining.any() and (n_fronts is None or len(fronts) < n_fronts):
        front = remaining & (beaten_by == 0)
        fronts.append(np.flatnonzero(front))
        remaining &= ~front
        beaten_by -= beats[front].sum(axis=0)
    return fronts


def upper_and_lower_fronts(scores: np.ndarray, depth: int = 1, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The upper frontier (best ``depth`` fronts when maximising every reward) and the lower frontier.

    The lower frontier is the non-dominated set of the *reversed* problem: the items that no other item
    is worse than on every reward (minimising every reward), i.e. the worst-ranked compromise set.
    ``strict`` uses the paper's dominance (:func:`strict_fronts`), else pymoo's standard fronts.
    """
    sort = strict_fronts if strict else nondominated_fronts
    upper = sort(scores, maximize=True, n_fronts=depth)
    lower = sort(scores, maximize=False, n_fronts=depth)
    return np.concatenate(upper[:depth]), np.concatenate(lower[:depth])


def dominates(a: np.ndarray, b: np.ndarray, strict: bool = False) -> np.ndarray:
    """Row-wise: does a dominate b (``[..., M]`` arrays)? ``strict``: better on every reward (the paper)."""
    if strict:
        return np.all(a > b, axis=-1)
    return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


def run_chain(items: ScoredItems, selectors: Sequence) -> PairIndices:
    """Run a selector chain: the first generates pairs, each later one filters the previous result."""
    pairs: PairIndices | None = None
    for selector in selectors:
        pairs = selector.select(items, pairs)
    return pairs if pairs is not None else PairIndices.empty()


def unite(parts: Sequence[tuple[ScoredItems, PairIndices, str]]) -> list[Pair]:
    """Union of stage results as Pair records, duplicates (same winner and loser) kept once."""
    seen: set[tuple[str, str]] = set()
    result: list[Pair] = []
    for items, pairs, stage in parts:
        for pair in to_records(items, pairs, stage):
            if (pair.winner_id, pair.loser_id) not in seen:
                seen.add((pair.winner_id, pair.loser_id))
                result.append(pair)
    return result


def to_records(items: ScoredItems, pairs: PairIndices, selector: str, prompt_from: str = "loser") -> list[Pair]:
    """Pair records with per-reward deltas (winner − loser); the prompt is the loser's by default."""
    prompts = items.prompts[pairs.losers if prompt_from == "loser" else pairs.winners]
    deltas = {name: col[pairs.winners] - col[pairs.losers] for name, col in items.scores.items()}
    return [
        Pair(winner_id=str(items.ids[w]), loser_id=str(items.ids[l]), prompt=str(p), weight=float(wt),
             selector=selector, deltas={name: float(d[i]) for name, d in deltas.items()})
        for i, (w, l, p, wt) in enumerate(zip(pairs.winners, pairs.losers, prompts, pairs.weights))
    ]


def chain_pairs(items: ScoredItems, selectors: Sequence, per_prompt: bool = False) -> PairIndices:
    """A selector chain's pairs. With ``per_prompt``, the first selector makes pairs within each prompt's items
    (indices mapped back into ``items``) and the filters then run on all of them, so `topk` keeps the k best pairs
    overall, not k per prompt."""
    if not per_prompt:
        return run_chain(items, selectors)
    parts = []
    for prompt in dict.fromkeys(items.prompts):
        rows = np.flatnonzero(items.prompts == prompt)
        made = selectors[0].select(items.subset(items.prompts == prompt))
        parts.append((rows[made.winners], rows[made.losers], made.weights))
    pairs = PairIndices(*(np.concatenate(column) for column in zip(*parts))) if parts else PairIndices.empty()
    for selector in selectors[1:]:
        pairs = selector.select(items, pairs)
    return pairs


def select_into(folder: StageFolder, items: ScoredItems, specs: Sequence, *, title: str, plot_x: str, plot_y: str,
                options: str, per_prompt: bool = False, pool: Sequence[str] = (), also: Sequence[Pair] = (),
                keep_earlier: bool = False) -> list[Pair]:
    """Run a chain of selector specs on scored items and write what it chose into a stage folder: the pairs
    (``pairs.parquet``, with ``also``'s pairs added, e.g. MagicID's P = P_dy ∪ P_id) and their picture. A selection
    with no pair is one sentence naming ``options`` (where its settings are); its picture is ``pairs-empty.png``,
    beside an earlier selection's, and an earlier attempt's pairs in this folder go (they came from other scores),
    unless ``keep_earlier`` (a re-selection keeps the last one that chose pairs)."""
    from prefopt.interfaces import ShowsFrontiers
    from prefopt.plugins import get_registry

    selectors = [get_registry().create("pair_selectors", spec.name, spec.options) for spec in specs]
    chosen = chain_pairs(items, selectors, per_prompt)
    records = unite([(items, chosen, f"{title}:" + "→".join(spec.name for spec in specs))])
    seen = {(p.winner_id, p.loser_id) for p in records}
    records += [p for p in also if (p.winner_id, p.loser_id) not in seen]
    fronts = selectors[0].frontiers(items) if isinstance(selectors[0], ShowsFrontiers) else None
    plot = folder.pairs_plot if records else folder.empty_pairs_plot
    plot_selection(plot, items, chosen, plot_x, plot_y, title, fronts, pool=pool, trained=len(records))
    if not records:
        if not keep_earlier:
            folder.pairs.unlink(missing_ok=True)
        raise PrefoptError(f"{title} selected no pairs from {len(items)} scored items; loosen the options under "
                           f"`{options}` (see {plot}).")
    write_pairs(folder.pairs, records)
    return records


def write_pairs(path: str | os.PathLike, pairs: Sequence[Pair]) -> Path:
    """Pairs parquet: winner_id, loser_id, prompt, selector, weight, delta_<reward> (atomic write)."""
    import pyarrow as pa

    reward_names = sorted({name for p in pairs for name in p.deltas})
    columns = {
        "winner_id": [p.winner_id for p in pairs], "loser_id": [p.loser_id for p in pairs],
        "prompt": [p.prompt for p in pairs], "selector": [p.selector for p in pairs],
        "weight": [p.weight for p in pairs],
        **{f"delta_{n}": [p.deltas.get(n, float("nan")) for p in pairs] for n in reward_names},
    }
    return write_parquet(path, pa.table(columns))


def read_pairs_table(path: str | os.PathLike) -> list[Pair]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise PrefoptError(f"pairs file `{path}` cannot be read ({e}).") from e
    return [Pair(winner_id=r["winner_id"], loser_id=r["loser_id"], prompt=r["prompt"], weight=r["weight"],
                 selector=r["selector"], deltas={k[6:]: v for k, v in r.items() if k.startswith("delta_")})
            for r in rows]


def _focus(ax, xs: np.ndarray, ys: np.ndarray, in_pool: np.ndarray, pairs: PairIndices) -> None:
    """Limit the view to the pool and the pairs' ends (with a margin); say how many items lie outside."""
    shown = in_pool.copy()
    shown[pairs.winners] = shown[pairs.losers] = True
    if not shown.any() or shown.all():
        return
    pad_x = max(0.05, 0.08 * np.ptp(xs[shown]))
    pad_y = max(0.05, 0.08 * np.ptp(ys[shown]))
    ax.set_xlim(xs[shown].min() - pad_x, xs[shown].max() + pad_x)
    ax.set_ylim(ys[shown].min() - pad_y, ys[shown].max() + pad_y)
    x0, x1, y0, y1 = (*ax.get_xlim(), *ax.get_ylim())
    outside = int((~((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))).sum())
    if outside:
        ax.annotate(f"{outside} item(s) of other sources outside this view", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=8, color="0.3")


def plot_selection(path: str | os.PathLike, items: ScoredItems, pairs: PairIndices, x: str, y: str,
                   title: str, fronts: tuple[np.ndarray, np.ndarray] | None = None,
                   pool: Sequence[str] = (), trained: int | None = None) -> Path:
    """Scatter of the items on two rewards by source, the chosen pairs, and (if given) the frontier items.

    Fronts computed on more than two rewards are not curves in this projection, so frontier members are
    marked rather than joined. ``pool`` (sources) sets the view to the items the selection drew from, so one
    far-away item of another source cannot squeeze them into a corner; ``trained`` is the number of pairs
    the stage trains on when it adds pairs selected elsewhere (MagicID's P = P_dy ∪ P_id).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in items.scores or y not in items.scores:
        raise PrefoptError(f"cannot plot `{x}` against `{y}`: the items are scored on {sorted(items.scores)}.")
    xs, ys = items.scores[x], items.scores[y]
    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=110)
    shown = pairs.take(np.arange(min(len(pairs), 300)))  # a readable number of pair lines
    for w, l in zip(shown.winners, shown.losers):
        ax.plot([xs[l], xs[w]], [ys[l], ys[w]], color="0.6", lw=0.6, alpha=0.6, zorder=1)
    for source in sorted(set(items.sources)):
        mask = items.sources == source
        ax.scatter(xs[mask], ys[mask], s=18, label=f"{source} ({mask.sum()})", zorder=2)
    if fronts is not None:
        upper, lower = fronts
        ax.scatter(xs[upper], ys[upper], marker="^", s=70, facecolors="none", edgecolors="k", lw=1.0,
                   label=f"upper frontier ({len(upper)})", zorder=3)
        ax.scatter(xs[lower], ys[lower], marker="v", s=70, facecolors="none", edgecolors="0.4", lw=1.0,
                   label=f"lower frontier ({len(lower)})", zorder=3)
    if len(pairs):
        ax.scatter(xs[pairs.winners], ys[pairs.winners], s=46, facecolors="none", edgecolors="tab:green",
                   lw=1.5, label="winners", zorder=4)
        ax.scatter(xs[pairs.losers], ys[pairs.losers], marker="x", s=30, color="tab:red", label="losers", zorder=4)
    ax.set_xlabel(f"{x} reward (1–10)")
    ax.set_ylabel(f"{y} reward (1–10)")
    _focus(ax, xs, ys, np.isin(items.sources, list(pool)) if pool else np.ones(len(items), bool), pairs)
    extra = f" ({trained} trained with the earlier stage's)" if trained is not None and trained != len(pairs) else ""
    ax.set_title(f"{title}: {len(pairs)} pairs{extra} from {len(items)} items")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
