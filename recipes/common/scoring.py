"""Scoring repository items with named rewards (each reward model loaded once per call)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefopt.config import RewardSpec, to_dict
from prefopt.errors import PrefoptError
from prefopt.media import read_media
from prefopt.progress import progress_bar
from prefopt.registry import get_registry
from prefopt.repository import MediaRecord, MediaRepository, reward_key

SCORE_BATCH = 4


def reward_keys(rewards: Mapping[str, RewardSpec]) -> dict[str, str]:
    """Each reward name's key in the repository: its plugin and options, so changed options score anew."""
    return {name: reward_key(spec.name, to_dict(spec.options), {}) for name, spec in rewards.items()}


def score_items(repository: MediaRepository, rewards: Mapping[str, RewardSpec], items: Sequence[MediaRecord],
                references: Sequence = ()) -> dict[str, int]:
    """Score every item not yet scored by each named reward, sharded across processes; returns how many were
    scored per reward."""
    from prefopt_recipes.common.distributed import barrier, is_main, shard

    counts = {}
    for name, key in reward_keys(rewards).items():
        spec = rewards[name]
        done = repository.scored_ids(key)  # read once, not once per item
        pending = [r for r in items if r.id not in done]
        counts[name] = len(pending)
        todo = shard(pending)
        if not pending:
            continue
        reward = get_registry().create("rewards", spec.name, spec.options)
        with progress_bar(f"scoring {name} ({spec.name})", len(todo), enabled=is_main()) as bar:
            for start in range(0, len(todo), SCORE_BATCH):
                batch = todo[start : start + SCORE_BATCH]
                videos = [read_media(repository.path(r.media_path)) for r in batch]
                scores = reward.score(videos, [r.prompt for r in batch], references)
                repository.add_scores(key, name, {r.id: s for r, s in zip(batch, scores)}, reward.provenance())
                bar.advance(len(batch))
        barrier()
    return counts


def verify_scored(repository: MediaRepository, rewards: Mapping[str, RewardSpec], items: Sequence[MediaRecord],
                  what: str) -> None:
    """A finished scoring step's delivery: every item scored by every named reward; otherwise one sentence."""
    for name, key in reward_keys(rewards).items():
        missing = len({r.id for r in items} - repository.scored_ids(key))
        if missing:
            raise PrefoptError(f"{what}: {missing} of {len(items)} items have no `{name}` score in "
                               f"`{repository.root}`.")


def check_prompts(rewards: Mapping[str, RewardSpec], prompts: Sequence[str]) -> None:
    """Every reward that can check prompts (the miniature action reward needs an action in each) accepts them:
    found before any work, not after a stage of sampling and training."""
    for name, spec in rewards.items():
        check = getattr(get_registry().get("rewards", spec.name).cls, "check_prompts", None)
        if check is not None:
            try:
                check(spec.options, list(prompts))
            except PrefoptError as e:
                raise PrefoptError(f"reward `{name}`: {e}") from e
