"""The one sampling loop: media for named (prompt, seed) jobs, in batches, resumable.

Every recipe samples through :func:`sample_files`: the repository's videos (sharded across processes, each batch
recorded as soon as it is written), evaluation samples and held-out samples. A job whose file already exists is
not made again, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefopt.data import PreferenceExample, save_tensors
from prefopt.distributed import barrier, is_main, shard, world
from prefopt.errors import PrefoptError
from prefopt.media import write_media
from prefopt.progress import progress_bar
from prefopt.repository import MediaRecord, MediaRepository


@dataclass(frozen=True)
class SampleJob:
    """One sample to make: its name (file stem, repository item id), prompt and seed."""

    name: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class Sampling:
    """How samples are drawn: size, sampler steps, guidance, batch and the frame rate of written videos."""

    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    fps: int = 8
    batch_size: int = 1

    @classmethod
    def of(cls, options, **changes) -> Sampling:
        """From any options with these fields (a recipe's `video`, `sampling` or `evaluation` block)."""
        fields = {name: getattr(options, name) for name in cls.__dataclass_fields__ if hasattr(options, name)}
        return cls(**{**fields, **changes})

    @property
    def suffix(self) -> str:
        return ".png" if self.num_frames == 1 else ".mp4"  # image backbones write images


Written = Callable[[list[SampleJob], list[Path], list[Path | None]], None]


def sample_files(backbone, jobs: Sequence[SampleJob], sampling: Sampling, media_dir: Path, *,
                 latent_dir: Path | None = None, description: str, on_written: Written | None = None,
                 show_progress: bool = True, skip_existing: bool = True) -> list[Path]:
    """Make ``media_dir/<name><suffix>`` (and ``latent_dir/<name>.safetensors``) for every job, in batches, skipping
    those whose media file is there (unless not ``skip_existing``: the caller keeps its own record of what is done);
    ``on_written(jobs, media, latents)`` after each batch. Returns every job's media path."""
    paths = [media_dir / f"{job.name}{sampling.suffix}" for job in jobs]
    todo = [(job, path) for job, path in zip(jobs, paths) if not (skip_existing and path.is_file())]
    with progress_bar(description, len(todo), enabled=show_progress) as bar:
        for start in range(0, len(todo), sampling.batch_size):
            batch = todo[start : start + sampling.batch_size]
            made = backbone.generate(
                [job.prompt for job, _ in batch], [job.seed for job, _ in batch], num_frames=sampling.num_frames,
                height=sampling.height, width=sampling.width, num_inference_steps=sampling.num_inference_steps,
                guidance_scale=sampling.guidance_scale)
            latents: list[Path | None] = []
            for (job, path), media in zip(batch, made):
                write_media(path, media.frames, fps=sampling.fps)
                latent = latent_dir / f"{job.name}.safetensors" if latent_dir is not None else None
                if latent is not None:
                    save_tensors(latent, {"latents": media.latents})
                latents.append(latent)
            if on_written is not None:
                on_written([job for job, _ in batch], [path for _, path in batch], latents)
            bar.advance(len(batch))
    return paths


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
