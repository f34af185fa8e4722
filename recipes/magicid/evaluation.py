"""Evaluation on held-out prompts: the base model, the identity LoRA and the final model, side by side.

Each model generates the same prompts with the same seeds; the videos are scored with the recipe's three
rewards. Reported per model: the mean 1–10 scores, Face Sim (the identity reward's raw similarity; with
insightface ArcFace this is the paper's cosine metric), the fraction of videos VBench calls dynamic, and
the raw prompt-following score (CLIP-T for `clip-semantic`).
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


def _score(recipe, videos, references) -> dict[str, float]:
    row: dict[str, float] = {}
    for role in ("identity", "dynamic", "semantic"):
        spec = getattr(recipe.config.rewards, role)
        reward = get_registry().create("rewards", spec.name, spec.options)
        scores = reward.score([v for _, v in videos], [p for p, _ in videos], references)
        row[role] = float(np.mean([s.value for s in scores]))
        row[f"{role}_raw"] = float(np.mean([s.raw for s in scores]))
        if role == "dynamic":
            row["vbench_dynamic_fraction"] = float(np.mean([bool(s.metadata.get("vbench_dynamic")) for s in scores]))
    return row


def evaluate_models(recipe, folder: Path) -> list[dict]:
    """Generate and score evaluation videos for every model; writes ``table.json`` and returns its rows."""
    backbone = recipe.backbone()
    adapters = AdapterSwitch(backbone)
    references = load_reference_photos(recipe.photos())
    table = []
    for label, loras in _models(recipe):
        model_folder = folder / label.split()[0].lower()
        videos = _generate(recipe, backbone, adapters, model_folder, loras)
        table.append({"model": label, "videos": len(videos), "folder": str(model_folder),
                      **_score(recipe, videos, references)})
    (folder / "table.json").write_text(json.dumps(table, indent=2))
    return table
