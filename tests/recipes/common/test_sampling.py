"""The one sampling loop: batches, files under their job names, nothing made twice, repository records."""

import numpy as np
import torch

from prefopt.interfaces import GeneratedMedia
from prefopt.media import read_media
from prefopt.repository import MediaRepository
from prefopt.sampling import SampleJob, Sampling, sample_files
from prefopt_recipes.common.sampling import generate_into


class CountingBackbone:
    """Stands in for a model: a seed's video is noise drawn from that seed; every call is counted."""

    def __init__(self):
        self.calls: list[list[int]] = []

    def generate(self, prompts, seeds, *, num_frames, height, width, num_inference_steps, guidance_scale):
        self.calls.append(list(seeds))
        return [GeneratedMedia(np.random.default_rng(s).integers(0, 255, (num_frames, height, width, 3), np.uint8),
                               torch.full((1, 4, 1, 2, 2), float(s)), p, s) for p, s in zip(prompts, seeds)]


SAMPLING = Sampling(num_frames=4, height=16, width=16, num_inference_steps=2, guidance_scale=1.0, batch_size=2)


def test_jobs_are_made_in_batches_under_their_names_and_never_twice(tmp_path):
    backbone = CountingBackbone()
    jobs = [SampleJob(f"{i:03d}", "a prompt", seed=10 + i) for i in range(3)]
    paths = sample_files(backbone, jobs[:2], SAMPLING, tmp_path, description="sampling")
    assert backbone.calls == [[10, 11]] and [p.name for p in paths] == ["000.mp4", "001.mp4"]
    paths = sample_files(backbone, jobs, SAMPLING, tmp_path, description="sampling")  # a resumed run
    assert backbone.calls == [[10, 11], [12]] and read_media(paths[2]).shape == (4, 16, 16, 3)
    image = Sampling(num_frames=1, height=16, width=16, num_inference_steps=2, guidance_scale=1.0)
    assert sample_files(backbone, jobs[:1], image, tmp_path / "images", description="x")[0].suffix == ".png"


def test_the_repository_records_each_batch_with_its_media_and_latents(tmp_path):
    repository, backbone = MediaRepository(tmp_path), CountingBackbone()
    jobs = [SampleJob(f"base-{i}", "a prompt", seed=i) for i in range(3)]
    assert generate_into(repository, backbone, jobs, SAMPLING, source="base", stage="s1", description="x") == 3
    items = repository.items_by_id()
    assert sorted(items) == ["base-0", "base-1", "base-2"] and items["base-1"].media_path == "media/base-1.mp4"
    assert items["base-2"].latent_path == "latents/base-2.safetensors" and items["base-2"].seed == 2
    assert generate_into(repository, backbone, jobs, SAMPLING, source="base", stage="s1", description="x") == 0
    assert len(backbone.calls) == 2  # 2 + 1 in batches of 2; nothing again


def test_a_file_a_crash_left_without_its_record_is_made_and_recorded(tmp_path):
    """Killed after writing a video and before recording it: the next run records it, not skips it forever."""
    repository, backbone = MediaRepository(tmp_path), CountingBackbone()
    jobs = [SampleJob(f"base-{i}", "a prompt", seed=i) for i in range(3)]
    sample_files(backbone, jobs[1:2], SAMPLING, repository.media_dir, description="x")  # on disk, unrecorded
    assert generate_into(repository, backbone, jobs, SAMPLING, source="base", stage="s1", description="x") == 3
    assert sorted(repository.items_by_id()) == ["base-0", "base-1", "base-2"]
