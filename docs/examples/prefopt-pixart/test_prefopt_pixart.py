"""Tests of the example backbone plugin for a family without a diffusers LoRA loader: a tiny random pipeline saved
and loaded through the real loading code, a DPO run, and the LoRA loaded back with peft alone (no prefopt) and
through the backbone's sampling, with the same result."""

import os

os.environ["PREFOPT_LOAD_PLUGINS"] = ""  # only what the tests register: never other installed plugins
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import prefopt_pixart
import pytest
import torch

from prefopt.config import parse
from prefopt.data import PreferenceExample
from prefopt.media import write_media
from prefopt.plugins import get_registry, register_plugin, unregister_plugin
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig


@pytest.fixture
def registry():
    register_plugin(prefopt_pixart, name="pixart-example", package="prefopt-pixart")
    yield get_registry()
    unregister_plugin("pixart-example")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pixart") / "pipeline"
    prefopt_pixart.PixArtSigmaBackbone.tiny_pipeline().save_pretrained(directory)
    return directory


def _backbone(registry, saved):
    entry = registry.get("backbones", "pixart-sigma")
    options = {"pretrained": str(saved), "dtype": "float32", "device": "cpu", "max_sequence_length": 16}
    return entry.cls(parse(entry.config_class, options))


def _trained_lora(registry, saved, tmp_path):
    rng = np.random.default_rng(0)
    images = [str(write_media(tmp_path / f"{i}.png", rng.integers(0, 255, (1, 32, 32, 3), np.uint8))) for i in range(4)]
    pairs = [PreferenceExample("a red cube", images[0], images[1]), PreferenceExample("a blue ball", images[2], images[3])]
    config = TrainerConfig(max_steps=2, learning_rate=1e-2, lora_rank=4, lora_alpha=8, height=32, width=32, beta=100.0)
    return DiffusionDPOTrainer(_backbone(registry, saved), config, tmp_path / "run").train(pairs)


def test_the_backbone_registers_through_the_hook(registry):
    assert registry.get("backbones", "pixart-sigma").package == "prefopt-pixart"


def test_the_lora_loads_with_peft_alone_as_its_model_card_says(registry, saved, tmp_path):
    """No diffusers loader exists for PixArt: the model card's loading code (peft alone, reading the adapter's rank,
    α and targets from the file's metadata) runs on a plain diffusers pipeline and computes what prefopt's sampling
    (``use_loras``) computes."""
    from prefopt.publish import usage_code

    lora = _trained_lora(registry, saved, tmp_path)
    code = usage_code(prefopt_pixart.PixArtSigmaBackbone, str(saved), [lora.name])
    assert "load_lora_weights" not in code
    namespace = {}
    runnable = code.replace("<the base model's hub id or folder>", str(saved))
    exec(runnable.replace("<this repository or folder>", str(lora.parent)), namespace)  # noqa: S102 (the card's code)

    backbone = _backbone(registry, saved)
    latents = backbone.encode_media(torch.zeros(1, 3, 1, 32, 32))
    conditioning = backbone.encode_prompts(["a red cube"])
    inputs = (latents, torch.ones_like(latents), torch.tensor([500]), conditioning)
    with torch.no_grad():
        before = backbone.forward_train(*inputs).prediction
        with_card = backbone.forward_train(*inputs, denoiser=namespace["pipe"].transformer).prediction
        backbone.use_loras([lora])
        sampled_with = backbone.forward_train(*inputs).prediction
        backbone.use_loras([])
        without = backbone.forward_train(*inputs).prediction
    assert not torch.allclose(before, with_card)
    torch.testing.assert_close(sampled_with, with_card)
    torch.testing.assert_close(without, before)


def test_samples_decode_as_the_pipeline_decodes_them(registry, saved):
    backbone = _backbone(registry, saved)
    made = backbone.generate(["a red cube"], [0], num_frames=1, height=32, width=32, num_inference_steps=2,
                             guidance_scale=1.0)[0]
    image = backbone.pipe(prompt="a red cube", generator=torch.Generator().manual_seed(0), height=32, width=32,
                          num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16,
                          use_resolution_binning=False, output_type="np").images
    assert np.abs(made.frames[0].astype(float) - np.round(image[0] * 255)).max() <= 1.0


def test_the_training_forward_is_the_pipelines_own_denoiser_call(registry, saved):
    """The pipeline's first transformer call, caught with a hook, and the backbone's ε prediction for the same noisy
    latents and timestep: the same prompt encoding and mask, no size conditioning, the learned variance dropped."""
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
    with torch.no_grad():
        prediction = backbone._predict(backbone.denoiser, noisy, kwargs["timestep"],
                                       backbone.encode_prompts(["a red cube"]))
    assert expected.shape[1] == 2 * noisy.shape[1]  # the tiny model, like PixArt-Σ, also predicts a variance
    torch.testing.assert_close(prediction[:, :, 0], expected[:, : noisy.shape[1]])
