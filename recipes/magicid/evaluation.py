"""Evaluation on held-out prompts: the base model, the identity LoRA and the final model, side by side.

Each model generates the same prompts with the same seeds; the videos are scored with the recipe's three
rewards (mean 1–10 values and raw values) and the paper's metrics (``prefopt_plugins.evaluation``: Face
Sim, Dynamic Degree, temporal consistency, CLIP-T, CLIP-I; FVD is reported as unavailable).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefopt.media import read_media, write_media
from prefopt.progress import progress_bar
from prefopt.registry import get_registry
from prefopt_plugins.rewards.common import load_reference_photos
from prefopt_recipes.magicid.generation import AdapterSwitch
from prefopt_recipes.magicid.stages import config_hash, file_digest


def _models(recipe) -> list[tuple[str, list[Path]]]:
    identity = recipe._lora("identity_lora")
    return [("base", []), ("identity LoRA", [identity]), ("MagicID (final)", [identity, recipe._lora("stage2")])]


def _generate(recipe, backbone, adapters, folder: Path, loras: list[Path]) -> list[tuple[str, np.ndarray]]:
    c = recipe.config
    prompts = recipe.prompts()["eval"]
    jobs = [(p, c.evaluation.seed + i * 1000 + k) for i, p in enumerate(prompts)
            for k in range(c.evaluation.videos_per_prompt)]
    adapters.use(loras)
    videos = []
    with progress_bar(f"evaluating: generating for {folder.name}", len(jobs)) as bar:
        for index, (prompt, seed) in enumerate(jobs):
            path = folder / f"{index:03d}.mp4"
            if not path.is_file():
                made = backbone.generate([prompt], [seed], num_frames=c.video.num_frames, height=c.video.height,
                                         width=c.video.width, num_inference_steps=c.video.num_inference_steps,
                                         guidance_scale=c.video.guidance_scale)[0]
                write_media(path, made.frames, fps=c.video.fps)
            videos.append((prompt, read_media(path)))
            bar.advance()
    return videos


def _rewards(recipe) -> dict:
    return {role: get_registry().create("rewards", getattr(recipe.config.rewards, role).name,
                                        getattr(recipe.config.rewards, role).options)
            for role in ("identity", "dynamic", "semantic")}


def _metrics_clip(recipe, rewards: dict):
    """The CLIP model for the CLIP metrics: the semantic reward if it is CLIP, else `evaluation.clip_model`."""
    from prefopt_plugins.rewards.semantic import ClipSemanticConfig, ClipSemanticReward

    if isinstance(rewards["semantic"], ClipSemanticReward):
        return rewards["semantic"]
    if recipe.config.evaluation.clip_model:
        return ClipSemanticReward(ClipSemanticConfig(model=recipe.config.evaluation.clip_model))
    return None


def _score(rewards: dict, clip, videos, references) -> dict[str, float]:
    from prefopt_plugins.evaluation import evaluate_videos
    from prefopt_plugins.rewards.dynamics import DynamicsReward
    from prefopt_plugins.rewards.identity import IdentityReward

    clips, prompts = [v for _, v in videos], [p for p, _ in videos]
    row: dict[str, float] = {}
    for role, reward in rewards.items():
        scores = reward.score(clips, prompts, references)
        row[role] = float(np.mean([s.value for s in scores]))
        row[f"{role}_raw"] = float(np.mean([s.raw for s in scores]))
    identity, dynamics = rewards["identity"], rewards["dynamic"]
    metrics = evaluate_videos(
        clips, prompts, references, identity=identity if isinstance(identity, IdentityReward) else None,
        dynamics=dynamics if isinstance(dynamics, DynamicsReward) else None, clip=clip)
    return {**row, **metrics}


def evaluate_models(recipe, folder: Path) -> list[dict]:
    """Generate and score evaluation videos for every model; writes ``table.json`` and returns its rows."""
    backbone = recipe.backbone()
    adapters = AdapterSwitch(backbone)
    references = load_reference_photos(recipe.photos())
    rewards = _rewards(recipe)  # loaded once for every model
    clip = _metrics_clip(recipe, rewards)
    table = []
    for label, loras in _models(recipe):
        # Named by the LoRAs' content: a video on disk is reused only for the weights that made it.
        made_by = config_hash(*(file_digest(path) for path in loras))[:8]
        model_folder = folder / f"{label.split()[0].lower()}-{made_by}"
        videos = _generate(recipe, backbone, adapters, model_folder, loras)
        table.append({"model": label, "videos": len(videos), "folder": str(model_folder),
                      **_score(rewards, clip, videos, references)})
    (folder / "table.json").write_text(json.dumps(table, indent=2))
    return table
