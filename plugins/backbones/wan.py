"""Wan 2.1 text-to-video (diffusers format): flow matching with a UMT5 text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt_plugins.backbones.base import FlowMatchingBackbone, FlowMatchingConfig


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
            timestep=model_timesteps.to(noisy.device, self.dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            return_dict=False,
        )[0]

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}
