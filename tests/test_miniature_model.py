"""The miniature model: a pixel-space HunyuanVideo pipeline that loads, generates and trains through prefopt."""

from pathlib import Path

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

ROOT = Path(__file__).resolve().parents[1]
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


def test_pretraining_resumes_and_saves_a_loadable_model(tmp_path):
    """Two short runs of the pretraining script: the second continues the first's steps and loss curve."""
    import json

    from prefopt_plugins.miniature.pretrain import main

    out = tmp_path / "model"
    main(["--out", str(out), "--small", "--max-steps", "3", "--batch", "2", "--threads", "1"])
    first = json.loads((out / "pretraining.json").read_text())
    main(["--out", str(out), "--small", "--max-steps", "5", "--batch", "2", "--threads", "1"])
    second = json.loads((out / "pretraining.json").read_text())
    assert (first["steps"], second["steps"]) == (3, 5)
    straight = tmp_path / "straight"
    main(["--out", str(straight), "--small", "--max-steps", "5", "--batch", "2", "--threads", "1"])
    from safetensors.torch import load_file

    resumed, uninterrupted = (load_file(str(f / "transformer" / "diffusion_pytorch_model.safetensors"))
                              for f in (out, straight))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)  # resumed exactly
    backbone = _backbone(out)
    assert backbone.pixel_space and sum(p.numel() for p in backbone.denoiser.parameters()) == second["parameters"]
    main(["--out", str(out), "--small", "--max-steps", "6", "--batch", "2", "--threads", "1", "--max-sequence-length", "24"])
    record = json.loads((out / "pretraining.json").read_text())
    assert record["prompt_phases"] == [{"from_step": 0, "max_sequence_length": PROMPT_TOKENS},
                                       {"from_step": 5, "max_sequence_length": 24}]
    assert [("--max-steps 5" in c, "--max-sequence-length 24" in c) for c in record["reproduce"]] == [
        (True, False), (False, True)]


def test_a_checkpoint_from_before_prompt_phases_counts_as_16_tokens(tmp_path):
    import json

    from prefopt_plugins.miniature.pretrain import main

    out = tmp_path / "model"
    main(["--out", str(out), "--small", "--max-steps", "2", "--batch", "2", "--threads", "1"])
    state_file = next((tmp_path / "model.work").glob("step-*")) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["prompt_phases"]
    state_file.write_text(json.dumps(state))
    main(["--out", str(out), "--small", "--max-steps", "3", "--batch", "2", "--threads", "1"])
    phases = json.loads((out / "pretraining.json").read_text())["prompt_phases"]
    assert phases == [{"from_step": 0, "max_sequence_length": 16}, {"from_step": 2, "max_sequence_length": PROMPT_TOKENS}]


def test_the_recipe_reads_every_action_prompt_whole():
    """The miniature recipe's token budget covers the world's longest prompt (the tokenizer spells)."""
    import yaml

    from prefopt.tiny_models import llama_tokenizer

    recipe = yaml.safe_load((ROOT / "recipes" / "miniature.yaml").read_text())
    longest = max(len(llama_tokenizer()(prompt).input_ids) for prompt in ACTIONS.values())
    assert recipe["backbone"]["options"]["max_sequence_length"] >= longest == 36
    assert PROMPT_TOKENS >= longest
