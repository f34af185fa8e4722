"""The one scoring loop: named rewards over media, in batches, each reward model loaded once per call.

:func:`score_batches` serves every recipe: the repository's items (sharded across processes, each batch stored as
it is scored, so a resumed run scores only what is left) and evaluation samples (kept in memory for the table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from prefopt.config import RewardSpec, to_dict
from prefopt.distributed import barrier, is_main, shard
from prefopt.errors import PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.media import read_media
from prefopt.plugins import get_registry
from prefopt.progress import progress_bar
from prefopt.repository import MediaRecord, MediaRepository, reward_key

SCORE_BATCH = 4
T = TypeVar("T")


def load_rewards(rewards: Mapping[str, RewardSpec]) -> dict[str, Any]:
    """Each named reward's model, built once."""
    return {name: get_registry().create("rewards", spec.name, spec.options) for name, spec in rewards.items()}


def score_batches(reward: Any, items: Sequence[T], video: Callable[[T], np.ndarray], prompt: Callable[[T], str],
                  references: Sequence, *, description: str, on_scored: Callable[[list[T], list[RewardScore]], None],
                  show_progress: bool = True) -> None:
    """Score ``items`` with one reward, ``SCORE_BATCH`` media at a time; ``on_scored(batch, scores)`` after each."""
    with progress_bar(description, len(items), enabled=show_progress) as bar:
        for start in range(0, len(items), SCORE_BATCH):
            batch = list(items[start : start + SCORE_BATCH])
            scores = reward.score([video(item) for item in batch], [prompt(item) for item in batch], references)
            on_scored(batch, list(scores))
            bar.advance(len(batch))


def score_in_memory(rewards: Mapping[str, Any], samples: Sequence[tuple[str, np.ndarray]], references: Sequence = (),
                    description: str = "scoring") -> dict[str, list[RewardScore]]:
    """Every named reward's scores of ``(prompt, video)`` samples, in their order."""
    scored: dict[str, list[RewardScore]] = {}
    for name, reward in rewards.items():
        scored[name] = []
        score_batches(reward, samples, lambda s: s[1], lambda s: s[0], references,
                      description=f"{description}: {name}", on_scored=lambda _, scores, out=scored[name]: out.extend(scores))
    return scored


def reward_keys(rewards: Mapping[str, RewardSpec]) -> dict[str, str]:
    """Each reward name's key in the repository: its plugin and options, so changed options score anew."""
    return {name: reward_key(spec.name, to_dict(spec.options), {}) for name, spec in rewards.items()}


def score_items(repository: MediaRepository, rewards: Mapping[str, RewardSpec], items: Sequence[MediaRecord],
                references: Sequence = ()) -> dict[str, int]:
    """Score every item not yet scored by each named reward, sharded across processes; returns how many were
    scored per reward."""
    counts = {}
    for name, key in reward_keys(rewards).items():
        spec = rewards[name]
        done = repository.scored_ids(key)  # read once, not once per item
        pending = [r for r in items if r.id not in done]
        counts[name] = len(pending)
        if not pending:
            continue
        reward = get_registry().create("rewards", spec.name, spec.options)

        def store(batch: list[MediaRecord], scores: list[RewardScore], key=key, name=name, reward=reward) -> None:
            repository.add_scores(key, name, {r.id: s for r, s in zip(batch, scores)}, reward.provenance())

        score_batches(reward, shard(pending), lambda r: read_media(repository.path(r.media_path)),
                      lambda r: r.prompt, references, description=f"scoring {name} ({spec.name})", on_scored=store,
                      show_progress=is_main())
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
    """Every reward that can check prompts (``ChecksPrompts``: the miniature action reward needs an action in each)
    accepts them: found before any work, not after a stage of sampling and training."""
    from prefopt.interfaces import ChecksPrompts

    for name, spec in rewards.items():
        cls = get_registry().get("rewards", spec.name).cls
        if issubclass(cls, ChecksPrompts):
            try:
                cls.check_prompts(spec.options, list(prompts))
            except PrefoptError as e:
                raise PrefoptError(f"reward `{name}`: {e}") from e
