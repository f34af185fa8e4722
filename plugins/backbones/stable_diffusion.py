"""Stable Diffusion-style image models (SD 1.5 UNet; ε- or v-prediction from the scheduler config).

Images are treated as one-frame videos: media and latents are ``[B, C, 1, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt.diffusers_backbone import DDPMBackbone, DiffusersBackboneConfig
from prefopt.tiny_models import clip_text_model, clip_tokenizer


@dataclass
class StableDiffusionConfig(DiffusersBackboneConfig):
    pretrained: str = field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        metadata={"help": "Hub id or local directory of a StableDiffusionPipeline in diffusers format."},
    )


class StableDiffusionBackbone(DDPMBackbone):
    """Stable Diffusion 1.x/2.x text-to-image (UNet, DDPM noising, ε- or v-prediction)."""

    name = "stable-diffusion"
    tiny_media_size = (1, 32, 32)
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

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_stable_diffusion_pipeline(seed)


def tiny_stable_diffusion_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A StableDiffusionPipeline (SD 1.5-style UNet) with tiny UNet, VAE and CLIP text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=clip_text_model(len(tokenizer)), tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
