"""The online-RL run's report: every reward's curve by epoch and by minute, the training health, rollout strips
per epoch, and the evaluation (base vs trained, trained vs held-out prompts, rewards vs judges)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from prefopt.config import to_dict
from prefopt.files import copy_file, write_text
from prefopt.layout import StageFolder, find_sample
from prefopt.media import read_media
from prefopt.report import pyplot, read_metrics, save_figure, thumbnail
from prefopt.stages import RunResult
from prefopt_recipes.online_rl.config import OnlineRLRecipeConfig

STRIPS_SHOWN = 8
HEALTH = (("ratio", "mean ratio π/π_old"), ("clip_fraction", "fraction clipped"), ("approx_kl", "approx. KL to π_old"),
          ("kl", "KL to the reference"), ("policy_loss", "policy loss"), ("grad_norm", "gradient norm"),
          ("flat_groups", "groups with equal rewards"), ("reward_std", "reward std"))


def plot_rewards(path: Path, rows: list[dict], rewards: list[str]) -> None:
    """Each reward's mean over an epoch's rollouts, against epochs and against minutes of training."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
    epochs = [r["epoch"] for r in rows]
    minutes = [r["elapsed_s"] / 60 for r in rows]
    for index, name in enumerate(rewards):
        values = [r.get(f"reward/{name}", np.nan) for r in rows]
        for ax, x in zip(axes, (epochs, minutes)):
            ax.plot(x, values, marker="o", ms=3, color=f"C{index}", label=name)
    for ax, label in zip(axes, ("epoch", "minutes of training")):
        ax.set_xlabel(label)
        ax.set_ylabel("mean reward of the epoch's rollouts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_health(path: Path, rows: list[dict]) -> None:
    """The training's health by epoch: one panel per metric the algorithm logs."""
    present = [(key, title) for key, title in HEALTH if any(key in r for r in rows)]
    plt = pyplot()
    columns = 4
    fig, axes = plt.subplots(-(-len(present) // columns), columns, figsize=(13, 3 * -(-len(present) // columns)),
                             dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes.flat, present):
        ax.plot([r["epoch"] for r in rows if key in r], [r[key] for r in rows if key in r], marker="o", ms=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report(result: RunResult, config: OnlineRLRecipeConfig) -> Path:
    out = result.layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    train = result.folder("train")
    rows = read_metrics(train.path)
    rewards = list(config.rewards)
    plot_rewards(out / "rewards.png", rows, rewards)
    plot_health(out / "health.png", rows)
    t = config.trainer
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    summary = (f"<p><b>{t.algorithm}</b> on <code>{html.escape(config.backbone.name)}</code>: {len(rows)} epochs of "
               f"{t.prompts_per_epoch} prompts × {t.group_size} samples ({t.sampling_steps} sampling steps), "
               f"{last.get('elapsed_s', 0) / 60:.1f} min of training. Trained reward (weighted): "
               f"{first.get('reward', float('nan')):.3f} in epoch 1 → {last.get('reward', float('nan')):.3f} in epoch "
               f"{last.get('epoch', 0)}. LoRA (diffusers format): <code>{html.escape(str(train.lora))}</code>.</p>")
    sections = [summary, "<h2>Rewards of the rollouts</h2><img src='rewards.png'>",
                ("<h2>Training health</h2><p>On-policy GRPO starts each epoch at ratio 1; a clip fraction near 1 or "
                 "a growing KL says the updates are too large.</p><img src='health.png'>"), _strips(out, train, len(rows))]
    if "evaluation" in result.stages:
        sections.append(_evaluation(out, result["evaluation"], result.folder("evaluation"), config))
    sections.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(to_dict(config), indent=2))}</pre>")
    banner = ("<p style='background:#fff3cd;padding:8px'>Tiny randomly initialised models: the samples are noise; "
              "this run shows the mechanics, not results.</p>" if config.run.build_tiny_models else "")
    page = ("<!doctype html><meta charset='utf-8'><title>prefopt online-RL report</title><style>body{font-family:"
            "sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px}table{border-collapse:"
            "collapse}img{max-width:100%}</style><h1>Online-RL run <code>" + html.escape(config.run.name) + "</code></h1>"
            + banner + "".join(sections))
    write_text(result.layout.report, page)
    return result.layout.report


def _strips(out: Path, train: StageFolder, epochs: int) -> str:
    shown = sorted({int(e) for e in np.linspace(1, epochs, min(STRIPS_SHOWN, epochs)).round()}) if epochs else []
    cells = []
    for epoch in shown:
        strip = train.rollout_strip(epoch)
        if strip.is_file():
            copy_file(strip, out / "rollouts" / strip.name)
            cells.append(f"<tr><td>epoch {epoch}</td><td><img src='rollouts/{strip.name}'></td></tr>")
    return ("<h2>Rollouts</h2><p>The first group of each shown epoch (one prompt, its samples side by side, middle "
            "frame).</p><table>" + "".join(cells) + "</table>")


def _evaluation(out: Path, table: list[dict], folder: StageFolder, config: OnlineRLRecipeConfig) -> str:
    names = [*config.rewards, *config.judges]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", "prompts", "samples", *names])
    body = "".join("<tr>" + "".join(f"<td>{r[c]:.3f}</td>" if isinstance(r.get(c), float)
                                    else f"<td>{html.escape(str(r.get(c, '')))}</td>"
                                    for c in ["model", "prompts", "samples", *names]) + "</tr>" for r in table)
    gains = []
    for prompt_set in ("trained", "heldout"):
        pair = {r["model"]: r for r in table if r["prompts"] == prompt_set}
        if {"base", "trained"} <= set(pair):
            cells = "".join(f"<td>{pair['trained'][n] - pair['base'][n]:+.3f}</td>" for n in names)
            gains.append(f"<tr><td>{prompt_set}</td>{cells}</tr>")
    kinds = "".join(f"<th>{html.escape(n)} ({'trained' if n in config.rewards else 'judge'})</th>" for n in names)
    thumbs = []
    for r in table:
        media = find_sample(folder.samples(f"{r['model']}-{r['prompts']}"), 0)
        if media is not None:
            name = f"eval-{r['model']}-{r['prompts']}"
            thumbs.append(f"<td>{r['model']}, {r['prompts']}<br><img src='{thumbnail(out, name, read_media(media), 3)}'>"
                          "</td>")
    return ("<h2>Evaluation (seeds never used in training)</h2><table><tr>" + head + "</tr>" + body + "</table>"
            "<h3>Gain of the trained model over the base</h3><p>A trained reward that rises while a judge of the same "
            "quality does not is a sign of reward hacking.</p><table><tr><th>prompts</th>" + kinds + "</tr>"
            + "".join(gains) + "</table><h3>First sample of each</h3><table><tr>" + "".join(thumbs) + "</tr></table>")
