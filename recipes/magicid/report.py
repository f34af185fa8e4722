"""The run report: ``report/index.html`` with PNGs a person can open and read at a glance."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np

from prefopt.media import read_media


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timings(path: Path, timings: dict[str, float]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(timings) + 1), dpi=100)
    names = list(timings)
    ax.barh(names[::-1], [timings[n] for n in names][::-1], color="tab:blue")
    ax.set_xlabel("seconds")
    ax.set_title("stage timings")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reward_distributions(path: Path, recipe) -> None:
    plt = _plt()
    table = recipe.scored()
    groups = sorted(set(table.sources))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=100)
    for ax, role in zip(axes, ("identity", "dynamic", "semantic")):
        data = [table.scores[role][table.sources == g] for g in groups]
        ax.boxplot(data, tick_labels=[f"{g}\n(n={len(d)})" for g, d in zip(groups, data)])
        ax.set_title(f"{role} reward by source")
        ax.set_ylim(0.5, 10.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def plot_training(path: Path, runs: dict[str, Path]) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    for index, (label, folder) in enumerate(runs.items()):
        rows = _metrics(folder)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        style = {"label": label, "color": f"C{index}"}  # one colour per run in every panel
        axes[0].plot(steps, [r["loss"] for r in rows], **style)
        if "implicit_accuracy" in rows[0]:
            axes[1].plot(steps, [r["implicit_accuracy"] for r in rows], **style)
            axes[2].plot(steps, [r["reward_margin"] for r in rows], **style)
    for ax, title in zip(axes, ("loss", "implicit accuracy (DPO)", "reward margin (DPO)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def frame_strip(path: Path, video: np.ndarray, frames: int = 6) -> None:
    indices = np.unique(np.linspace(0, len(video) - 1, frames).round().astype(int))
    strip = np.concatenate([video[i] for i in indices], axis=1)
    import imageio.v3 as iio

    iio.imwrite(path, strip)


def _eval_table(rows: list[dict]) -> str:
    columns = ["model", "identity", "dynamic", "semantic", "face_sim", "dynamic_degree", "temporal_consistency",
               "clip_t", "clip_i", "fvd"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{r[c]:.3f}</td>" if isinstance(r[c], float) else f"<td>{html.escape(str(r[c]))}</td>"
                         for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(recipe, timings: dict[str, float]) -> Path:
    out = recipe.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plot_timings(out / "timings.png", timings)
    plot_reward_distributions(out / "rewards.png", recipe)
    plot_training(out / "training.png", {"identity LoRA (SFT)": recipe.stage_dir("identity_lora"),
                                         "DPO stage 1": recipe.stage_dir("stage1"),
                                         "DPO stage 2": recipe.stage_dir("stage2")})
    for stage in ("stage1", "stage2"):
        shutil.copy(recipe.stage_dir(stage) / "pairs.png", out / f"{stage}_pairs.png")
    rows = json.loads((recipe.stage_dir("evaluation") / "table.json").read_text())
    strips = []
    for row in rows:
        name = f"strip_{Path(row['folder']).name}.png"
        frame_strip(out / name, read_media(Path(row["folder"]) / "000.mp4"))
        strips.append((row["model"], name))
    (out / "index.html").write_text(_html(recipe, rows, strips, timings))
    return out / "index.html"


def _html(recipe, rows, strips, timings) -> str:
    banner = ("<p class=warn>This run used tiny randomly initialised models (the quickstart): its videos are "
              "noise, and it shows the mechanics of every stage, not results.</p>"
              if recipe.config.run.build_tiny_models else "")
    strip_html = "".join(f"<h3>{html.escape(m)}</h3><img src='{n}'>" for m, n in strips)
    total = sum(timings.values())
    return f"""<!doctype html><html><head><meta charset=utf-8><title>prefopt · {html.escape(recipe.config.run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}.warn{{background:#fff3cd;padding:8px}}</style>
</head><body><h1>MagicID run: {html.escape(recipe.config.run.name)}</h1>{banner}
<p>Backbone <code>{html.escape(recipe.config.backbone.name)}</code>; {total:.0f} s in all.</p>
<h2>Evaluation on held-out prompts</h2>{_eval_table(rows)}
<p><code>identity</code>, <code>dynamic</code>, <code>semantic</code>: the rewards' 1–10 values. The others are the
paper's metrics: Face Sim (max(0, cos) of the largest face), Dynamic Degree (fraction VBench calls dynamic),
temporal consistency and CLIP-T/CLIP-I (CLIP features), FVD (needs I3D weights).</p>
<h2>Pair selection</h2><h3>Stage 1: identity-preferred (V_id ∪ V_s)</h3><img src='stage1_pairs.png'>
<h3>Stage 2: dynamic-preferred (V_s ∪ V_t)</h3><img src='stage2_pairs.png'>
<h2>Rewards in the repository</h2><img src='rewards.png'>
<h2>Training</h2><img src='training.png'>
<h2>Evaluation videos (first prompt, sampled frames)</h2>{strip_html}
<h2>Stage timings</h2><img src='timings.png'>
</body></html>"""
