"""Does the generic reward-DPO loop raise the reward it selects on? Measured on the miniature world.

Runs ``recipes/miniature-reward-dpo.yaml`` (two rounds on the three actions the pretrained model follows worst)
once per seed (``run.seed``: disjoint sampling seeds, so other samples and pairs; ``trainer.seed``: other training
noise), then compares every
stage's samples with round 0's (the base model) on the same prompt and sampling seed: paired differences, with
95 % t-intervals over all pairs and over the seeds' means. Resumable: finished runs are read, not redone.

    python studies/reward_dpo_miniature.py                 # 3 seeds, about 2 min each on 2 cores
    python studies/reward_dpo_miniature.py --seeds 0 1 2 3 4 --out runs/reward-dpo-study
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from prefopt.files import write_json
from prefopt.report import save_figure

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "miniature-reward-dpo.yaml"
REWARDS = ("action", "motion")


def run_seed(out: Path, seed: int) -> Path:
    name = f"seed{seed}"
    overrides = [f"run.output_dir={out}", f"run.name={name}", f"run.seed={seed}", f"trainer.seed={seed}"]
    result = subprocess.run([sys.executable, "-m", "prefopt", "run", str(RECIPE), *overrides], cwd=ROOT,
                            env={**os.environ}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{result.stderr[-3000:]}")
    return out / name


def stage_scores(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """stage → reward → {"<prompt index>-<sample index>": value} for the samples of the run's current stages (read
    through the run's layout and repository, as the report does)."""
    from prefopt.layout import RunLayout
    from prefopt.repository import MediaRepository

    layout = RunLayout(run)
    index = json.loads(layout.index.read_text())
    digests = {name: layout.current(name).digest for name in index}
    repository = MediaRepository(layout.repository)
    current = {r.id: r for r in repository.items()
               if r.stage == digests.get("final" if r.source.startswith("heldout") else r.source)}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for row in repository.score_rows():
        item = current.get(row["item_id"])
        if item is not None:
            sample = "-".join(item.id.rsplit("-", 2)[1:])  # `<stage>-<hash>-<prompt>-<sample>`
            scores.setdefault(item.source, {}).setdefault(row["reward"], {})[sample] = row["value"]
    return scores


def ordered(stages) -> list[str]:
    """round0, round1, …, final, then the held-out pair."""
    rank = {"final": 10_000, "heldout-base": 10_001, "heldout-final": 10_002}
    return sorted(stages, key=lambda s: rank.get(s, int(s.removeprefix("round")) if s.startswith("round") else 0))


def paired_differences(scores: dict, stage: str, reward: str, baseline: str = "round0") -> np.ndarray:
    """``stage`` − ``baseline`` for every sample both have (same prompt, same sampling seed)."""
    a, b = scores[stage][reward], scores[baseline][reward]
    return np.array([a[k] - b[k] for k in sorted(a) if k in b], dtype=np.float64)


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def summarise(per_seed: dict[int, dict]) -> dict:
    stages = [s for s in ordered(next(iter(per_seed.values()))) if s not in ("round0", "heldout-base")]
    summary = {}
    for stage in stages:
        baseline = "heldout-base" if stage == "heldout-final" else "round0"
        for reward in REWARDS:
            diffs = [paired_differences(scores, stage, reward, baseline) for scores in per_seed.values()]
            summary[f"{stage} − {baseline}, {reward}"] = {
                "pairs": interval(np.concatenate(diffs)), "seeds": interval([d.mean() for d in diffs]),
                "n_pairs": int(sum(len(d) for d in diffs)), "seeds_up": int(sum(d.mean() > 0 for d in diffs)),
            }
    means = {s: {r: float(np.mean([np.mean(list(sc[s][r].values())) for sc in per_seed.values()])) for r in REWARDS}
             for s in ordered(next(iter(per_seed.values())))}
    return {"differences": summary, "means": means, "per_prompt": per_prompt(per_seed, "round0", "final"),
            "per_heldout_prompt": per_prompt(per_seed, "heldout-base", "heldout-final")}


def per_prompt(per_seed: dict[int, dict], baseline: str, stage: str) -> dict[str, dict[str, float]]:
    """Prompt index → ``baseline``'s and ``stage``'s mean action reward over every seed's samples of that prompt."""
    rows: dict[str, dict[str, list[float]]] = {}
    for scores in per_seed.values():
        if baseline not in scores:
            return {}
        for key, before in scores[baseline]["action"].items():
            prompt = key.split("-")[0]
            rows.setdefault(prompt, {baseline: [], stage: []})[baseline].append(before)
            rows[prompt][stage].append(scores[stage]["action"][key])
    return {p: {s: float(np.mean(v)) for s, v in row.items()} for p, row in sorted(rows.items())}


def plot(path: Path, per_seed: dict[int, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = ordered(next(iter(per_seed.values())))
    trained = [i for i, s in enumerate(stages) if not s.startswith("heldout")]
    heldout = [i for i, s in enumerate(stages) if s.startswith("heldout")]
    fig, axes = plt.subplots(1, len(REWARDS), figsize=(11, 3.8), dpi=110)
    for ax, reward in zip(axes, REWARDS):
        for index, (seed, scores) in enumerate(per_seed.items()):
            values = [np.mean(list(scores[s][reward].values())) for s in stages]
            ax.plot(trained, [values[i] for i in trained], marker="o", color=f"C{index}", label=f"seed {seed}")
            ax.plot(heldout, [values[i] for i in heldout], marker="s", ls="--", color=f"C{index}")
        ax.set_xticks(range(len(stages)), stages, fontsize=8)
        ax.set_title(f"{reward} (1–10), mean of 24 samples per stage")
        ax.legend(fontsize=8)
    fig.suptitle("reward-DPO on the miniature world: round 0 = base model, final = after two rounds; "
                 "dashed: held-out prompts, base → final")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reward-dpo-study")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "reward_dpo_miniature.png")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the runs are written from the repository root and read from here
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = stage_scores(run_seed(args.out, seed))
        print(f"seed {seed}: done", flush=True)
    summary = summarise(per_seed)
    plot(args.figure, per_seed)
    write_json(args.out / "summary.json", summary)
    for stage, means in summary["means"].items():
        print(f"{stage:>7}: " + ", ".join(f"{r} {v:.2f}" for r, v in means.items()))
    for prompt, row in [*summary["per_prompt"].items(), *summary["per_heldout_prompt"].items()]:
        print(f"prompt {prompt}: action " + " → ".join(f"{s} {v:.2f}" for s, v in row.items()))
    for label, row in summary["differences"].items():
        (m, h), (ms, hs) = row["pairs"], row["seeds"]
        print(f"{label}: {m:+.2f} ± {h:.2f} over {row['n_pairs']} pairs; {ms:+.2f} ± {hs:.2f} over seeds "
              f"({row['seeds_up']}/{len(args.seeds)} up)")


if __name__ == "__main__":
    main()
