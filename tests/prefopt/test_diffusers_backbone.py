"""The diffusers base classes every family builds on: media sizes, image defaults, the flow-matching σ shift."""

import math

import pytest
import torch

from prefopt.tiny_models import tiny_backbones
from prefopt.trainer import TrainerConfig, media_size

TINY_MEDIA_SIZES = tiny_backbones()
IMAGE_KINDS = [kind for kind, (frames, _, _) in TINY_MEDIA_SIZES.items() if frames == 1]


@pytest.mark.parametrize("kind", ["flux", "ltx-video"])
def test_media_size_dependent_schedulers_train_unshifted_by_default_as_the_references_do(make_backbone, kind):
    """diffusers' FLUX trainer and finetrainers' LTX trainer draw σ from the unshifted grid."""
    backbone = make_backbone(kind)
    for shape in [(1, 4, 1, 16, 16), (1, 4, 9, 64, 64)]:
        assert backbone.training_shift(shape) == 1.0
    assert backbone.sample_timesteps(2).shape == (2,)  # no latent shape needed


@pytest.mark.parametrize("kind", ["flux", "ltx-video"])
def test_dynamic_shift_grows_with_the_token_count_and_a_configured_shift_wins(make_backbone, kind):
    backbone = make_backbone(kind, dynamic_shift=True)
    c = backbone.pipe.scheduler.config
    small, large = (1, 4, 1, 16, 16), (1, 4, 1, 32, 32)
    tokens = backbone._sequence_length(large)
    mu = c.base_shift + (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len) * (
        tokens - c.base_image_seq_len)
    assert mu < c.max_shift
    assert backbone.training_shift(large) == pytest.approx(math.exp(mu))
    assert backbone.training_shift(large) > backbone.training_shift(small)
    if kind == "flux":
        assert backbone.training_shift(large) != c.shift  # the scheduler's unused static `shift` is not read
    with pytest.raises(ValueError, match="pass `latent_shape`"):
        backbone.sample_timesteps(2)
    assert make_backbone(kind, shift=2.0, dynamic_shift=True).training_shift(large) == 2.0


@pytest.mark.parametrize("kind", ["flux", "ltx-video"])
def test_dynamic_shift_past_the_schedulers_max_is_capped_with_one_warning(make_backbone, kind, caplog):
    """Past max_image_seq_len the line has no bound (LTX-Video: 277 at 121×704×1280); training caps it."""
    backbone = make_backbone(kind, dynamic_shift=True)
    c = backbone.pipe.scheduler.config
    huge = (1, 4, 9, 256, 256)
    assert backbone._sequence_length(huge) > c.max_image_seq_len
    with caplog.at_level("WARNING", logger="prefopt"):
        shifts = {backbone.training_shift(huge) for _ in range(3)}
    assert len(shifts) == 1 and shifts.pop() == pytest.approx(math.exp(c.max_shift))
    warnings = [r.getMessage() for r in caplog.records if "caps it at the scheduler's max_shift" in r.getMessage()]
    assert len(warnings) == 1 and "backbone.options.shift" in warnings[0]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_backbones_take_one_frame_at_their_native_size_by_default(make_backbone, kind):
    backbone = make_backbone(kind)
    assert media_size(backbone, TrainerConfig()) == (1, *backbone.default_resolution)
    assert backbone.default_resolution[0] >= 512
    with pytest.raises(ValueError, match=f"backbone `{kind}` makes images: `num_frames` must be 1, got 9"):
        backbone.check_media_size(9, 32, 32)


@pytest.mark.parametrize("kind, frames", [("ltx-video", 12), ("cogvideox", 10), ("wan", 6)])
def test_video_backbones_refuse_frame_counts_their_vae_cannot_take(make_backbone, kind, frames):
    backbone = make_backbone(kind)
    with pytest.raises(ValueError, match=r"takes \d·k \+ 1 frames"):
        backbone.check_media_size(frames, 32, 32)
    assert media_size(backbone, TrainerConfig())[0] == backbone.default_num_frames
    backbone.check_media_size(backbone.default_num_frames, 32, 32)


@pytest.mark.parametrize("kind, multiple", [("flux", 4), ("sd3", 4), ("ltx-video", 4), ("cogvideox", 16),
                                            ("hunyuan-video", 8), ("sdxl", 4)])
def test_sizes_the_vae_and_patches_cannot_take_are_refused_before_encoding(make_backbone, kind, multiple):
    """The tiny pipelines' factors (real ones: 16 for FLUX, SD3, CogVideoX and HunyuanVideo, 32 for LTX-Video)."""
    backbone = make_backbone(kind)
    frames = TINY_MEDIA_SIZES[kind][0]
    assert backbone.spatial_multiple == multiple
    backbone.check_media_size(frames, 2 * multiple, 3 * multiple)
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        backbone.check_media_size(frames, 2 * multiple + 2, 3 * multiple)


def test_a_positive_logit_mean_trains_noisier_sigma_as_in_the_sd3_paper(make_backbone):
    """prefopt's density is over σ itself (SD3 paper: m > 0 favours noise); diffusers' trainers index their
    descending grid with u, which mirrors it (docs/losses.md): at m = 0.5 and shift 3 the median σ is 0.832 here,
    0.647 there."""
    generator = torch.Generator().manual_seed(0)
    for shift, median in [(1.0, 1 / (1 + math.exp(-0.5))), (3.0, 0.832)]:
        backbone = make_backbone("hunyuan-video", logit_mean=0.5, shift=shift)
        sigmas = backbone.sample_timesteps(20000, generator)
        assert sigmas.median().item() == pytest.approx(median, abs=0.01)


def test_preconditioned_outputs_give_diffusers_sd3_trainers_x0_error(make_backbone):
    """diffusers' SD3 LoRA trainer (its default) compares x_σ − σv with x₀; prefopt's option gives the same
    per-sample error through the timestep weights, and leaves the prediction and target as they are."""
    from prefopt.losses import per_sample_mse

    plain, preconditioned = make_backbone("sd3"), make_backbone("sd3", precondition_outputs=True)
    gen = torch.Generator().manual_seed(0)
    shape = (3, *plain.latent_shape(*TINY_MEDIA_SIZES["sd3"]))
    latents, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    sigmas, conditioning = torch.tensor([0.1, 0.5, 0.9]), plain.encode_prompts(["a cat"] * 3)
    with torch.no_grad():
        a = plain.forward_train(latents, noise, sigmas, conditioning)
        b = preconditioned.forward_train(latents, noise, sigmas, conditioning)
    torch.testing.assert_close(b.prediction, a.prediction)
    noisy = (1 - sigmas.view(-1, 1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1, 1) * noise
    x0_error = per_sample_mse(noisy - sigmas.view(-1, 1, 1, 1, 1) * b.prediction, latents)
    torch.testing.assert_close(per_sample_mse(b.prediction, b.target) * b.weights, x0_error, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b.weights, a.weights * sigmas**2)
