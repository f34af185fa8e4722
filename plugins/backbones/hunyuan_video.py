"""HunyuanVideo (diffusers format): the MagicID paper's base model, a guidance-distilled flow model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt_plugins.backbones.base import FlowMatchingBackbone, FlowMatchingConfig

# HunyuanVideo's own prompt template (diffusers' DEFAULT_PROMPT_TEMPLATE) crops the 95 system tokens.
PLAIN_TEMPLATE = {"template": "{}", "crop_start": 0}


@dataclass
class HunyuanVideoConfig(FlowMatchingConfig):
    pretrained: str = field(
        default="hunyuanvideo-community/HunyuanVideo",
        metadata={"help": "Hub id or local directory of HunyuanVideo in diffusers format."},
    )
    guidance: float = field(
        default=1.0,
        metadata={"help": "Embedded guidance used in training forward passes (the model is guidance-distilled)."},
    )
    use_prompt_template: bool = field(
        default=True,
        metadata={"help": "Wrap prompts in HunyuanVideo's Llama system template (off for tiny test models)."},
    )
    max_sequence_length: int = field(default=256, metadata={"help": "Llama text tokens kept per prompt."})


class HunyuanVideoBackbone(FlowMatchingBackbone):
    """HunyuanVideo text-to-video (flow matching, 3D VAE 4×8×8, Llama + CLIP text encoders)."""

    name = "hunyuan-video"
    Config = HunyuanVideoConfig
    pipeline_class_name = "HunyuanVideoPipeline"
    model_label = "HunyuanVideo"
    download_hint = (
        "Download it with `huggingface-cli download hunyuanvideo-community/HunyuanVideo --local-dir DIR` "
        "and set `backbone.options.pretrained=DIR`."
    )
    encoder_attributes = ("text_encoder", "text_encoder_2", "vae")

    def _template(self) -> dict | None:
        return None if self.config.use_prompt_template else PLAIN_TEMPLATE

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        kwargs = {"prompt_template": self._template()} if self._template() else {}
        embeds, pooled, mask = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, dtype=self.dtype,
            max_sequence_length=self.config.max_sequence_length, **kwargs,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "prompt_attention_mask": mask}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        batch = noisy.shape[0]
        dtype = self.dtype
        guidance = torch.full((batch,), self.config.guidance * 1000.0, device=noisy.device, dtype=dtype)
        return model(
            hidden_states=noisy.to(dtype),
            timestep=model_timesteps.to(noisy.device, dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, dtype),
            encoder_attention_mask=conditioning["prompt_attention_mask"].to(noisy.device),
            pooled_projections=conditioning["pooled_prompt_embeds"].to(noisy.device, dtype),
            guidance=guidance,
            return_dict=False,
        )[0]

    def _sample_latents(self, prompts, generators, *, guidance_scale, **kwargs) -> torch.Tensor:
        extra = {"prompt_template": self._template()} if self._template() else {}
        return self.pipe(
            prompt=prompts, generator=generators, guidance_scale=guidance_scale, output_type="latent",
            max_sequence_length=self.config.max_sequence_length, **kwargs, **extra,
        ).frames
