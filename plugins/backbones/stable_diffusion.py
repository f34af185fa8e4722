"""Stable Diffusion-style image models (SD 1.5 UNet; ε- or v-prediction from the scheduler config).

Images are treated as one-frame videos: media and latents are ``[B, C, 1, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt_plugins.backbones.base import DDPMBackbone, DiffusersBackboneConfig


@dataclass
class StableDiffusionConfig(DiffusersBackboneConfig):
    pretrained: str = field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        metadata={"help": "Hub id or local directory of a StableDiffusionPipeline in diffusers format."},
    )


class StableDiffusionBackbone(DDPMBackbone):
    """Stable Diffusion 1.x/2.x text-to-image (UNet, DDPM noising, ε- or v-prediction)."""

    name = "stable-diffusion"
    Config = StableDiffusionConfig
    media = "image"
    default_resolution = (512, 512)
    pipeline_class_name = "StableDiffusionPipeline"
    denoiser_attribute = "unet"
    model_label = "Stable Diffusion"
    download_hint = (
        "Download it with `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 "
        "--local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _ = self.pipe.encode_prompt(
            list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds.to(self.dtype)}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        prediction = model(
            noisy[:, :, 0].to(self.dtype), model_timesteps,
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device), return_dict=False,
        )[0]
        return prediction.unsqueeze(2)
