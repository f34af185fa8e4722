"""Sampling into a run's media repository: the repository's videos sharded across processes, each batch recorded
as soon as it is written (the loop itself, :func:`prefopt.sampling.sample_files`, is prefopt's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from prefopt.data import PreferenceExample
from prefopt.distributed import barrier, is_main, shard, world
from prefopt.errors import PrefoptError
from prefopt.repository import MediaRecord, MediaRepository
from prefopt.sampling import SampleJob, Sampling, sample_files


def generate_into(repository: MediaRepository, backbone, jobs: Sequence[SampleJob], sampling: Sampling, *,
                  source: str, stage: str, description: str) -> int:
    """Sample the jobs not yet in the repository, sharded across processes, each batch recorded as soon as it is
    written (a crash loses at most the batch in flight); returns how many this process made."""
    existing = repository.items_by_id()
    todo = shard([job for job in jobs if job.name not in existing])

    def record(batch: list[SampleJob], media: list[Path], latents: list[Path | None]) -> None:
        repository.add([MediaRecord(id=job.name, source=source, prompt=job.prompt, seed=job.seed, stage=stage,
                                    media_path=repository.relative(path),
                                    latent_path=repository.relative(latent) if latent else "",
                                    extra=json.dumps({"process": world()[0]}))
                        for job, path, latent in zip(batch, media, latents)])

    # The repository's records say what is done: a file a crash left without its record is made (the same seed
    # gives the same media) and recorded, never skipped unrecorded.
    sample_files(backbone, todo, sampling, repository.media_dir, latent_dir=repository.latent_dir,
                 description=description, on_written=record, show_progress=is_main(), skip_existing=False)
    barrier()
    repository.refresh()  # every process sees what the others appended
    return len(todo)


def verify_items(repository: MediaRepository, items: Sequence[MediaRecord], expected: int, what: str) -> None:
    """A finished generation step's delivery: ``expected`` items, each with its media (and latent) file on disk;
    otherwise one sentence saying what is missing."""
    if len(items) < expected:
        raise PrefoptError(f"{what}: {expected - len(items)} of {expected} items are missing from `{repository.root}`.")
    for record in items:
        for relative in (record.media_path, record.latent_path):
            if relative and not repository.path(relative).is_file():
                raise PrefoptError(f"{what}: file `{repository.path(relative)}` of item `{record.id}` is missing.")


def examples_from_pairs(repository: MediaRepository, pairs) -> list[PreferenceExample]:
    """Training examples for pairs of repository items: their saved latents (no VAE round trip), else media."""
    items = repository.items_by_id()

    def media(item_id: str) -> str:
        record = items[item_id]
        return str(repository.path(record.latent_path or record.media_path))

    return [PreferenceExample(p.prompt, media(p.winner_id), media(p.loser_id), p.weight) for p in pairs]


def trained_lora(folder, **inputs) -> Path:
    """A training stage's delivery: its final LoRA, read back whole and finite."""
    from prefopt.data import verify_safetensors

    verify_safetensors(folder.lora, "the trained LoRA")
    return folder.lora
