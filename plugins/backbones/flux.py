"""FLUX.1 (dev, schnell): a flow-matching transformer on 2×2-packed latents, with a guidance embedding
(dev) and a σ shift that grows with the image size (dynamic shifting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefopt.diffusers_backbone import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.tiny_models import (
    clip_text_model,
    clip_tokenizer,
    dynamic_shift_scheduler,
    image_vae,
    t5_encoder,
    t5_tokenizer,
)


@dataclass
class FluxConfig(FlowMatchingConfig):
    pretrained: str = field(
        default="black-forest-labs/FLUX.1-dev",
        metadata={"help": "Hub id or local directory of a FluxPipeline in diffusers format (FLUX.1-dev is gated: "
                          "accept its licence and `hf auth login` first)."},
    )
    max_sequence_length: int = field(default=512, metadata={"min": 1, "help": "T5 text tokens per prompt."})
    guidance: float = field(
        default=3.5,
        metadata={"help": "Embedded guidance in training forwards (FLUX.1-dev is guidance-distilled; diffusers' "
                          "FLUX LoRA trainer uses 3.5); ignored by models without a guidance embedding."},
    )


class FluxBackbone(FlowMatchingBackbone):
    """FLUX.1 text-to-image (flow matching on packed latents, guidance embedding, resolution-dependent shift)."""

    name = "flux"
    tiny_media_size = (1, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16}
    Config = FluxConfig
    media = "image"
    default_resolution = (1024, 1024)
    model_timestep_scale = 1.0  # FLUX's transformer takes σ and multiplies by 1000 itself
    latent_packing = 2  # 2×2 latent patches per token
    pipeline_class_name = "FluxPipeline"
    model_label = "FLUX.1"
    # diffusers' FLUX LoRA trainer's default: both streams' attention projections and MLPs (in the single blocks
    # "attn.to_*" matches their fused attention too).
    default_lora_targets: ClassVar[tuple[str, ...]] = (
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
    download_hint = (
        "Accept its licence on the Hub, then `hf auth login`, `hf download black-forest-labs/FLUX.1-dev "
        "--local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )
    encoder_attributes = ("text_encoder", "text_encoder_2", "vae")

    def __init__(self, config: FluxConfig, pipeline=None):
        super().__init__(config, pipeline)
        self.vae_scale_factor = self.pipe.vae_scale_factor

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        # The third output, text_ids, is the same zeros for every prompt and not batch-first: rebuilt per forward.
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.config.max_sequence_length,
        )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        pipeline_class = self.pipeline_class()
        images = noisy[:, :, 0].to(self.dtype)
        batch, channels, height, width = images.shape
        device, embeds = noisy.device, conditioning["prompt_embeds"].to(noisy.device, self.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), self.config.guidance, device=device, dtype=self.dtype)
        packed = model(
            hidden_states=pipeline_class._pack_latents(images, batch, channels, height, width),
            # bf16, as the pipeline gives it (the transformer casts it to its own dtype either way)
            timestep=model_timesteps.to(device, self.dtype), guidance=guidance,
            pooled_projections=conditioning["pooled_prompt_embeds"].to(device, self.dtype),
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=self.dtype),
            img_ids=pipeline_class._prepare_latent_image_ids(batch, height // 2, width // 2, device, self.dtype),
            return_dict=False,
        )[0]
        return self._unpack(packed, height, width).unsqueeze(2)

    def _unpack(self, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Packed tokens ``[B, hw/4, 4C]`` back to latents ``[B, C, h, w]``."""
        factor = self.vae_scale_factor
        return self.pipeline_class()._unpack_latents(packed, height * factor, width * factor, factor)

    def _sequence_length(self, latent_shape: Sequence[int]) -> int:
        return int(latent_shape[-2] * latent_shape[-1] // 4)  # one token per 2×2 latent patch

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}

    def _from_pipeline_latents(self, latents, *, num_frames, height, width) -> torch.Tensor:
        factor = self.vae_scale_factor
        return self.pipeline_class()._unpack_latents(latents, height, width, factor).unsqueeze(2)

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_flux_pipeline(seed)


def tiny_flux_pipeline(seed: int = 0):
    """A FluxPipeline (FLUX.1-dev-like: guidance embedding, dynamic shift) with a tiny transformer."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = dynamic_shift_scheduler(shift=3.0, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                         max_image_seq_len=4096)
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=image_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=clip_text_model(len(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=t5_encoder(t5_tok), tokenizer_2=t5_tok,
    )
