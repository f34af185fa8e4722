"""Stable Diffusion 3 / 3.5: an MMDiT flow-matching model with two CLIP encoders and a T5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt_plugins.backbones.base import FlowMatchingBackbone, FlowMatchingConfig


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
    Config = SD3Config
    media = "image"
    default_resolution = (1024, 1024)
    pipeline_class_name = "StableDiffusion3Pipeline"
    model_label = "Stable Diffusion 3"
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
            timestep=model_timesteps.to(noisy.device, self.dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            pooled_projections=conditioning["pooled_prompt_embeds"].to(noisy.device, self.dtype),
            return_dict=False,
        )[0].unsqueeze(2)

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}
