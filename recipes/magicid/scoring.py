"""Scoring repository items with every reward of the recipe (models loaded once per call)."""

from __future__ import annotations

from prefopt.config import to_dict
from prefopt.media import read_media
from prefopt.progress import progress_bar
from prefopt.registry import get_registry
from prefopt.repository import reward_key
from prefopt_plugins.rewards.common import load_reference_photos

SCORE_BATCH = 4


def score_items(recipe, items) -> dict[str, int]:
    """Score every item not yet scored by each reward configuration, sharded across processes; returns how
    many were scored in all."""
    from prefopt_recipes.magicid.distributed import barrier, is_main, shard

    repo = recipe.repository()
    references = load_reference_photos(recipe.photos())
    counts = {}
    for role, spec in recipe.config.rewards.items():
        key = reward_key(spec.name, to_dict(spec.options), {})
        done = repo.scored_ids(key)  # read once, not once per item
        pending = [r for r in items if r.id not in done]
        counts[role] = len(pending)
        todo = shard(pending)
        if not pending:
            continue
        reward = get_registry().create("rewards", spec.name, spec.options)
        with progress_bar(f"scoring {role} ({spec.name})", len(todo), enabled=is_main()) as bar:
            for start in range(0, len(todo), SCORE_BATCH):
                batch = todo[start : start + SCORE_BATCH]
                videos = [read_media(repo.path(r.media_path)) for r in batch]
                scores = reward.score(videos, [r.prompt for r in batch], references)
                repo.add_scores(key, role, {r.id: s for r, s in zip(batch, scores)}, reward.provenance())
                bar.advance(len(batch))
        barrier()
    return counts
