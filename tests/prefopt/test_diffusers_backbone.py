"""The diffusers base classes every family builds on: media sizes, image defaults, the flow-matching σ shift."""

import math

import pytest

from prefopt.tiny_models import tiny_backbones
from prefopt.trainer import TrainerConfig, media_size

TINY_MEDIA_SIZES = tiny_backbones()
IMAGE_KINDS = [kind for kind, (frames, _, _) in TINY_MEDIA_SIZES.items() if frames == 1]


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
