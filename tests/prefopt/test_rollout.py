"""The online-RL sampler on real (tiny) pipelines: without SDE steps it is the pipeline's own sampler, its SDE steps
land where the window says, and recomputing a step's log-probability with the same policy gives the sampler's."""

import pytest
import torch

from prefopt.plugins import get_registry
from prefopt.rollout import SDE, initial_noise, sample, step_log_prob, window_steps
from prefopt.tiny_models import tiny_backbones

TINY_MEDIA_SIZES = tiny_backbones()



@pytest.mark.parametrize("kind", list(TINY_MEDIA_SIZES))
def test_the_latent_shape_is_the_encoded_shape(make_backbone, kind):
    backbone = make_backbone(kind)
    frames, height, width = TINY_MEDIA_SIZES[kind]
    encoded = backbone.encode_media(torch.zeros(1, 3, frames, height, width))
    assert tuple(encoded.shape[1:]) == backbone.latent_shape(frames, height, width)


def _ode_rollout(backbone, prompts, seeds, steps, guidance):
    frames, height, width = TINY_MEDIA_SIZES[backbone.name]
    shape = backbone.latent_shape(frames, height, width)
    sigmas = backbone.sampling_sigmas(steps, (len(prompts), *shape))
    negative = backbone.encode_prompts([""] * len(prompts)) if guidance > 1 else None
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return sample(backbone, backbone.denoiser, backbone.encode_prompts(prompts), negative,
                  initial_noise(seeds, shape), sigmas, SDE(frozenset(), 0.7), guidance, generators)


@pytest.mark.parametrize("kind, guidance", [("hunyuan-video", 1.0), ("sd3", 4.5), ("flux", 1.0)])
def test_without_sde_steps_the_sampler_is_the_pipelines_own(make_backbone, kind, guidance):
    """Same seeds, same grid, same guidance: the final latents equal what the diffusers pipeline returns (SD3 with
    classifier-free guidance; the guidance-distilled models with their embedded guidance, which the pipelines take
    as `guidance_scale`)."""
    backbone = make_backbone(kind)
    embedded = getattr(backbone.config, "guidance", None)
    frames, height, width = TINY_MEDIA_SIZES[kind]
    prompts, seeds = ["a cat runs", "a dog sits"], [3, 11]
    ours = _ode_rollout(backbone, prompts, seeds, 4, guidance).latents
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    theirs = backbone._sample_latents(prompts, generators, num_frames=frames, height=height, width=width,
                                      num_inference_steps=4, guidance_scale=embedded or guidance)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.float().cpu(), rtol=1e-4, atol=1e-4)


def test_the_sde_window_picks_consecutive_steps_in_its_range():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        steps = window_steps(10, 2, (0.0, 0.5), generator)
        start = min(steps)
        assert steps == frozenset({start, start + 1}) and 0 <= start <= 5
    assert window_steps(10, 0, (0.0, 0.5), generator) == frozenset(range(10))


def test_a_steps_log_probability_recomputed_with_the_same_policy_is_the_samplers(make_backbone):
    backbone = make_backbone("hunyuan-video")
    frames, height, width = TINY_MEDIA_SIZES["hunyuan-video"]
    shape = backbone.latent_shape(frames, height, width)
    sigmas = backbone.sampling_sigmas(6, (2, *shape))
    conditioning = backbone.encode_prompts(["a cat runs", "a cat runs"])
    sde = SDE(frozenset({1, 2}), 0.7)
    generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
    rollout = sample(backbone, backbone.denoiser, conditioning, None, initial_noise([1, 2], shape), sigmas, sde, 1.0,
                     generators)
    assert rollout.steps == (1, 2) and rollout.states.shape[:2] == (2, 2)
    for k, index in enumerate(rollout.steps):
        log_prob, _, _ = step_log_prob(backbone, backbone.denoiser, rollout.states[:, k], rollout.next_states[:, k],
                                       sigmas, index, sde, conditioning, None, 1.0)
        torch.testing.assert_close(log_prob, rollout.log_probs[:, k], rtol=0, atol=1e-5)
    # Consecutive SDE steps: the state before step 2 is the one step 1 sampled.
    assert torch.equal(rollout.states[:, 1], rollout.next_states[:, 0])


def test_ddpm_backbones_have_no_velocity_grid():
    assert not hasattr(get_registry().get("backbones", "stable-diffusion").cls, "sampling_sigmas")
