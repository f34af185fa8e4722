"""Does the generic reward-DPO loop raise the reward it selects on? Measured on the miniature world, out of sample.

Runs ``recipes/miniature-reward-dpo.yaml`` as shipped (two rounds on the three actions the pretrained model follows
worst) once per seed: ``run.seed`` gives disjoint sampling seeds (so other samples and pairs) and ``trainer.seed``
other training noise. Each round samples the same seeds, so the rounds' own samples are *in sample*: their pairs
trained the model. The claims are therefore tested out of sample, by the online-RL study's evaluation
(``studies/online_rl_miniature.py``, ``evaluate``): the final LoRA and the base model sample the three trained
prompts and three held-out actions with 8 odd seeds per prompt that no round used, scored by the action classifier
(the reward selected on) and by the judge (a second classifier, never selected on). The run is the unit: mean ±
95 % t-interval over the runs' gains (n = runs). The in-sample stage means are reported beside, labelled so.
Claims are fixed below before the numbers; one-sided t-tests over runs, Holm-corrected. Every process runs one
thread (CPU time as in the online-RL study). Resumable: finished runs and evaluations are read, not redone; the
base model's evaluation is shared with the online-RL study through ``--eval-cache``.

    python studies/reward_dpo_miniature.py                         # seeds 1–5, about 4 CPU-minutes each
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from study_stats import interval  # mean and 95 % t-interval half-width over runs

from prefopt.files import write_json, write_text
from prefopt.report import save_figure

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "miniature-reward-dpo.yaml"
REWARDS = ("action", "motion")
ARM = "reward-DPO, 2 rounds"
CLAIMS = [  # written before this design's numbers were seen
    (ARM, "action", "trained", +1, "two rounds raise the reward selected on, on the trained prompts (fresh seeds)"),
    (ARM, "judge", "trained", +1, "the independent judge confirms that gain"),
    (ARM, "action", "heldout", 0, "no harm on held-out prompts"),
]


def run_seed(out: Path, seed: int) -> Path:
    name = f"seed{seed}"
    overrides = [f"run.output_dir={out}", f"run.name={name}", f"run.seed={seed}", f"trainer.seed={seed}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "prefopt", "run", str(RECIPE), *overrides], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
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


def in_sample(per_seed: dict[int, dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """stage → reward → mean ± half-width over runs of each run's mean (the rounds' own samples: in sample)."""
    stages = ordered(next(iter(per_seed.values())))
    return {stage: {reward: interval([np.mean(list(scores[stage][reward].values())) for scores in per_seed.values()])
                    for reward in REWARDS} for stage in stages}


def markdown(runs: dict, per_seed: dict[int, dict]) -> str:
    """The out-of-sample table and claims (the online-RL study's, over this one arm), then the in-sample means."""
    import online_rl_miniature as evaluation

    text = evaluation.markdown(runs, float("nan"), CLAIMS).split("\n", 1)[1]
    intro = (f"Out of sample: final − base on {evaluation.EVAL_SEEDS} fresh seeds per prompt, mean ± 95 % t-interval "
             f"over runs (n = {len(per_seed)}).")
    in_sample_intro = ("In sample (the rounds' own samples, which their pairs came from; mean ± 95 % t-interval over "
                       "runs):")
    lines = [intro, text, in_sample_intro, "", "| stage | action | motion |", "|---|---|---|"]
    for stage, by_reward in in_sample(per_seed).items():
        lines.append(f"| {stage} | " + " | ".join(f"{m:.2f} ± {h:.2f}" for m, h in by_reward.values()) + " |")
    return "\n".join(lines) + "\n"


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reward-dpo-study")
    parser.add_argument("--eval-cache", type=Path, default=ROOT / "runs" / "online-rl-study",
                        help="where evaluations are kept; the online-RL study's, to share the base model's")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "reward_dpo_miniature.png")
    args = parser.parse_args()
    import torch

    sys.path.insert(0, str(ROOT / "studies"))
    import online_rl_miniature as evaluation

    torch.set_num_threads(1)
    args.out, cache = args.out.resolve(), args.eval_cache.resolve()
    per_seed, runs = {}, {"__base__": {}, ARM: {}}
    for seed in args.seeds:
        evaluation.check_unseen(seed)
        run = run_seed(args.out, seed)
        per_seed[seed] = stage_scores(run)
        lora, cpu_seconds, curve = evaluation.training(run)
        runs[ARM][seed] = {"length": 2, "cpu_seconds": cpu_seconds, "curve": curve,
                           "scores": evaluation.evaluate(cache, seed, "reward-dpo-2-rounds", lora)}
        runs["__base__"][seed] = {"scores": evaluation.evaluate(cache, seed, "base", None)}
        print(f"seed {seed}: done ({cpu_seconds / 60:.1f} CPU-min)", flush=True)
    write_json(args.out / "study.json", {"runs": runs, "in_sample": per_seed})
    plot(args.figure, per_seed)
    write_text(args.out / "study.md", markdown(runs, per_seed))
    print((args.out / "study.md").read_text())


if __name__ == "__main__":
    main()
