"""Tests of the example backbone plugin for a family whose autoencoder is not a KL VAE: a tiny random pipeline
saved and loaded through the real loading code, latents as the DC-AE makes them, a DPO run whose LoRA diffusers
loads back, and samples decoded as the pipeline decodes them."""

import os

os.environ["PREFOPT_LOAD_PLUGINS"] = ""  # only what the tests register: never other installed plugins
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import prefopt_sana
import pytest
import torch

from prefopt.config import parse
from prefopt.data import PreferenceExample
from prefopt.media import write_media
from prefopt.plugins import get_registry, register_plugin, unregister_plugin
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig


@pytest.fixture
def registry():
    register_plugin(prefopt_sana, name="sana-example", package="prefopt-sana")
    yield get_registry()
    unregister_plugin("sana-example")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sana") / "pipeline"
    prefopt_sana.SanaBackbone.tiny_pipeline().save_pretrained(directory)
    return directory


def _backbone(registry, saved, **options):
    entry = registry.get("backbones", "sana")
    options = {"pretrained": str(saved), "dtype": "float32", "device": "cpu", "max_sequence_length": 16, **options}
    return entry.cls(parse(entry.config_class, options))


def test_the_backbone_registers_through_the_hook(registry):
    assert registry.get("backbones", "sana").package == "prefopt-sana"


def test_media_encode_to_the_dc_ae_latents_the_pipeline_decodes(registry, saved):
    backbone = _backbone(registry, saved, human_instruction=False)
    pixels = torch.rand(2, 3, 1, 32, 32) * 2 - 1
    latents = backbone.encode_media(pixels)
    vae = backbone.pipe.vae
    with torch.no_grad():
        expected = vae.encode(pixels[:, :, 0]).latent * vae.config.scaling_factor
    torch.testing.assert_close(latents[:, :, 0], expected)
    assert latents.shape[1:] == backbone.latent_shape(1, 32, 32)


def test_dpo_trains_a_lora_that_diffusers_loads_back(registry, saved, tmp_path):
    rng = np.random.default_rng(0)
    images = [str(write_media(tmp_path / f"{i}.png", rng.integers(0, 255, (1, 32, 32, 3), np.uint8))) for i in range(4)]
    pairs = [PreferenceExample("a red cube", images[0], images[1]), PreferenceExample("a blue ball", images[2], images[3])]
    config = TrainerConfig(max_steps=2, learning_rate=1e-2, lora_rank=4, lora_alpha=4, height=32, width=32, beta=100.0)
    lora = DiffusionDPOTrainer(_backbone(registry, saved, human_instruction=False), config,
                               tmp_path / "run").train(pairs)

    fresh = _backbone(registry, saved, human_instruction=False)
    latents = fresh.encode_media(torch.zeros(1, 3, 1, 32, 32))
    inputs = (latents, torch.ones_like(latents), torch.tensor([0.5]), fresh.encode_prompts(["a red cube"]))
    with torch.no_grad():
        before = fresh.forward_train(*inputs).prediction
        fresh.pipe.load_lora_weights(str(lora.parent))
        after = fresh.forward_train(*inputs).prediction
    assert not torch.allclose(before, after)


def test_samples_decode_as_the_pipeline_decodes_them(registry, saved):
    """With the pipeline's default human instruction on both sides: prompts are encoded as the pipeline encodes them."""
    backbone = _backbone(registry, saved)
    made = backbone.generate(["a red cube"], [0], num_frames=1, height=32, width=32, num_inference_steps=2,
                             guidance_scale=1.0)[0]
    image = backbone.pipe(prompt="a red cube", generator=torch.Generator().manual_seed(0), height=32, width=32,
                          num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16,
                          use_resolution_binning=False, output_type="np").images
    assert np.abs(made.frames[0].astype(float) - np.round(image[0] * 255)).max() <= 1.0


def test_the_training_forward_is_the_pipelines_own_denoiser_call(registry, saved):
    """The pipeline's first transformer call, caught with a hook, and the backbone's velocity for the same noisy
    latents and σ (= the pipeline's timestep / (1000 · timestep_scale)): the same prompt encoding, timestep
    convention and output."""
    backbone = _backbone(registry, saved)
    seen = []
    hook = backbone.denoiser.register_forward_hook(
        lambda module, args, kwargs, output: seen.append((args, kwargs, output[0])), with_kwargs=True)
    backbone.pipe(prompt="a red cube", generator=torch.Generator().manual_seed(0), height=32, width=32,
                  num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16, use_resolution_binning=False,
                  output_type="latent")
    hook.remove()
    args, kwargs, expected = seen[0]
    noisy = (args[0] if args else kwargs["hidden_states"]).unsqueeze(2)
    sigma = kwargs["timestep"].float() / (1000.0 * backbone.denoiser.config.timestep_scale)
    with torch.no_grad():
        velocity = backbone.predict_velocity(noisy, sigma, backbone.encode_prompts(["a red cube"]))
    torch.testing.assert_close(velocity[:, :, 0], expected.float())
