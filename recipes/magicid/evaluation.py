"""Evaluation on held-out prompts: every model the run trained (base, identity LoRA, stage 1, final), side by side.

Each model generates the same prompts with the same seeds; the videos are scored with the recipe's three
rewards (mean 1–10 values and raw values) and the paper's metrics (``prefopt_recipes.common.metrics``: Face
Sim, Dynamic Degree, temporal consistency, CLIP-T, CLIP-I; FVD is reported as unavailable).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prefopt.data import tensors_digest
from prefopt.files import write_json, write_text
from prefopt.interfaces import CLIP_FEATURES, FACE_EMBEDDING, OPTICAL_FLOW, measures
from prefopt.media import read_media, write_media
from prefopt.progress import progress_bar
from prefopt.registry import get_registry
from prefopt_plugins.rewards.common import load_reference_photos
from prefopt_recipes.common.stages import config_hash

if TYPE_CHECKING:  # the recipe object these steps read (not imported at run time: a cycle)
    from prefopt_recipes.magicid.recipe import MagicIDRecipe

# (label, folder name, the paper's Table 2 row: ID pairs, dynamic pairs)
MODELS = [("base", "base", None), ("identity LoRA", "identity", (False, False)),
          ("stage 1 (ID pairs)", "stage1", (True, False)), ("MagicID (final)", "magicid", (True, True))]


TABLE_FILE, TABLE_MARKDOWN = "table.json", "table.md"  # the evaluation stage's results, in its folder


def video_name(index: int) -> str:
    """The file of a model's index-th evaluation video (prompt-major, then seed), in its folder."""
    return f"{index:03d}.mp4"


def _models(recipe: MagicIDRecipe) -> list[tuple[str, str, list[Path]]]:
    identity = recipe.lora("identity_lora")
    loras = {"base": [], "identity": [identity], "stage1": [identity, recipe.lora("stage1")],
             "magicid": [identity, recipe.lora("stage2")]}
    return [(label, slug, loras[slug]) for label, slug, _ in MODELS]


def _generate(recipe: MagicIDRecipe, backbone, folder: Path, loras: list[Path]) -> list[tuple[str, np.ndarray]]:
    c = recipe.config
    prompts = recipe.prompts()["eval"]
    jobs = [(p, c.evaluation.seed + i * 1000 + k) for i, p in enumerate(prompts)
            for k in range(c.evaluation.videos_per_prompt)]
    backbone.use_loras(loras)
    videos = []
    with progress_bar(f"evaluating: generating for {folder.name}", len(jobs)) as bar:
        for index, (prompt, seed) in enumerate(jobs):
            path = folder / video_name(index)
            if not path.is_file():
                made = backbone.generate([prompt], [seed], num_frames=c.video.num_frames, height=c.video.height,
                                         width=c.video.width, num_inference_steps=c.video.num_inference_steps,
                                         guidance_scale=c.video.guidance_scale)[0]
                write_media(path, made.frames, fps=c.video.fps)
            videos.append((prompt, read_media(path)))
            bar.advance()
    return videos


def _rewards(recipe: MagicIDRecipe) -> dict:
    return {name: get_registry().create("rewards", spec.name, spec.options)
            for name, spec in recipe.config.rewards.items()}


def _face_sim_model(recipe: MagicIDRecipe, identity):
    """The identity reward as Face Sim runs it: with the protocol's detector size where the reward has one."""
    options = recipe.config.rewards["identity"].options
    if not hasattr(options, "det_size") or options.det_size == recipe.config.evaluation.face_det_size:
        return identity
    changed = dataclasses.replace(options, det_size=recipe.config.evaluation.face_det_size)
    return get_registry().create("rewards", recipe.config.rewards["identity"].name, changed)


def _metrics_clip(recipe: MagicIDRecipe, rewards: dict):
    """The CLIP model for the CLIP metrics: a reward that declares CLIP features (the semantic one first), else
    `evaluation.clip_model`."""
    from prefopt_plugins.rewards.semantic import ClipSemanticConfig, ClipSemanticReward

    ordered = sorted(rewards.items(), key=lambda item: item[0] != "semantic")
    for _, reward in ordered:
        if measures(reward, CLIP_FEATURES):
            return reward
    if recipe.config.evaluation.clip_model:
        return ClipSemanticReward(ClipSemanticConfig(model=recipe.config.evaluation.clip_model))
    return None


def _score(rewards: dict, clip, videos, references, face_model, face_sim: str) -> dict[str, float]:
    from prefopt_recipes.common.metrics import evaluate_videos

    clips, prompts = [v for _, v in videos], [p for p, _ in videos]
    row: dict[str, float] = {}
    for role, reward in rewards.items():
        scores = reward.score(clips, prompts, references)
        row[role] = float(np.mean([s.value for s in scores]))
        row[f"{role}_raw"] = float(np.mean([s.raw for s in scores]))
    # Metrics come from whichever reward declares what they need, so a third-party identity or motion reward
    # gets Face Sim or Dynamic Degree too; one that declares nothing leaves the metric "unavailable".
    dynamics = rewards["dynamic"]
    metrics = evaluate_videos(
        clips, prompts, references, identity=face_model if measures(face_model, FACE_EMBEDDING) else None,
        dynamics=dynamics if measures(dynamics, OPTICAL_FLOW) else None, clip=clip, face_sim=face_sim)
    return {**row, **metrics}


def evaluate_models(recipe: MagicIDRecipe, folder: Path) -> list[dict]:
    """Generate and score evaluation videos for every model; writes ``table.json`` and ``table.md``."""
    backbone = recipe.backbone()
    references = load_reference_photos(recipe.photos())
    rewards = _rewards(recipe)  # loaded once for every model
    clip = _metrics_clip(recipe, rewards)
    face_model = _face_sim_model(recipe, rewards["identity"])
    table = []
    for label, slug, loras in _models(recipe):
        # Named by the LoRAs' tensors and metadata (not file bytes, which differ between two saves of one LoRA): a
        # video on disk is reused only for the weights that made it.
        made_by = config_hash(*(tensors_digest(path) for path in loras))[:8]
        model_folder = folder / f"{slug}-{made_by}"
        videos = _generate(recipe, backbone, model_folder, loras)
        table.append({"model": label, "videos": len(videos), "folder": str(model_folder),
                      **_score(rewards, clip, videos, references, face_model, recipe.config.evaluation.face_sim)})
    write_json(folder / TABLE_FILE, table)
    write_text(folder / TABLE_MARKDOWN, ablation_table(table))
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
