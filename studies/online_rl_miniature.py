"""Online RL against reward-DPO rounds at equal CPU minutes, on the miniature world's worst-followed prompts.

    python studies/online_rl_miniature.py --out runs/online-rl-study              # 5 seeds, every arm
    python studies/online_rl_miniature.py --out runs/online-rl-study --budget 5   # CPU minutes of training per run

Arms: reward-DPO rounds (``recipes/miniature-reward-dpo.yaml``), ``grpo``, ``grpo`` with an SDE window of 2 steps,
``nft`` and ``awm`` (``recipes/miniature-online-rl.yaml``), each trained on jump / nod / spin with the action
classifier as the reward. Equal compute: a pilot run of each arm (seed 99, never a study seed) measures the CPU
seconds of one epoch (one round for reward-DPO); each arm then trains for as many epochs (rounds) as fit
``--budget`` CPU minutes. Every process runs one thread: CPU time is then the run's own work, read from the stage
records, and other work on the machine barely changes it (with several threads, waiting threads spin and count,
which made one pilot round cost 141 CPU-s alone and 249 beside a test run); the table reports what each run used.
Two invocations with disjoint ``--arms`` may run side by side (one per core); a last one with every arm collects.

Evaluation, the same for every arm: the trained LoRA and the base model sample the three trained prompts and three
held-out actions with 8 seeds each that training never used (odd seeds; training rollouts and reward-DPO rounds use
even or disjoint ones), and the action classifier (the optimised reward) and the judge (a second action
classifier trained from another seed, never optimised against) score them. A run's gain is the mean over its
evaluation samples of trained minus base. The run is the unit of analysis: tables give mean ± 95 % t-interval over
the seeds' gains (t with n − 1 degrees of freedom). The claims below were written before any study number was
seen; the verdicts say which held and which did not. Resumable: finished runs and evaluations are read, not redone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from study_stats import holm, interval  # over independent runs

from prefopt.files import write_json, write_text
from prefopt.report import pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
ONLINE = ROOT / "recipes" / "miniature-online-rl.yaml"
REWARD_DPO = ROOT / "recipes" / "miniature-reward-dpo.yaml"
PILOT_SEED = 99
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ARMS = {  # name → (recipe, overrides); online-RL arms keep the recipe's own evaluation negligible (the study evaluates)
    "reward-DPO": (REWARD_DPO, ["heldout_prompts=[]"]),
    "grpo": (ONLINE, ["trainer.algorithm=grpo"]),
    "grpo, SDE window 2": (ONLINE, ["trainer.algorithm=grpo", "trainer.sde_window=2"]),
    "nft": (ONLINE, ["trainer.algorithm=nft"]),
    "awm": (ONLINE, ["trainer.algorithm=awm"]),
}
ONLINE_QUIET = ["evaluation.seeds_per_prompt=1", "evaluation.num_inference_steps=1", "heldout_prompts=[]"]
TRAINED = ["a person jumps up and down", "a person nods their head", "a person spins around"]
HELDOUT = ["a person walks to the left", "a person comes closer to the camera", "a person stands still"]
EVAL_SEEDS = 8
SCORERS = {"action": "package://prefopt_plugins/miniature/weights/action",
           "judge": "package://prefopt_plugins/miniature/weights/judge/action"}
CLAIMS = [  # written before the study's numbers were seen
    ("grpo", "action", "trained", +1, "GRPO raises the optimised reward on the trained prompts (fresh seeds)"),
    ("nft", "action", "trained", +1, "DiffusionNFT raises the optimised reward on the trained prompts"),
    ("grpo", "judge", "trained", +1, "GRPO's gain is confirmed by the independent judge"),
    ("nft", "judge", "trained", +1, "DiffusionNFT's gain is confirmed by the independent judge"),
    ("grpo", "action", "heldout", 0, "GRPO does not harm prompts it never trained on"),
    ("reward-DPO", "action", "trained", +1, "reward-DPO rounds raise the optimised reward at the same CPU budget"),
]


# --- running -------------------------------------------------------------------------------------------------------


def run(out: Path, arm: str, seed: int, length: int | None) -> Path:
    """One training run of an arm (resumable); ``length``: epochs (rounds for reward-DPO), None for the pilot's 2."""
    recipe, overrides = ARMS[arm]
    length = length or (1 if recipe == REWARD_DPO else 2)
    name = f"{slug(arm)}-seed{seed}-{length}"  # another budget is another run, never a continued or reused one
    size = [f"rounds={length}"] if recipe == REWARD_DPO else [f"trainer.epochs={length}", *ONLINE_QUIET]
    seeds = [f"run.seed={seed}"] + ([f"trainer.seed={seed}"] if recipe == REWARD_DPO else [])
    command = [sys.executable, "-m", "prefopt", "run", str(recipe), f"run.output_dir={out / 'runs'}",
               f"run.name={name}", *seeds, *overrides, *size]
    env = {**os.environ, **ONE_THREAD}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return out / "runs" / name


