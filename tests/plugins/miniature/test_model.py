"""The miniature model: a pixel-space HunyuanVideo pipeline that loads, generates and trains through prefopt."""


import numpy as np
import pytest
import torch

from prefopt.data import PreferenceExample
from prefopt.media import write_media
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig
from prefopt_plugins.miniature.model import (
    PROMPT_TOKENS,
    MiniatureModelConfig,
    miniature_backbone,
    miniature_pipeline,
)
from prefopt_plugins.miniature.world import ACTIONS, World
from tests import ROOT

SMALL = MiniatureModelConfig(heads=2, head_dim=16, double_blocks=1, single_blocks=1, text_dim=16)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("miniature") / "model"
    miniature_pipeline(SMALL).save_pretrained(folder)
    return folder


def _backbone(folder):
    return miniature_backbone(folder)


def test_a_pipeline_saved_without_a_vae_loads_as_pixel_space(saved):
    import json

    assert json.loads((saved / "model_index.json").read_text())["vae"] == [None, None]
    backbone = _backbone(saved)
    assert backbone.pixel_space
    made = backbone.generate(["a person jumps up and down"], [0], num_frames=8, height=32, width=32,
                             num_inference_steps=2, guidance_scale=1.0)[0]
    assert made.frames.shape == (8, 32, 32, 3) and made.latents.shape == (3, 8, 32, 32)
    pixels = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    back = backbone.decode_latents(backbone.encode_media(pixels))[0].astype(np.float32) / 127.5 - 1
    assert np.abs(back - pixels[0].permute(1, 2, 3, 0).numpy()).max() <= 1 / 127.5  # only uint8 rounding


def test_every_action_prompt_reaches_the_model_distinct(saved):
    """The shipped model's first 60 minutes read 16 tokens, which cut both walking prompts to the same text."""
    backbone = _backbone(saved)
    embeds = [backbone.encode_prompts([prompt])["prompt_embeds"] for prompt in ACTIONS.values()]
    for i in range(len(embeds)):
        for j in range(i):
            assert not torch.allclose(embeds[i], embeds[j]), (list(ACTIONS)[i], list(ACTIONS)[j])


def test_dpo_trains_on_world_clips_in_pixel_space(saved, tmp_path):
    world = World(frames=8, size=32)
    paths = [str(write_media(tmp_path / f"{a}.mp4", world.clip(450, a, 0), fps=8)) for a in ("walk_left", "still")]
    config = TrainerConfig(max_steps=2, learning_rate=1e-3, lora_rank=4, lora_alpha=4, num_frames=8, height=32,
                           width=32, report_to="none", checkpoint_every=100)
    trainer = DiffusionDPOTrainer(_backbone(saved), config, tmp_path / "run")
    trainer.train([PreferenceExample("a person walks to the left", paths[0], paths[1])])
    assert trainer.step == 2 and (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()






def test_the_recipe_reads_every_action_prompt_whole():
    """The miniature recipe's token budget covers the world's longest prompt (the tokenizer spells)."""
    import yaml

    from prefopt.tiny_models import llama_tokenizer

    recipe = yaml.safe_load((ROOT / "recipes" / "miniature.yaml").read_text())
    longest = max(len(llama_tokenizer()(prompt).input_ids) for prompt in ACTIONS.values())
    assert recipe["backbone"]["options"]["max_sequence_length"] >= longest == 36
    assert PROMPT_TOKENS >= longest


def test_word_tokens_give_left_and_right_one_token_each_and_load_back(tmp_path):
    from prefopt_plugins.miniature.model import word_tokenizer

    tokenizer = word_tokenizer()
    left, right = (tokenizer(ACTIONS[a]).input_ids for a in ("walk_left", "walk_right"))
    assert len(left) == len(right) == 7 and left[:-1] == right[:-1] and left[-1] != right[-1]  # <s> and six words
    assert tokenizer.unk_token_id in tokenizer("a person dances").input_ids
    import dataclasses

    folder = tmp_path / "words"
    miniature_pipeline(dataclasses.replace(SMALL, text_tokens="word")).save_pretrained(folder)
    backbone = _backbone(folder)
    encoded = [backbone.encode_prompts([prompt]) for prompt in ACTIONS.values()]
    assert [int(e["prompt_attention_mask"].sum()) for e in encoded] == [
        len(tokenizer(prompt).input_ids) for prompt in ACTIONS.values()]
    assert len({e["prompt_embeds"].flatten().numpy().tobytes() for e in encoded}) == len(ACTIONS)


def test_the_transformer_reads_the_prompt_as_a_bag_of_tokens(saved):
    """Why character tokens blur "left" and "right" (docs/miniature.md): with a two-layer Llama the pipeline's
    third-to-last hidden state is the embedding layer (no positions), and HunyuanVideo rotates only video tokens, so
    reordering the Llama stream's tokens leaves the prediction unchanged (the pooled CLIP vector, unchanged here,
    is the only part of the conditioning that keeps word order)."""
    backbone = _backbone(saved)
    encoded = backbone.encode_prompts(["a person walks to the left"])
    tokens = int(encoded["prompt_attention_mask"].sum())
    shuffled = {k: v.clone() for k, v in encoded.items()}
    order = torch.randperm(tokens, generator=torch.Generator().manual_seed(0))
    shuffled["prompt_embeds"][0, :tokens] = encoded["prompt_embeds"][0, order]
    assert not torch.equal(shuffled["prompt_embeds"], encoded["prompt_embeds"])
    pixels = torch.rand(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise, sigma = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(2)), torch.tensor([0.6])
    with torch.no_grad():
        as_written, reordered = (backbone.forward_train(pixels, noise, sigma, c).prediction for c in (encoded, shuffled))
    torch.testing.assert_close(reordered, as_written, rtol=0, atol=1e-5)
