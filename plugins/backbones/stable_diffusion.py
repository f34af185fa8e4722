"""Stable Diffusion-style image models (SD 1.5 UNet; ε- or v-prediction from the scheduler config).

Images are treated as one-frame videos: media and latents are ``[B, C, 1, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt.interfaces import BackboneOutput
from prefopt_plugins.backbones.base import DiffusersBackbone, DiffusersBackboneConfig


@dataclass
class StableDiffusionConfig(DiffusersBackboneConfig):
    pretrained: str = field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        metadata={"help": "Hub id or local directory of a StableDiffusionPipeline in diffusers format."},
    )


class StableDiffusionBackbone(DiffusersBackbone):
    """Stable Diffusion 1.x/2.x text-to-image (UNet, DDPM noising, ε- or v-prediction)."""

    name = "stable-diffusion"
    Config = StableDiffusionConfig
    pipeline_class_name = "StableDiffusionPipeline"
    denoiser_attribute = "unet"
    model_label = "Stable Diffusion"
    download_hint = (
        "Download it with `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 "
        "--local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )

    def __init__(self, config: StableDiffusionConfig, pipeline=None):
        super().__init__(config, pipeline)
        from diffusers import DDPMScheduler

        # Training noises with the DDPM forward process, whatever sampler the pipeline ships with.
        self.train_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.prediction_type = self.train_scheduler.config.prediction_type

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _ = self.pipe.encode_prompt(
            list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds.to(self.dtype)}

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        steps = self.train_scheduler.config.num_train_timesteps
        return torch.randint(0, steps, (batch_size,), generator=generator)

    def forward_train(self, latents, noise, timesteps, conditioning, denoiser=None) -> BackboneOutput:
        scheduler = self.train_scheduler
        timesteps = timesteps.to(latents.device).long()
        images, noise_2d = latents[:, :, 0], noise[:, :, 0]  # [B, C, 1, H, W] -> [B, C, H, W]
        noisy = scheduler.add_noise(images, noise_2d, timesteps)
        if self.prediction_type == "epsilon":
            target = noise_2d
        elif self.prediction_type == "v_prediction":
            target = scheduler.get_velocity(images, noise_2d, timesteps)
        else:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r} in the scheduler config")
        model = denoiser if denoiser is not None else self.denoiser
        prediction = model(
            noisy.to(self.dtype), timesteps, encoder_hidden_states=conditioning["prompt_embeds"].to(latents.device),
            return_dict=False,
        )[0]
        weights = torch.ones(latents.shape[0], device=latents.device)
        return BackboneOutput(prediction=prediction.unsqueeze(2), target=target.unsqueeze(2), weights=weights)

    def _vae_input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels[:, :, 0]

    def _vae_output(self, video: torch.Tensor) -> torch.Tensor:
        return video.unsqueeze(2)

    def _normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return super()._normalize_latents(latents).unsqueeze(2)

    def _denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return super()._denormalize_latents(latents[:, :, 0])

    def _sample_latents(self, prompts, generators, *, num_frames, guidance_scale, **kwargs) -> torch.Tensor:
        if num_frames != 1:
            raise ValueError(f"backbone `stable-diffusion` makes images: num_frames must be 1, got {num_frames}.")
        latents = self.pipe(
            prompt=prompts, generator=generators, guidance_scale=guidance_scale, output_type="latent", **kwargs
        ).images
        return latents.unsqueeze(2)
