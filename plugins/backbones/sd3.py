"""Stable Diffusion 3 / 3.5: an MMDiT flow-matching model with two CLIP encoders and a T5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from prefopt.diffusers_backbone import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.tiny_models import clip_tokenizer, clip_with_projection, image_vae, t5_encoder, t5_tokenizer


@dataclass
class SD3Config(FlowMatchingConfig):
    pretrained: str = field(
        default="stabilityai/stable-diffusion-3.5-medium",
        metadata={"help": "Hub id or local directory of a StableDiffusion3Pipeline in diffusers format (gated on "
                          "the Hub: accept the licence and `hf auth login` first)."},
    )
    max_sequence_length: int = field(default=256, metadata={"min": 1, "help": "T5 text tokens per prompt."})


class SD3Backbone(FlowMatchingBackbone):
    """Stable Diffusion 3 and 3.5 text-to-image (MMDiT, flow matching, static σ shift)."""

    name = "sd3"
    tiny_media_size = (1, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16}
    Config = SD3Config
    media = "image"
    default_resolution = (1024, 1024)
    pipeline_class_name = "StableDiffusion3Pipeline"
    model_label = "Stable Diffusion 3"
    # diffusers' SD3 LoRA trainer's default: the image and the text stream's projections of every joint block.
    default_lora_targets: ClassVar[tuple[str, ...]] = (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")
    download_hint = (
        "Accept its licence on the Hub, then `hf auth login`, `hf download stabilityai/stable-diffusion-3.5-medium "
        "--local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )
    encoder_attributes = ("text_encoder", "text_encoder_2", "text_encoder_3", "vae")

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            list(prompts), None, None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=self.config.max_sequence_length,
        )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        return model(
            hidden_states=noisy[:, :, 0].to(self.dtype),
            timestep=model_timesteps.to(noisy.device, torch.float32),  # as the pipeline: float32, not bf16
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            pooled_projections=conditioning["pooled_prompt_embeds"].to(noisy.device, self.dtype),
            return_dict=False,
        )[0].unsqueeze(2)

    def _unshifted_sigmas(self, num_steps: int) -> np.ndarray:
        """SD3's pipeline passes no grid: its scheduler spaces the steps between its (shifted) σ_max and σ_min."""
        scheduler = self.pipe.scheduler
        return np.linspace(scheduler.sigma_max, scheduler.sigma_min, num_steps)

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_sd3_pipeline(seed)


def tiny_sd3_pipeline(seed: int = 0):
    """A StableDiffusion3Pipeline: tiny MMDiT, two projected CLIP encoders and a T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=image_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=clip_with_projection(len(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=clip_with_projection(len(tokenizer)), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(t5_tok), tokenizer_3=t5_tok,
    )
