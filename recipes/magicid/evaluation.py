"""Evaluation on held-out prompts: every model the run trained (base, identity LoRA, stage 1, final), side by side.

Each model generates the same prompts with the same seeds; the videos are scored with the recipe's three
rewards (mean 1–10 values and raw values) and the paper's metrics (``prefopt_recipes.common.metrics``: Face
Sim, Dynamic Degree, temporal consistency, CLIP-T, CLIP-I; FVD is reported as unavailable).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from prefopt.data import tensors_digest
from prefopt.errors import PrefoptError
from prefopt.files import read_json, write_json, write_text
from prefopt.interfaces import CLIP_FEATURES, FACE_EMBEDDING, OPTICAL_FLOW, measures
from prefopt.layout import StageFolder, find_sample, sample_name
from prefopt.media import load_reference_photos, read_media
from prefopt.plugins import get_registry
from prefopt.sampling import SampleJob, Sampling, sample_files
from prefopt.stages import config_hash
from prefopt_recipes.common.scoring import load_rewards, score_in_memory
from prefopt_recipes.magicid.config import MagicIDConfig, run_seed_base

# (label, folder name, the paper's Table 2 row: ID pairs, dynamic pairs)
MODELS = [("base", "base", None), ("identity LoRA", "identity", (False, False)),
          ("stage 1 (ID pairs)", "stage1", (True, False)), ("MagicID (final)", "magicid", (True, True))]


def _generate(backbone, folder: Path, loras: list[Path], prompts: list[str], config: MagicIDConfig,
              sampling: Sampling) -> list[tuple[str, np.ndarray]]:
    """Every (prompt, seed) of the evaluation, the same for every model; a video on disk is not made again."""
    jobs = evaluation_jobs(config, prompts)
    backbone.use_loras(loras)
    paths = sample_files(backbone, jobs, sampling, folder, description=f"evaluating: generating for {folder.name}")
    return [(job.prompt, read_media(path)) for job, path in zip(jobs, paths)]


def evaluation_jobs(config: MagicIDConfig, prompts: list[str]) -> list[SampleJob]:
    """The evaluation's (prompt, seed) jobs: in the run's own seed range, apart from its training videos' seeds."""
    c, base = config.evaluation, run_seed_base(config.run.seed)
    pairs = [(p, base + c.seed + i * 1000 + k) for i, p in enumerate(prompts) for k in range(c.videos_per_prompt)]
    return [SampleJob(sample_name(index), prompt, seed) for index, (prompt, seed) in enumerate(pairs)]


def _face_sim_model(config: MagicIDConfig, identity):
    """The identity reward as Face Sim runs it: with the protocol's detector size where the reward has one."""
    options = config.rewards["identity"].options
    if not hasattr(options, "det_size") or options.det_size == config.evaluation.face_det_size:
        return identity
    changed = dataclasses.replace(options, det_size=config.evaluation.face_det_size)
    return get_registry().create("rewards", config.rewards["identity"].name, changed)


def _metrics_clip(config: MagicIDConfig, rewards: dict):
    """The CLIP model for the CLIP metrics: `evaluation.clip_model` when set, else a reward that declares CLIP
    features (the semantic one first)."""
    if config.evaluation.clip_model:
        clip = get_registry().get("rewards", "clip-semantic")
        return clip.cls(clip.config_class(model=config.evaluation.clip_model))
    ordered = sorted(rewards.items(), key=lambda item: item[0] != "semantic")
    return next((reward for _, reward in ordered if measures(reward, CLIP_FEATURES)), None)


def _score(rewards: dict, clip, videos, references, face_model, face_sim: str) -> dict[str, float]:
    from prefopt_recipes.common.metrics import evaluate_videos

    clips, prompts = [v for _, v in videos], [p for p, _ in videos]
    row: dict[str, float] = {}
    for role, scores in score_in_memory(rewards, videos, references, description="evaluating: scoring").items():
        row[role] = float(np.mean([s.value for s in scores]))
        row[f"{role}_raw"] = float(np.mean([s.raw for s in scores]))
    # Metrics come from whichever reward declares what they need, so a third-party identity or motion reward
    # gets Face Sim or Dynamic Degree too; one that declares nothing leaves the metric "unavailable".
    dynamics = rewards["dynamic"]
    metrics = evaluate_videos(
        clips, prompts, references, identity=face_model if measures(face_model, FACE_EMBEDDING) else None,
        dynamics=dynamics if measures(dynamics, OPTICAL_FLOW) else None, clip=clip, face_sim=face_sim)
    return {**row, **metrics}


