"""The paper's ablations (Tables 2 and 3) on the miniature world, over seeds and held-out identities.

    python studies/miniature_study.py --out runs/miniature-study

For each held-out identity and seed, one run directory of `recipes/miniature.yaml` gives Table 2's rows
(base; identity LoRA = self-reconstruction; + stage-1 ID pairs; + stage-2 Pareto pairs = the full method)
from its evaluation, and two more runs *in the same directory* change only the stage-2 rewards (identity
only; identity + dynamics), which reuses every earlier stage through the stage hashes: Table 3's rows.
Everything is resumable: a re-run skips finished runs and finished stages. Writes ``study.json`` (every
run's numbers), ``study.md`` (mean ± 95 % t-interval over identities × seeds) and ``study.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from prefopt.files import write_json, write_text
from prefopt.report import save_figure

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "miniature.yaml"
EVALUATOR = ROOT / "plugins" / "miniature" / "weights" / "evaluator" / "identity"  # seed 1; the reward's is seed 0
TABLE2 = ("base", "identity LoRA", "stage 1 (ID pairs)", "MagicID (final)")
REWARD_ABLATION = {"ID only": "[identity]", "ID + dynamic": "[identity,dynamic]", "ID + dynamic + semantic": None}
METRICS = {"face_sim": "Face Sim ↑", "face_sim_eval": "Face Sim (evaluator net) ↑", "flow_score": "Dynamic (flow) ↑", "dynamic_degree": "Dynamic Degree ↑",
           "semantic_raw": "prompt following ↑", "temporal": "temporal consistency ↑"}


def run_recipe(out: Path, identity: int, seed: int, rewards: str | None) -> dict:
    """One recipe run (resumable); returns its evaluation table by model."""
    name = f"id{identity}-seed{seed}"
    photos = [ROOT / "plugins" / "miniature" / "references" / f"avatar-{identity}-{s}.png" for s in range(3)]
    overrides = [f"run.output_dir={out}", f"run.name={name}", f"run.seed={seed}",
                 f"references.photos=[{','.join(map(str, photos))}]",
                 *(f"{stage}.seed={seed}" for stage in ("identity_lora", "dpo_stage1", "dpo_stage2"))]
    if rewards is not None:
        overrides.append(f"stage2.selectors.0.options.rewards={rewards}")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "prefopt", "run", str(RECIPE), *overrides], cwd=ROOT,
                            env={**os.environ}, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"run {name} ({rewards or 'all rewards'}) failed:\n{result.stderr[-3000:]}")
    from prefopt.layout import RunLayout

    evaluation = RunLayout(out / name).current("evaluation")  # the run's results, found through its layout
    table = json.loads(evaluation.table.read_text())
    seconds = time.monotonic() - started
    print(f"{name} ({rewards or 'all rewards'}): {seconds:.0f} s", flush=True)
    return {row["model"]: {**row, **independent_metrics(evaluation.samples(row["folder"]), photos),
                           "run_seconds": seconds} for row in table}


def independent_metrics(folder: Path, photos: list[Path]) -> dict[str, float]:
    """Two metrics from the *evaluator*, an identity net trained like the reward's but from another seed, so
    that a model cannot score well on them by exploiting the reward net's particular weights:

    * ``face_sim_eval``: mean cosine of every frame's embedding to the reference stills' mean embedding;
    * ``temporal``: mean cosine between consecutive frames' embeddings. The paper's temporal consistency is
      this quantity on CLIP image features; here the evaluator plays CLIP's part: an avatar that keeps its
      look while it moves scores near 1, one that flickers or morphs lower (a pixel difference would instead
      punish motion itself)."""
    from prefopt.media import read_media

    evaluator = _evaluator()
    reference = evaluator.reference_embedding([read_media(p)[0] for p in photos])
    face, temporal = [], []
    for video in sorted(p for p in folder.glob("*.mp4") if not p.name.startswith(".")):
        embeddings = np.stack([evaluator.embed_largest_face(frame) for frame in read_media(video)])
        face.append(float((embeddings @ reference).mean()))
        temporal.append(float((embeddings[:-1] * embeddings[1:]).sum(axis=1).mean()))
    return {"face_sim_eval": float(np.mean(face)), "temporal": float(np.mean(temporal))}


@functools.cache
def _evaluator():
    from prefopt.config import parse
    from prefopt.plugins import get_registry

    entry = get_registry().get("rewards", "miniature-id")
    return entry.cls(parse(entry.config_class, {"weights": str(EVALUATOR)}))


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def summarise(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Row label → metric → (mean, 95 % half-width) over every (identity, seed)."""
    rows = {}
    for label in TABLE2:
        rows[label] = {m: interval([r["table2"][label][m] for r in runs]) for m in METRICS}
    for label in REWARD_ABLATION:
        rows[f"rewards: {label}"] = {m: interval([r["table3"][label][m] for r in runs]) for m in METRICS}
    return rows


