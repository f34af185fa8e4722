"""The reward-DPO loop's report: every reward round by round, the pairs each round chose, training, samples."""

from __future__ import annotations

import html
import json
from pathlib import Path

from prefopt.config import to_dict
from prefopt.files import copy_file, write_text
from prefopt.media import read_media
from prefopt.report import plot_training, pyplot, save_figure, thumbnail
from prefopt.repository import MediaRepository
from prefopt.stages import RunResult
from prefopt_recipes.reward_dpo.config import RewardDPOConfig

SAMPLES_SHOWN = 4


def plot_rewards_by_stage(path: Path, rows: list[dict], rewards: list[str]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    stages = [r["stage"] for r in rows]
    trained = [i for i, s in enumerate(stages) if not s.startswith("heldout")]
    heldout = [i for i, s in enumerate(stages) if s.startswith("heldout")]
    for index, name in enumerate(rewards):
        values = [r[name] for r in rows]
        ax.plot(trained, [values[i] for i in trained], marker="o", color=f"C{index}", label=name)
        if heldout:  # base → final on prompts never trained on: its own dashed segment
            ax.plot(heldout, [values[i] for i in heldout], marker="s", ls="--", color=f"C{index}")
    ax.set_xticks(range(len(stages)), stages, fontsize=8)
    ax.set_ylabel("mean reward (1–10)")
    ax.set_title("rewards of each stage's samples (round 0 = base model; dashed: held-out prompts)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report(result: RunResult, config: RewardDPOConfig, rows: list[dict], repository: MediaRepository) -> Path:
    """The report of a finished run: every reward stage by stage (``rows``), the pairs each round chose, training
    curves and the first samples of each stage."""
    out = result.layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    rewards = list(config.rewards)
    plot_rewards_by_stage(out / "rewards.png", rows, rewards)
    rounds = {f"round {r}": result.folder(f"round{r}").path for r in range(config.rounds)}
    plot_training(out / "training.png", rounds)
    pair_plots = []
    for r in range(config.rounds):
        copy_file(result.folder(f"round{r}").pairs_plot, out / f"round{r}_pairs.png")
        pair_plots.append(f"<h3>Round {r}</h3><img src='round{r}_pairs.png'>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["stage", "samples", *rewards])
    body = "".join("<tr>" + "".join(f"<td>{r[c]:.3f}</td>" if isinstance(r[c], float) else f"<td>{r[c]}</td>"
                                    for c in ["stage", "samples", *rewards]) + "</tr>" for r in rows)
    banner = ("<p style='background:#fff3cd;padding:8px'>Tiny randomly initialised models: the samples are noise; "
              "this run shows the mechanics, not results.</p>" if config.run.build_tiny_models else "")
    page = (f"<!doctype html><meta charset='utf-8'><title>prefopt reward-DPO report</title><style>body{{font-family:"
            f"sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px}}table{{"
            f"border-collapse:collapse}}img{{max-width:100%}}</style><h1>Reward-DPO run "
            f"<code>{html.escape(config.run.name)}</code></h1>{banner}<p>Backbone <code>"
            f"{html.escape(config.backbone.name)}</code>; {config.rounds} round(s); "
            f"{sum(result.timings().values()):.0f} s in all. Every stage samples the same prompts with the same seeds, "
            f"so its rewards compare with the others' pairwise.</p><h2>Rewards by stage</h2><img src='rewards.png'>"
            f"<table><tr>{head}</tr>{body}</table><h2>Samples (first prompt)</h2>{_samples(out, result, repository)}"
            f"<h2>Pairs</h2>{''.join(pair_plots)}<h2>Training</h2><img src='training.png'>"
            f"<h2>Config</h2><pre>{html.escape(json.dumps(to_dict(config), indent=2))}</pre>")
    write_text(result.layout.report, page)
    return result.layout.report


def _samples(out: Path, result: RunResult, repository: MediaRepository) -> str:
    cells = []
    for sampled in (result[name] for name in result.stages):
        for stage in sampled.sources:
            items = sorted((r for r in repository.items([stage]) if r.stage == sampled.digest), key=lambda r: r.id)
            thumbs = "".join(f"<img src='{thumbnail(out, f'{stage}-{i}', read_media(repository.path(item.media_path)), 3)}'> "
                             for i, item in enumerate(items[:SAMPLES_SHOWN]))
            cells.append(f"<tr><td>{stage}</td><td>{thumbs}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"
