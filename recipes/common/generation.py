"""Generating media into the repository with the base model or base + LoRA adapters, and training examples
from selected pairs of repository items."""

from __future__ import annotations

import json

from prefopt.data import PreferenceExample, save_tensors
from prefopt.errors import PrefoptError
from prefopt.media import write_media
from prefopt.progress import progress_bar
from prefopt.repository import MediaRecord, MediaRepository


def generate_into(
    repository: MediaRepository, backbone, jobs: list[tuple[str, str, int]], *, source: str, stage: str, video,
    description: str, fps: int,
) -> int:
    """Generate ``(item_id, prompt, seed)`` jobs not yet in the repository, sharded across processes;
    returns how many this process made."""
    from prefopt_recipes.common.distributed import barrier, is_main, shard, world

    existing = repository.items_by_id()
    todo = shard([job for job in jobs if job[0] not in existing])
    with progress_bar(description, len(todo), enabled=is_main()) as bar:
        for start in range(0, len(todo), video.batch_size):
            batch = todo[start : start + video.batch_size]
            media = backbone.generate(
                [p for _, p, _ in batch], [s for _, _, s in batch], num_frames=video.num_frames,
                height=video.height, width=video.width, num_inference_steps=video.num_inference_steps,
                guidance_scale=video.guidance_scale,
            )
            records = []
            for (item_id, prompt, seed), made in zip(batch, media):
                suffix = ".png" if video.num_frames == 1 else ".mp4"  # image backbones write images
                media_path, latent_path = f"media/{item_id}{suffix}", f"latents/{item_id}.safetensors"
                write_media(repository.path(media_path), made.frames, fps=fps)
                save_tensors(repository.path(latent_path), {"latents": made.latents})
                records.append(MediaRecord(id=item_id, source=source, prompt=prompt, media_path=media_path,
                                           latent_path=latent_path, seed=seed, stage=stage,
                                           extra=json.dumps({"process": world()[0]})))
            repository.add(records)  # appended per batch: a crash loses at most the batch in flight
            bar.advance(len(batch))
    barrier()
    repository.refresh()  # every process sees what the others appended
    return len(todo)


def examples_from_pairs(repository: MediaRepository, pairs) -> list[PreferenceExample]:
    """Training examples for pairs of repository items: their saved latents (no VAE round trip), else media."""
    items = repository.items_by_id()

    def media(item_id: str) -> str:
        record = items[item_id]
        return str(repository.path(record.latent_path or record.media_path))

    return [PreferenceExample(p.prompt, media(p.winner_id), media(p.loser_id), p.weight) for p in pairs]


def verify_items(repository: MediaRepository, items: list[MediaRecord], expected: int, what: str) -> None:
    """A finished generation step's delivery: ``expected`` items, each with its media (and latent) file on disk;
    otherwise one sentence saying what is missing."""
    if len(items) < expected:
        raise PrefoptError(f"{what}: {expected - len(items)} of {expected} items are missing from `{repository.root}`.")
    for record in items:
        for relative in (record.media_path, record.latent_path):
            if relative and not repository.path(relative).is_file():
                raise PrefoptError(f"{what}: file `{repository.path(relative)}` of item `{record.id}` is missing.")
