"""Per-family checks of every first-party backbone on its tiny random pipeline: prefopt's latents, layouts and
normalisation agree with the pipeline's own sampling and decoding, and the media-size rules hold."""

import math

import numpy as np
import pytest
import torch

from prefopt.tiny_models import tiny_backbones

TINY_MEDIA_SIZES = tiny_backbones()
from prefopt.trainer import TrainerConfig, media_size

IMAGE_KINDS = ["stable-diffusion", "sdxl", "sd3", "flux"]


@pytest.mark.parametrize("kind", list(TINY_MEDIA_SIZES))
def test_generated_media_decode_as_the_pipeline_decodes_them(make_backbone, kind):
    """generate() brings the pipeline's latents to the training layout and decodes them itself; the pixels must
    match the pipeline's own decoding of the same sample (same seed), so layout and normalisation are right."""
    backbone = make_backbone(kind)
    frames, height, width = TINY_MEDIA_SIZES[kind]
    made = backbone.generate(["a cat"], [3], num_frames=frames, height=height, width=width, num_inference_steps=2,
                             guidance_scale=1.0)[0]
    call = dict(prompt=["a cat"], generator=[torch.Generator().manual_seed(3)], height=height, width=width,
                num_inference_steps=2, guidance_scale=1.0, output_type="np", **backbone._pipeline_call_kwargs())
    if backbone.media == "video":
        call["num_frames"] = frames
    output = backbone.pipe(**call)
    expected = output.images if backbone.media == "image" else output.frames[0]
    expected = np.round(np.asarray(expected, dtype=np.float64).reshape(made.frames.shape) * 255)
    assert np.abs(made.frames.astype(np.float64) - expected).max() <= 1.0
    encoded = backbone.encode_media(torch.zeros(1, 3, frames, height, width))
    assert made.latents.shape == encoded.shape[1:]  # saved latents train like encoded media


@pytest.mark.parametrize("kind", list(TINY_MEDIA_SIZES))
def test_latents_decode_back_to_the_media_the_vae_would_give(make_backbone, kind):
    """encode_media normalises, decode_latents denormalises: together, exactly the VAE's own round trip."""
    backbone = make_backbone(kind)
    frames, height, width = TINY_MEDIA_SIZES[kind]
    pixels = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = backbone.decode_latents(backbone.encode_media(pixels))
    vae = backbone.pipe.vae
    with torch.no_grad():
        vae_input = pixels[:, :, 0] if backbone.media == "image" else pixels
        direct = vae.decode(vae.encode(vae_input).latent_dist.mode(), return_dict=False)[0]
    direct = direct.unsqueeze(2) if backbone.media == "image" else direct
    direct = ((direct.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 4, 1).numpy()
    assert np.abs(ours.astype(np.float64) - direct).max() <= 1.0


def test_ltx_latents_are_normalised_with_the_vae_statistics(make_backbone):
    backbone = make_backbone("ltx-video")
    vae = backbone.pipe.vae
    pixels = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mode()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    assert not torch.allclose(mean, torch.zeros_like(mean))  # the tiny VAE's statistics are not trivial
    torch.testing.assert_close(backbone.encode_media(pixels), (raw - mean) * vae.config.scaling_factor / std)


@pytest.mark.parametrize("kind", ["flux", "ltx-video"])
def test_dynamic_shift_grows_with_the_token_count_and_a_configured_shift_wins(make_backbone, kind):
    backbone = make_backbone(kind)
    c = backbone.pipe.scheduler.config
    small, large = (1, 4, 1, 16, 16), (1, 4, 1, 64, 64)
    tokens = backbone._sequence_length(large)
    mu = c.base_shift + (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len) * (
        tokens - c.base_image_seq_len)
    assert backbone.training_shift(large) == pytest.approx(math.exp(mu))
    assert backbone.training_shift(large) > backbone.training_shift(small)
    if kind == "flux":
        assert backbone.training_shift(large) != c.shift  # the scheduler's unused static `shift` is not read
    with pytest.raises(ValueError, match="pass `latent_shape`"):
        backbone.sample_timesteps(2)
    assert make_backbone(kind, shift=2.0).training_shift(large) == 2.0


def test_cogvideox_trains_on_its_own_noise_schedule(make_backbone):
    """CogVideoX's scheduler shifts ᾱ by `snr_shift_scale`; a plain DDPMScheduler.from_config would drop it."""
    from diffusers import DDPMScheduler

    backbone = make_backbone("cogvideox")
    assert backbone.prediction_type == "v_prediction"
    own = backbone.train_scheduler.alphas_cumprod.float()
    plain = DDPMScheduler.from_config(backbone.pipe.scheduler.config).alphas_cumprod.float()
    assert type(backbone.train_scheduler) is type(backbone.pipe.scheduler)
    assert not torch.allclose(own, plain)


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


def test_cogvideox_1_5_is_refused_with_what_is_supported(tmp_path):
    from prefopt.errors import PrefoptError
    from prefopt_plugins.backbones.cogvideox import (
        CogVideoXBackbone,
        CogVideoXConfig,
        tiny_cogvideox_pipeline,
    )

    pipe = tiny_cogvideox_pipeline()
    pipe.transformer.register_to_config(patch_size_t=2)
    with pytest.raises(PrefoptError, match="CogVideoX 1.5 .* supports CogVideoX-2b and -5b only"):
        CogVideoXBackbone(CogVideoXConfig(pretrained="tiny", dtype="float32", device="cpu"), pipeline=pipe)
