"""A backbone plugin that breaks the contract stops the run with one sentence naming the method and what it
returned, where the core calls it (not with a shape error deep inside the loss)."""

import numpy as np
import pytest
import torch

from prefopt import contract
from prefopt.contract import ContractError
from prefopt.data import PreferenceExample
from prefopt.interfaces import BackboneOutput, GeneratedMedia
from prefopt.media import write_media
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig


class Plugin:
    """Stands for a third-party backbone: only what the checks read."""

    name = "third-party"

    def __init__(self, **returns):
        self.returns = returns

    def encode_prompts(self, prompts):
        return self.returns["prompts"]

    def encode_media(self, pixels):
        return self.returns["media"]

    def forward_train(self, latents, noise, timesteps, conditioning, denoiser=None):
        return self.returns["train"]

    def generate(self, prompts, seeds, **size):
        return self.returns["generated"]


def test_prompt_encodings_must_be_batch_first_tensors():
    assert contract.encode_prompts(Plugin(prompts={"e": torch.zeros(2, 7, 4)}), ["a", "b"])["e"].shape == (2, 7, 4)
    with pytest.raises(ContractError, match=r"backbone `third-party` .* encode_prompts returned `e` of shape "
                                            r"\(7, 2, 4\) for 2 prompts; every tensor must be batch-first"):
        contract.encode_prompts(Plugin(prompts={"e": torch.zeros(7, 2, 4)}), ["a", "b"])
    with pytest.raises(ContractError, match="returned `mask` as list, not a tensor"):
        contract.encode_prompts(Plugin(prompts={"mask": [1, 1]}), ["a", "b"])
    with pytest.raises(ContractError, match="encode_prompts returned tuple, not a dict of tensors"):
        contract.encode_prompts(Plugin(prompts=(torch.zeros(2, 4),)), ["a", "b"])


def test_media_latents_and_training_outputs_have_the_shapes_the_loss_reads():
    pixels, latents = torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, 4, 1, 4, 4)
    with pytest.raises(ContractError, match=r"encode_media returned \(2, 4, 4, 4\) .* latents \[B, C, F, h, w\]"):
        contract.encode_media(Plugin(media=torch.zeros(2, 4, 4, 4)), pixels)
    good = BackboneOutput(prediction=latents, target=latents, weights=torch.ones(2))
    assert contract.forward_train(Plugin(train=good), latents, latents, torch.ones(2), {}) is good
    flat = BackboneOutput(prediction=latents[:, :, 0], target=latents, weights=torch.ones(2))
    with pytest.raises(ContractError, match=r"a prediction of shape \(2, 4, 4, 4\) for latents \(2, 4, 1, 4, 4\)"):
        contract.forward_train(Plugin(train=flat), latents, latents, torch.ones(2), {})
    for weights in (torch.tensor(1.0), torch.ones(2, 1)):  # [B, 1] would broadcast the loss to [B, B]
        odd = BackboneOutput(prediction=latents, target=latents, weights=weights)
        with pytest.raises(ContractError, match="one weight per sample"):
            contract.forward_train(Plugin(train=odd), latents, latents, torch.ones(2), {})


def test_generated_media_are_one_uint8_video_per_prompt():
    video = GeneratedMedia(frames=np.zeros((1, 8, 8, 3), np.uint8), latents=None, prompt="a", seed=0)
    assert contract.generate(Plugin(generated=[video]), ["a"], [0]) == [video]
    with pytest.raises(ContractError, match="generate returned 1 items for 2 prompts"):
        contract.generate(Plugin(generated=[video]), ["a", "b"], [0, 1])
    size = {"num_frames": 1, "height": 8, "width": 8}
    assert contract.generate(Plugin(generated=[video]), ["a"], [0], **size) == [video]
    with pytest.raises(ContractError, match="generate returned frames of 1×8×8 for 1×16×16 asked"):
        contract.generate(Plugin(generated=[video]), ["a"], [0], **{**size, "height": 16, "width": 16})
    floats = GeneratedMedia(frames=np.zeros((1, 8, 8, 3), np.float32), latents=None, prompt="a", seed=0)
    with pytest.raises(ContractError, match=r"frames float32 \(1, 8, 8, 3\); they must be uint8 \[F, H, W, 3\]"):
        contract.generate(Plugin(generated=[floats]), ["a"], [0])


def test_training_with_a_backbone_that_drops_the_frame_axis_stops_with_the_sentence(make_backbone, tmp_path):
    """The real path: the DPO trainer calls the backbone through the checks."""
    backbone = make_backbone("stable-diffusion")
    honest = backbone.forward_train

    def drops_the_frame_axis(*args, **kwargs):
        out = honest(*args, **kwargs)
        return BackboneOutput(prediction=out.prediction[:, :, 0], target=out.target[:, :, 0], weights=out.weights)

    backbone.forward_train = drops_the_frame_axis
    rng = np.random.default_rng(0)
    images = [str(write_media(tmp_path / f"{i}.png", rng.integers(0, 255, (1, 32, 32, 3), np.uint8))) for i in range(2)]
    config = TrainerConfig(max_steps=1, lora_rank=2, lora_alpha=2, height=32, width=32)
    with pytest.raises(ContractError, match="backbone `stable-diffusion` .* forward_train returned a prediction of "
                                            r"shape \(2, 4, 16, 16\) for latents \(2, 4, 1, 16, 16\)"):
        DiffusionDPOTrainer(backbone, config, tmp_path / "run").train([PreferenceExample("a cat", *images)])
