"""Stable Diffusion XL (Diffusion-DPO's own model): a UNet with two CLIP text encoders and size conditioning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt.diffusers_backbone import DDPMBackbone, DiffusersBackboneConfig
from prefopt.tiny_models import clip_text_model, clip_tokenizer, clip_with_projection, image_vae


@dataclass
class SDXLConfig(DiffusersBackboneConfig):
    pretrained: str = field(
        default="stabilityai/stable-diffusion-xl-base-1.0",
        metadata={"help": "Hub id or local directory of a StableDiffusionXLPipeline in diffusers format."},
    )


class SDXLBackbone(DDPMBackbone):
    """Stable Diffusion XL text-to-image (UNet, DDPM noising, ε- or v-prediction, micro-conditioning)."""

    name = "sdxl"
    tiny_media_size = (1, 32, 32)
    Config = SDXLConfig
    media = "image"
    default_resolution = (1024, 1024)
    pipeline_class_name = "StableDiffusionXLPipeline"
    denoiser_attribute = "unet"
    model_label = "Stable Diffusion XL"
    download_hint = (
        "Download it with `hf download stabilityai/stable-diffusion-xl-base-1.0 --local-dir DIR` "
        "and set `backbone.options.pretrained=DIR`."
    )
    encoder_attributes = ("text_encoder", "text_encoder_2", "vae")

    def __init__(self, config: SDXLConfig, pipeline=None):
        super().__init__(config, pipeline)
        self.vae_scale_factor = self.pipe.vae_scale_factor  # kept: the VAE is unloaded before training
        vae = self.pipe.vae
        if vae is not None and self.dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)  # SDXL's VAE overflows in float16 (diffusers upcasts it the same way)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            list(prompts), device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        return model(
            noisy[:, :, 0].to(self.dtype), model_timesteps,
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device),
            added_cond_kwargs={"text_embeds": conditioning["pooled_prompt_embeds"].to(noisy.device),
                               "time_ids": self._time_ids(noisy)},
            return_dict=False,
        )[0].unsqueeze(2)

    def _time_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """SDXL's size conditioning (original size, crop corner, target size) in pixels: the media size, no
        crop, as the pipeline samples by default."""
        height, width = (n * self.vae_scale_factor for n in latents.shape[-2:])
        ids = torch.tensor([height, width, 0, 0, height, width], device=latents.device, dtype=self.dtype)
        return ids.expand(latents.shape[0], 6)

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_sdxl_pipeline(seed)


def tiny_sdxl_pipeline(seed: int = 0):
    """A StableDiffusionXLPipeline: tiny UNet with text-time micro-conditioning and two CLIP encoders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 8, cross_attention_dim=16, norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=image_vae(scaling_factor=0.13025), text_encoder=clip_text_model(len(tokenizer)),
        text_encoder_2=clip_with_projection(len(tokenizer)), tokenizer=tokenizer, tokenizer_2=clip_tokenizer(),
        unet=unet, scheduler=scheduler, add_watermarker=False,
    )
