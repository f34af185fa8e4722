"""The run report: ``report/index.html`` with PNGs a person can open and read at a glance."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from prefopt.config import to_dict
from prefopt.files import copy_file, write_text
from prefopt.interfaces import Pair, ScoredItems
from prefopt.layout import find_sample
from prefopt.media import read_media
from prefopt.report import frame_strip, plot_training, pyplot, save_figure, thumbnail
from prefopt.repository import MediaRepository
from prefopt.stages import RunResult
from prefopt_recipes.magicid.config import MagicIDConfig


def plot_timings(path: Path, timings: dict[str, float]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(timings) + 1), dpi=100)
    names = list(timings)
    ax.barh(names[::-1], [timings[n] for n in names][::-1], color="tab:blue")
    ax.set_xlabel("seconds")
    ax.set_title("stage timings")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_reward_distributions(path: Path, table: ScoredItems, rewards: list[str]) -> None:
    plt = pyplot()
    groups = sorted(set(table.sources))
    fig, axes = plt.subplots(1, len(rewards), figsize=(4 * len(rewards), 3.8), dpi=100, squeeze=False)
    for ax, role in zip(axes[0], rewards):
        data = [table.scores[role][table.sources == g] for g in groups]
        ax.boxplot(data, tick_labels=[f"{g}\n(n={len(d)})" for g, d in zip(groups, data)])
        ax.set_title(f"{role} reward by source")
        ax.set_ylim(0.5, 10.5)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _eval_table(rows: list[dict], rewards: list[str]) -> str:
    columns = ["model", *rewards, "face_sim", "faceless_frames", "flow_score",
               "dynamic_degree", "temporal_consistency", "clip_t", "clip_i", "fvd"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{r[c]:.3f}</td>" if isinstance(r.get(c), float) else f"<td>{html.escape(str(r.get(c, '')))}</td>"
                         for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


PAIRS_SHOWN = 24
PAIR_FRAMES = 3  # first, middle and last frame: enough to see which of a pair moves


def _pairs_table(out: Path, repo: MediaRepository, pairs: list[Pair]) -> str:
    """The first pairs of a stage: thumbnails of winner and loser (``PAIR_FRAMES`` frames), sources, prompt, reward gaps."""
    items = repo.items_by_id()
    rows = []
    for pair in pairs[:PAIRS_SHOWN]:
        cells = []
        for item_id in (pair.winner_id, pair.loser_id):
            record = items[item_id]
            thumb = thumbnail(out, item_id, read_media(repo.path(record.media_path)), frames=PAIR_FRAMES)
            link = os.path.relpath(repo.path(record.media_path), out)
            cells.append(f"<a href='{html.escape(link)}'><img src='{thumb}' title='{html.escape(item_id)}'></a>"
                         f"<br><small>{html.escape(record.source)}</small>")
        gaps = ", ".join(f"Δ{k} {v:+.2f}" for k, v in pair.deltas.items())
        rows.append(f"<tr><td>{cells[0]}</td><td>{cells[1]}</td><td>{html.escape(pair.prompt)}</td>"
                    f"<td>{html.escape(gaps)}</td></tr>")
    more = f"<p>{len(pairs) - PAIRS_SHOWN} more in <code>pairs.parquet</code>.</p>" if len(pairs) > PAIRS_SHOWN else ""
    return ("<table><tr><th>winner</th><th>loser</th><th>prompt</th><th>reward gaps (winner − loser)</th></tr>"
            + "".join(rows) + "</table>" + more)


def _references(out: Path, photos: list[str]) -> str:
    images = []
    for index, photo in enumerate(photos):
        thumb = thumbnail(out, f"reference-{index}", read_media(photo)[:1])
        images.append(f"<figure style='display:inline-block'><img src='{thumb}'><figcaption><small>"
                      f"{html.escape(Path(photo).name)}</small></figcaption></figure>")
    return "".join(images)


def _links(out: Path, result: RunResult, rows: list[dict]) -> str:
    """Links to every LoRA the run trained and every evaluation video."""
    loras = [(stage, result.folder(stage).lora) for stage in ("identity_lora", "stage1", "stage2")]
    items = [f"<li>{html.escape(stage)}: <a href='{html.escape(os.path.relpath(path, out))}'>"
             f"{html.escape(path.name)}</a></li>" for stage, path in loras]
    for row in rows:
        folder = result.folder("evaluation").samples(row["folder"])
        videos = [find_sample(folder, i) for i in range(row["videos"])]
        links = " ".join(f"<a href='{html.escape(os.path.relpath(v, out))}'>{html.escape(v.stem)}</a>" for v in videos)
        items.append(f"<li>{html.escape(row['model'])} videos: {links}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def write_report(result: RunResult, config: MagicIDConfig, repository: MediaRepository, photos: list[str],
                 scored: ScoredItems) -> Path:
    """The report of a finished run: references, the evaluation as the paper's Table 2 and every metric, the pairs
    each stage chose, reward distributions, training curves, evaluation videos, files and timings."""
    out = result.layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    plot_timings(out / "timings.png", result.timings())
    plot_reward_distributions(out / "rewards.png", scored, list(config.rewards))
    plot_training(out / "training.png", {"identity LoRA (SFT)": result.folder("identity_lora").path,
                                         "DPO stage 1": result.folder("stage1").path,
                                         "DPO stage 2": result.folder("stage2").path})
    for stage in ("stage1", "stage2"):
        copy_file(result.folder(stage).pairs_plot, out / f"{stage}_pairs.png")
    evaluation = result.folder("evaluation")
    rows = result["evaluation"]
    strips = []
    for row in rows:
        name = f"strip_{row['folder']}.png"
        frame_strip(out / name, read_media(find_sample(evaluation.samples(row["folder"]), 0)))
        strips.append((row["model"], name))
    sections = {"references": _references(out, photos), "links": _links(out, result, rows),
                "pairs": {stage: _pairs_table(out, repository, result[stage].pairs) for stage in ("stage1", "stage2")},
                "ablation": evaluation.table_markdown.read_text()}
    write_text(result.layout.report, _html(config, result, rows, strips, sections))
    return result.layout.report


def _every_frame_faceless(count) -> bool:
    """``"16/16"``-style counts; anything else (``"unavailable"`` under the other protocol) is not a count."""
    if not isinstance(count, str) or "/" not in count:
        return False
    faceless, sampled = count.split("/", 1)
    return faceless == sampled


def _no_face_note(rows: list[dict]) -> str:
    """Say why Face Sim is 0 when the detector found no face, instead of showing a bare 0.000."""
    faceless = [r["model"] for r in rows if _every_frame_faceless(r.get("faceless_frames"))]
    if not faceless:
        return ""
    return (f"<p class=warn>No face was detected in any sampled frame of {html.escape(', '.join(faceless))}: their "
            "Face Sim of 0 means “no face”, not “a different person”.</p>")


def _html(config: MagicIDConfig, result: RunResult, rows, strips, sections) -> str:
    banner = ("<p class=warn>This run used tiny randomly initialised models (the quickstart): its videos are "
              "noise, and it shows the mechanics of every stage, not results.</p>"
              if config.run.build_tiny_models else "")
    strip_html = "".join(f"<h3>{html.escape(m)}</h3><img src='{n}'>" for m, n in strips)
    total = sum(result.timings().values())
    prompts = result["prompts"]
    prompt_list = "".join(f"<li>{html.escape(p)}</li>" for p in prompts.train)
    eval_list = "".join(f"<li>{html.escape(p)}</li>" for p in prompts.eval)
    ablation = sections["ablation"]
    settings = html.escape(json.dumps(to_dict(config), indent=2))
    reward_names = ", ".join(f"<code>{html.escape(name)}</code>" for name in config.rewards)
    return f"""<!doctype <html><head><meta charset=utf-8><title>prefopt · {html.escape(config.run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}.warn{{background:#fff3cd;padding:8px}}</style>
</head><body><h1>MagicID run: {html.escape(config.run.name)}</h1>{banner}
<p>Backbone <code>{html.escape(config.backbone.name)}</code>; {total:.0f} s in all.</p>
<h2>Reference photos</h2>{sections["references"]}
<h2>Evaluation on held-out prompts</h2>{_no_face_note(rows)}
<h3>As the paper's Table 2</h3><pre>{html.escape(ablation)}</pre>
<h3>Every metric</h3>{_eval_table(rows, list(config.rewards))}
<p>{reward_names}: the rewards' 1–10 values. The others are the
paper's metrics: Face Sim (ConsisID's protocol unless configured otherwise; face-less frames beside it), Dynamic
(VBench's mean flow score, the scale of the paper's values) and Dynamic Degree (the fraction VBench calls dynamic),
temporal consistency and CLIP-T/CLIP-I (CLIP features), FVD (needs I3D weights).</p>
<h2>Prompts</h2><h3>Train</h3><ol>{prompt_list}</ol><h3>Held-out evaluation</h3><ol>{eval_list}</ol>
<h2>Pair selection</h2><h3>Stage 1: identity-preferred (V_id ∪ V_s)</h3><img src='stage1_pairs.png'>
{sections["pairs"]["stage1"]}
<h3>Stage 2: dynamic-preferred (V_s ∪ V_t), trained with the stage-1 pairs</h3><img src='stage2_pairs.png'>
{sections["pairs"]["stage2"]}
<h2>Rewards in the repository</h2><img src='rewards.png'>
<h2>Training</h2><img src='training.png'>
<h2>Evaluation videos (first prompt, sampled frames)</h2>{strip_html}
<h2>Files</h2>{sections["links"]}
<h2>Stage timings</h2><img src='timings.png'>
<h2>Configuration</h2><details><summary>the run's configuration (config.json)</summary><pre>{settings}</pre></details>
</body></html>"""