def check_unseen(seed: int) -> None:
    """No evaluation seed was a training seed: online RL trains on even seeds (evaluation's are odd); reward-DPO's
    rounds sample with seed·10⁶ + index, checked here against this seed's evaluation seeds."""
    from prefopt.online_rl import evaluation_seed

    rounds = {seed * 1_000_000 + i for i in range(len(TRAINED) * 8)}
    evaluation = {evaluation_seed(seed, p, j) for p in range(len(HELDOUT)) for j in range(EVAL_SEEDS)}
    if rounds & evaluation:
        raise SystemExit(f"seed {seed}: an evaluation seed was also a reward-DPO sampling seed")


def slug(arm: str) -> str:
    return arm.lower().replace(", ", "-").replace(" ", "-")


def training(run_dir: Path) -> tuple[Path, float, list[tuple[float, float]]]:
    """The run's final LoRA, its training CPU seconds, and (CPU minutes, mean action reward of the samples it drew)
    along the way, read from its stage records and metrics."""
    from prefopt.layout import RunLayout

    layout = RunLayout(run_dir)
    records = json.loads(layout.index.read_text())
    if "train" in records:  # online RL: one stage, a metrics line per epoch
        folder = layout.current("train")
        rows = [json.loads(line) for line in folder.metrics.read_text().splitlines() if line.strip()]
        curve = [(r["cpu_s"] / 60, r["reward/action"]) for r in rows]
        return folder.lora, records["train"]["cpu_seconds"], curve
    rounds = sorted((n for n in records if n.startswith("round")), key=lambda n: int(n[5:]))
    summary = json.loads(layout.rewards_summary.read_text())
    means = {row["stage"]: row["action"] for row in summary}
    spent, curve = 0.0, []
    for name in rounds:  # a round's samples come from the model before its training
        curve.append((spent / 60, means[name]))
        spent += records[name]["cpu_seconds"]
    return layout.current(rounds[-1]).lora, spent, curve


# --- evaluation ----------------------------------------------------------------------------------------------------


def evaluate(out: Path, seed: int, model: str, lora: Path | None, seeds_per_prompt: int = EVAL_SEEDS,
             steps: int = 20) -> dict[str, dict[str, list[float]]]:
    """prompt set → scorer → the score of each evaluation sample, cached in ``out/eval``; the base model's samples
    of a seed are shared by every arm (same seeds, same model)."""
    if lora is not None:  # keyed by the weights and the settings: a retrained LoRA is never read from the cache
        from prefopt.data import tensors_digest

        model = f"{model}-{tensors_digest(lora)[:12]}"
    model = f"{model}-{seeds_per_prompt}x{steps}"
    cache = out / "eval" / f"seed{seed}" / f"{model}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from prefopt.config import RewardSpec, parse
    from prefopt.media import read_media
    from prefopt.online_rl import evaluation_seed
    from prefopt.plugins import get_registry
    from prefopt.sampling import SampleJob, Sampling, sample_files
    from prefopt_recipes.common.scoring import load_rewards, score_in_memory

    registry = get_registry()
    options = parse(registry.get("backbones", "hunyuan-video").config_class, {
        "pretrained": str(ROOT / "plugins/miniature/weights/model"), "dtype": "float32", "device": "cpu",
        "use_prompt_template": False, "max_sequence_length": 40})
    backbone = registry.create("backbones", "hunyuan-video", options)
    backbone.use_loras([lora] if lora else [])
    sampling = Sampling(num_frames=8, height=32, width=32, num_inference_steps=steps, guidance_scale=1.0,
                        batch_size=12)
    specs = {name: {"name": "miniature-action", "options": {"weights": weights}} for name, weights in SCORERS.items()}
    scorers = load_rewards({name: parse(RewardSpec, spec, name, registry) for name, spec in specs.items()})
    result = {}
    for prompt_set, prompts in (("trained", TRAINED), ("heldout", HELDOUT)):
        jobs = [SampleJob(f"{p:02d}-{j:02d}", prompt, evaluation_seed(seed, p, j))
                for p, prompt in enumerate(prompts) for j in range(seeds_per_prompt)]
        folder = out / "eval" / f"seed{seed}" / model / prompt_set
        paths = sample_files(backbone, jobs, sampling, folder, description=f"evaluating {model} ({prompt_set})")
        scored = score_in_memory(scorers, [(j.prompt, read_media(p)) for j, p in zip(jobs, paths)])
        result[prompt_set] = {name: [s.value for s in values] for name, values in scored.items()}
    write_json(cache, result)
    return result


