"""Wan 2.1 text-to-video (diffusers format): flow matching with a UMT5 text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefopt.diffusers_backbone import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.tiny_models import t5_tokenizer, umt5_encoder


@dataclass
class WanConfig(FlowMatchingConfig):
    pretrained: str = field(
        default="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        metadata={"help": "Hub id or local directory of a Wan 2.1 text-to-video pipeline in diffusers format."},
    )
    max_sequence_length: int = field(default=226, metadata={"min": 1, "help": "UMT5 text tokens per prompt."})


class WanBackbone(FlowMatchingBackbone):
    """Wan 2.1 text-to-video (flow matching, Wan VAE with per-channel latent normalisation)."""

    name = "wan"
    tiny_media_size = (5, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16}
    Config = WanConfig
    pipeline_class_name = "WanPipeline"
    frame_multiple = 4
    default_resolution = (480, 832)
    model_label = "Wan 2.1"
    download_hint = (
        "Download it with `hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR` "
        "and set `backbone.options.pretrained=DIR`."
    )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts), do_classifier_free_guidance=False, device=self.device, dtype=self.dtype,
            max_sequence_length=self.config.max_sequence_length,
        )
        return {"prompt_embeds": embeds}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        return model(
            hidden_states=noisy.to(self.dtype),
            timestep=model_timesteps.to(noisy.device, torch.float32),  # as the pipeline: float32, not bf16
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            return_dict=False,
        )[0]

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_wan_pipeline(seed)


def tiny_wan_pipeline(seed: int = 0):
    """A WanPipeline (Wan 2.1 text-to-video) with a tiny transformer, VAE and UMT5 encoder."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    text_encoder = umt5_encoder(tokenizer)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
