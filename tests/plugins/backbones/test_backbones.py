"""Per-family checks of every first-party backbone on its tiny random pipeline: prefopt's latents, layouts and
normalisation agree with the pipeline's own sampling and decoding, and the media-size rules hold."""


import numpy as np
import pytest
import torch

from prefopt.tiny_models import tiny_backbones

TINY_MEDIA_SIZES = tiny_backbones()



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




def test_cogvideox_trains_on_its_own_noise_schedule(make_backbone):
    """CogVideoX's scheduler shifts ᾱ by `snr_shift_scale`; a plain DDPMScheduler.from_config would drop it."""
    from diffusers import DDPMScheduler

    backbone = make_backbone("cogvideox")
    assert backbone.prediction_type == "v_prediction"
    own = backbone.train_scheduler.alphas_cumprod.float()
    plain = DDPMScheduler.from_config(backbone.pipe.scheduler.config).alphas_cumprod.float()
    assert type(backbone.train_scheduler) is type(backbone.pipe.scheduler)
    assert not torch.allclose(own, plain)








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


@pytest.mark.parametrize("kind", ["hunyuan-video", "wan", "ltx-video", "sd3"])
def test_a_bfloat16_model_gets_the_training_timestep_in_float32_as_from_its_pipeline(make_backbone, kind):
    """These pipelines pass the timestep in float32 while the weights are bf16; bf16 would round 1000σ to a
    multiple of 4 near 1000 (875.1 → 876). (FLUX's transformer casts it to its own dtype, in both.)"""
    backbone = make_backbone(kind, dtype="bfloat16")
    seen = []
    backbone.denoiser.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"]), with_kwargs=True)
    shape = (1, *backbone.latent_shape(*TINY_MEDIA_SIZES[kind]))
    latents, noise = torch.zeros(shape), torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        backbone.forward_train(latents, noise, torch.tensor([0.8751]), backbone.encode_prompts(["a cat"]))
    assert seen[0].dtype == torch.float32
    assert seen[0].flatten()[0].item() == pytest.approx(875.1, abs=1e-3)