# --- statistics ----------------------------------------------------------------------------------------------------


def gains(runs: dict) -> dict[str, dict[str, dict[str, list[float]]]]:
    """arm → prompt set → scorer → each seed's gain (mean over its evaluation samples of trained − base)."""
    table: dict = {}
    for arm, by_seed in runs.items():
        for seed, entry in sorted(by_seed.items()):
            for prompt_set, scores in entry["scores"].items():
                for scorer, values in scores.items():
                    base = runs["__base__"][seed]["scores"][prompt_set][scorer] if arm != "__base__" else values
                    table.setdefault(arm, {}).setdefault(prompt_set, {}).setdefault(scorer, []).append(
                        float(np.mean(values) - np.mean(base)))
    table.pop("__base__", None)
    return table


NO_HARM_MARGIN = 0.25  # declared before the numbers: a held-out loss smaller than this counts as no harm
ALPHA = 0.05


def one_sided_p(values, direction: int) -> float:
    """p of the one-sided t-test over runs: H1 mean > 0 (direction +1), or mean > −margin (direction 0: no harm)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or values.std(ddof=1) == 0:
        return 0.0 if values.mean() > (0 if direction > 0 else -NO_HARM_MARGIN) else 1.0
    shifted = values if direction > 0 else values + NO_HARM_MARGIN
    return float(stats.ttest_1samp(shifted, 0.0, alternative="greater").pvalue)


def verdict(mean: float, half: float, direction: int, survives: bool | None = None) -> str:
    if math.isnan(half):
        return "not enough runs"
    low, high = mean - half, mean + half
    holm_note = "" if survives is None else (", survives Holm" if survives else ", does not survive Holm")
    if direction > 0:
        if low > 0:
            return "holds" + holm_note
        if survives:  # the claims' test is one-sided: it can hold while the two-sided interval touches 0
            return "holds, survives Holm (one-sided test; the two-sided 95 % interval reaches 0)"
        return "reversed" if high < 0 else "did not appear (interval includes 0)"
    if low > -NO_HARM_MARGIN:
        return f"holds (no loss beyond −{NO_HARM_MARGIN}{holm_note})"
    return f"not shown: the interval reaches below −{NO_HARM_MARGIN}"


def markdown(runs: dict, budget: float, claims: list = CLAIMS) -> str:
    table = gains(runs)
    intro = (f"Equal training budget: {budget:g} CPU-minutes per run (measured per run below). Gains are trained − "
             f"base on {EVAL_SEEDS} fresh seeds per prompt; mean ± 95 % t-interval over runs (n = runs).")
    header = ("| arm | n | epochs/rounds | CPU-min used | action, trained prompts | judge, trained prompts | "
              "action, held-out | judge, held-out | action gain per CPU-min |")
    lines = [intro, "", header, "|---|---|---|---|---|---|---|---|---|"]
    for arm, sets in table.items():
        entries = runs[arm]
        cpu = interval([e["cpu_seconds"] / 60 for e in entries.values()])
        cells = [f"{m:+.2f} ± {h:.2f}" for m, h in (interval(sets[s][k]) for s in ("trained", "heldout")
                                                     for k in ("action", "judge"))]
        ordered = [entries[seed] for seed in sorted(entries)]  # gains() lists seeds in this order
        rate = interval([g / (e["cpu_seconds"] / 60) for g, e in zip(sets["trained"]["action"], ordered)])
        lengths = sorted({e["length"] for e in entries.values()})
        lines.append(f"| {arm} | {len(entries)} | {'/'.join(map(str, lengths))} | {cpu[0]:.1f} ± {cpu[1]:.1f} | "
                     + " | ".join(cells) + f" | {rate[0]:+.3f} ± {rate[1]:.3f} |")
    lines += ["", (f"Claims (fixed before the numbers; one-sided t-tests over runs, Holm-corrected over the {len(claims)} "
              f"claims at α = {ALPHA}; no harm: a held-out change above −{NO_HARM_MARGIN}):"), "",
              "| claim | measured | p | verdict |", "|---|---|---|---|"]
    tested = [(c, table[c[0]][c[2]][c[1]]) for c in claims if c[0] in table]
    survives = holm([one_sided_p(values, c[3]) for c, values in tested])
    for ((arm, scorer, prompt_set, direction, text), values), kept in zip(tested, survives):
        mean, half = interval(values)
        p = one_sided_p(values, direction)
        lines.append(f"| {text} | {mean:+.2f} ± {half:.2f} | {p:.3f} | {verdict(mean, half, direction, kept)} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, runs: dict) -> None:
    """Mean action reward of the samples each arm drew while training, against CPU minutes (mean over runs at each
    epoch or round), and each arm's evaluated gain on the trained prompts (mean ± 95 % interval over runs)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), dpi=100)
    table = gains(runs)
    for index, arm in enumerate(a for a in runs if a != "__base__"):
        curves = [e["curve"] for e in runs[arm].values()]
        length = min(len(c) for c in curves)
        x = np.mean([[p[0] for p in c[:length]] for c in curves], axis=0)
        y = np.mean([[p[1] for p in c[:length]] for c in curves], axis=0)
        left.plot(x, y, marker="o", ms=3, color=f"C{index}", label=arm)
        mean, half = interval(table[arm]["trained"]["action"])
        judge_mean, judge_half = interval(table[arm]["trained"]["judge"])
        right.errorbar([index - 0.1], [mean], yerr=[half], fmt="o", color=f"C{index}", capsize=4)
        right.errorbar([index + 0.1], [judge_mean], yerr=[judge_half], fmt="s", color=f"C{index}", capsize=4, mfc="w")
    left.set_xlabel("CPU minutes of training")
    left.set_ylabel("mean action reward of the samples drawn")
    left.legend(fontsize=8)
    arms = [a for a in runs if a != "__base__"]
    right.set_xticks(range(len(arms)), arms, fontsize=8, rotation=15)
    right.axhline(0, color="grey", lw=0.8)
    right.set_ylabel("gain over base, trained prompts (● action, □ judge)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)  # the evaluation too (see the module's docstring)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "online-rl-study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--budget", type=float, default=5.0, help="CPU minutes of training per run")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    runs: dict = {"__base__": {}}
    for arm in args.arms:
        pilot = training(run(out, arm, PILOT_SEED, None))
        per_unit = pilot[1] / (1 if ARMS[arm][0] == REWARD_DPO else 2)
        length = max(1, round(args.budget * 60 / per_unit))
        print(f"{arm}: {per_unit:.0f} CPU-s per {'round' if ARMS[arm][0] == REWARD_DPO else 'epoch'} → {length}",
              flush=True)
        for seed in args.seeds:
            check_unseen(seed)
            lora, cpu_seconds, curve = training(run(out, arm, seed, length))
            runs.setdefault(arm, {})[seed] = {"length": length, "cpu_seconds": cpu_seconds, "curve": curve,
                                              "scores": evaluate(out, seed, slug(arm), lora)}
            runs["__base__"][seed] = {"scores": evaluate(out, seed, "base", None)}
            print(f"  seed {seed}: {cpu_seconds / 60:.1f} CPU-min", flush=True)
            write_json(out / "study.json", runs)
    write_text(out / "study.md", markdown(runs, args.budget))
    plot(out / "study.png", runs)
    print((out / "study.md").read_text())


if __name__ == "__main__":
    main()