# The paper's claims as paired differences (row − baseline row, per identity and seed): the claim, the two
# rows, the metric, and the direction the paper reports (+1 higher, −1 lower, 0 "not lower").
CLAIMS = [
    ("identity LoRA alone loses motion (Tab. 2, self-reconstruction)", "identity LoRA", "base", "flow_score", -1),
    ("ID pairs raise identity (Tab. 2)", "stage 1 (ID pairs)", "identity LoRA", "face_sim", +1),
    ("ID pairs raise identity, evaluator net", "stage 1 (ID pairs)", "identity LoRA", "face_sim_eval", +1),
    ("dynamic pairs restore motion (Tab. 2)", "MagicID (final)", "stage 1 (ID pairs)", "flow_score", +1),
    ("… without losing identity (Tab. 2)", "MagicID (final)", "stage 1 (ID pairs)", "face_sim", 0),
    ("… without losing identity, evaluator net", "MagicID (final)", "stage 1 (ID pairs)", "face_sim_eval", 0),
    ("the dynamic reward adds motion (Tab. 3)", "rewards: ID + dynamic", "rewards: ID only", "flow_score", +1),
    ("the semantic reward adds motion (Tab. 3)", "rewards: ID + dynamic + semantic", "rewards: ID + dynamic",
     "flow_score", +1),
    ("the semantic reward improves prompt following (Tab. 3)", "rewards: ID + dynamic + semantic",
     "rewards: ID + dynamic", "semantic_raw", +1),
]


def _row_values(run: dict, label: str, metric: str) -> float:
    if label.startswith("rewards: "):
        return run["table3"][label[len("rewards: "):]][metric]
    return run["table2"][label][metric]


def verdict(mean: float, half: float, direction: int) -> str:
    """Whether a paired difference's 95 % interval supports the paper's direction."""
    low, high = mean - half, mean + half
    if direction == 0:
        return "reproduced (no significant loss)" if high >= 0 else "not reproduced: significantly lower"
    if (low > 0 if direction > 0 else high < 0):
        return "reproduced"
    if (high < 0 if direction > 0 else low > 0):
        return "not reproduced: the opposite, significantly"
    return "not resolved: the interval contains 0"


def claims(runs: list[dict]) -> list[dict]:
    """Each claim's paired difference (mean, 95 % half-width), how many runs went the paper's way, the verdict."""
    results = []
    for text, row, baseline, metric, direction in CLAIMS:
        differences = [_row_values(r, row, metric) - _row_values(r, baseline, metric) for r in runs]
        mean, half = interval(differences)
        agree = sum((d >= 0) if direction == 0 else (np.sign(d) == direction) for d in differences)
        results.append({"claim": text, "rows": f"{row} − {baseline}", "metric": metric, "mean": mean, "half": half,
                        "runs_agreeing": int(agree), "runs": len(runs), "verdict": verdict(mean, half, direction)})
    return results


def claims_markdown(results: list[dict]) -> str:
    head = "| the paper's claim | difference | metric | mean ± 95 % | runs agreeing | verdict |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {c['claim']} | {c['rows']} | {c['metric']} | {c['mean']:+.3f} ± {c['half']:.3f} | "
                          f"{c['runs_agreeing']}/{c['runs']} | {c['verdict']} |\n" for c in results)


def markdown(rows: dict, runs: int) -> str:
    head = "| row | " + " | ".join(METRICS.values()) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    body = "".join(f"| {label} | " + " | ".join(f"{m:.3f} ± {h:.3f}" for m, h in cells.values()) + " |\n"
                   for label, cells in rows.items())
    return f"Mean ± 95 % t-interval over {runs} runs (held-out identities × seeds).\n\n" + head + body


def plot(path: Path, rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4), dpi=100)
    labels = list(rows)
    for ax, (metric, title) in zip(axes, METRICS.items()):
        means = [rows[r][metric][0] for r in labels]
        errors = [rows[r][metric][1] for r in labels]
        ax.barh(range(len(labels)), means, xerr=errors, color=["C0"] * len(TABLE2) + ["C1"] * len(REWARD_ABLATION))
        ax.set_yticks(range(len(labels)), labels if ax is axes[0] else [""] * len(labels), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/miniature-study")
    parser.add_argument("--identities", type=int, nargs="+", default=[448, 459])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs, started = [], time.monotonic()
    for identity in args.identities:
        for seed in args.seeds:
            full = run_recipe(out, identity, seed, None)
            table3 = {label: (full if rewards is None else run_recipe(out, identity, seed, rewards))["MagicID (final)"]
                      for label, rewards in REWARD_ABLATION.items()}
            runs.append({"identity": identity, "seed": seed, "table2": {m: full[m] for m in TABLE2}, "table3": table3})
            write_json(out / "study.json", runs)
    rows = summarise(runs)
    wall = (f"Wall time of this invocation: {(time.monotonic() - started) / 60:.1f} min (a re-run skips every "
            "finished stage).\n\n")
    write_text(out / "study.md", wall + markdown(rows, len(runs)) + "\n" + claims_markdown(claims(runs)))
    plot(out / "study.png", rows)
    print((out / "study.md").read_text())


if __name__ == "__main__":
    main()
