"""The DPO run's report: ``report/index.html`` with training curves, the first pairs, and evaluation samples."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from prefopt.config import to_dict
from prefopt.data import PreferenceExample
from prefopt.files import write_text
from prefopt.layout import StageFolder, find_sample
from prefopt.media import read_media
from prefopt.report import plot_training, read_metrics, thumbnail
from prefopt.stages import RunResult
from prefopt_recipes.dpo.config import DPORecipeConfig

PAIRS_SHOWN = 12
PAIR_FRAMES = 3


def write_report(result: RunResult, config: DPORecipeConfig, data: tuple[list[PreferenceExample], list[int]],
                 prompts: Sequence[str]) -> Path:
    """The report of a finished run: its pairs as trained, training curves and (when there was one) the evaluation."""
    out = result.layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    train = result.folder("train")
    plot_training(out / "training.png", {"DPO": train.path})
    examples, sources = data
    metrics = read_metrics(train.path)
    last = metrics[-1] if metrics else {}
    summary = (f"<p>{len(examples)} pairs from <code>{html.escape(config.data.path)}</code>; "
               f"{last.get('step', 0)} steps on <code>{html.escape(config.backbone.name)}</code>; final loss "
               f"{last.get('loss', float('nan')):.4f}, implicit accuracy {last.get('implicit_accuracy', float('nan')):.2f}. "
               f"LoRA (diffusers format; <code>publish/README.md</code> shows the loading code): "
               f"<code>{html.escape(str(train.lora))}</code>. "
               f"Run time {sum(result.timings().values()) / 60:.1f} min.</p>")
    sections = [summary, '<h2>Training</h2><img src="training.png">', _pairs(out, examples, sources)]
    if "evaluation" in result.stages:
        sections.append(_evaluation(out, result["evaluation"], result.folder("evaluation"), config, prompts))
    sections.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(to_dict(config), indent=2))}</pre>")
    page = ("<!doctype html><meta charset='utf-8'><title>prefopt DPO report</title><style>body{font-family:sans-serif;"
            "max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px}table{border-collapse:collapse}"
            "</style><h1>Diffusion-DPO run <code>" + html.escape(config.run.name) + "</code></h1>"
            + "".join(sections))
    write_text(result.layout.report, page)
    return result.layout.report


def _pairs(out: Path, examples, sources) -> str:
    rows = []
    for index, (example, row) in enumerate(zip(examples[:PAIRS_SHOWN], sources)):
        winner = thumbnail(out, f"pair{index}-winner", read_media(example.winner), frames=PAIR_FRAMES)
        loser = thumbnail(out, f"pair{index}-loser", read_media(example.loser), frames=PAIR_FRAMES)
        rows.append(f"<tr><td>{row}</td><td>{html.escape(example.prompt)}</td><td><img src='{winner}'></td>"
                    f"<td><img src='{loser}'></td><td>{example.weight:g}</td></tr>")
    return (f"<h2>Pairs (first {min(PAIRS_SHOWN, len(examples))} of {len(examples)})</h2><table><tr><th>row</th>"
            "<th>prompt</th><th>winner</th><th>loser</th><th>weight</th></tr>" + "".join(rows) + "</table>")


def _evaluation(out: Path, table: list[dict], folder: StageFolder, config: DPORecipeConfig,
                prompts: Sequence[str]) -> str:
    rewards = list(config.evaluation.rewards)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", "samples", *rewards])
    body = "".join("<tr>" + "".join(f"<td>{r[c]:.3f}</td>" if isinstance(r.get(c), float)
                                    else f"<td>{html.escape(str(r.get(c, '')))}</td>"
                                    for c in ["model", "samples", *rewards]) + "</tr>" for r in table)
    seeds = config.evaluation.seeds_per_prompt
    strips = []
    for index, prompt in enumerate(prompts):
        cells = []
        for model in ("base", "trained"):
            media = find_sample(folder.samples(model), index * seeds)
            if media is not None:
                cells.append(f"<td><img src='{thumbnail(out, f'eval-{model}-{index}', read_media(media), 3)}'></td>")
        strips.append(f"<tr><td>{html.escape(prompt)}</td>{''.join(cells)}</tr>")
    note = "" if rewards else "<p>No rewards configured (<code>evaluation.rewards</code>): samples only.</p>"
    return (f"<h2>Evaluation</h2>{note}<table><tr>{head}</tr>{body}</table><h3>Samples (seed 0)</h3><table><tr>"
            "<th>prompt</th><th>base</th><th>trained</th></tr>" + "".join(strips) + "</table>")