def evaluate_models(folder: StageFolder, config: MagicIDConfig, backbone, loras: dict[str, list[Path]],
                    prompts: list[str], photos: list[str], sampling: Sampling) -> list[dict]:
    """Generate and score the evaluation videos of every model (``loras``: folder name → the LoRAs it samples
    with); writes ``table.json`` and ``table.md``."""
    references = load_reference_photos(photos)
    rewards = load_rewards(config.rewards)  # loaded once for every model
    clip = _metrics_clip(config, rewards)
    face_model = _face_sim_model(config, rewards["identity"])
    table = []
    for label, slug, _ in MODELS:
        # Named by the LoRAs' tensors and metadata (not file bytes, which differ between two saves of one LoRA): a
        # video on disk is reused only for the weights that made it.
        made_by = config_hash(*(tensors_digest(path) for path in loras[slug]))[:8]
        samples = folder.samples(f"{slug}-{made_by}")
        videos = _generate(backbone, samples, loras[slug], prompts, config, sampling)
        table.append({"model": label, "videos": len(videos), "folder": samples.name,
                      **_score(rewards, clip, videos, references, face_model, config.evaluation.face_sim)})
    write_json(folder.table, table)
    write_text(folder.table_markdown, ablation_table(table))
    return table


def read_evaluation(folder: StageFolder, videos_per_model: int) -> list[dict]:
    """The evaluation table, checked: a row per model, each with ``videos_per_model`` videos on disk."""
    table = read_json(folder.table, "the evaluation table")
    try:
        models = [row["model"] for row in table]
        missing = [(row["folder"], i) for row in table for i in range(videos_per_model)
                   if find_sample(folder.samples(row["folder"]), i) is None]
        counts = [row["videos"] for row in table]
    except (KeyError, TypeError) as e:
        raise PrefoptError(f"the evaluation table `{folder.table}` has been edited ({e!r}).") from e
    if models != [label for label, _, _ in MODELS] or any(count != videos_per_model for count in counts):
        raise PrefoptError(f"the evaluation table `{folder.table}` does not hold {videos_per_model} videos of every "
                           "model.")
    if missing:
        raise PrefoptError(f"evaluation video {sample_name(missing[0][1])} of `{folder.samples(missing[0][0])}` is "
                           "missing.")
    return table


def _cell(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def ablation_table(rows: list[dict]) -> str:
    """The evaluation as the paper's Table 2 (pair-selection ablation), plus the base model and the other metrics.

    Dynamic is VBench's mean flow score (pixels), the quantity the paper's 5.7–14.4 values are on; VBench's
    Dynamic Degree (the fraction of dynamic videos, 0–1) is beside it.
    """
    rows_by_label = {row["model"]: row for row in rows}
    lines = [("| model | ID pairs | dynamic pairs | Face Sim ↑ (face-less frames) | Dynamic (flow) ↑ | "
             "Dynamic Degree (VBench) ↑ | CLIP-T ↑ | CLIP-I ↑ | T. Cons. ↑ |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for label, _, pairs in MODELS:
        row = rows_by_label.get(label)
        if row is None:
            continue
        id_pairs, dynamic_pairs = ("", "") if pairs is None else ("✓" if p else "" for p in pairs)
        lines.append(f"| {label} | {id_pairs} | {dynamic_pairs} | {_cell(row['face_sim'], 3)} ({row['faceless_frames']}) "
                     f"| {_cell(row['flow_score'], 2)} | {_cell(row['dynamic_degree'], 2)} | {_cell(row['clip_t'], 2)} "
                     f"| {_cell(row['clip_i'], 2)} | {_cell(row['temporal_consistency'], 4)} |")
    return "\n".join(lines) + "\n"
