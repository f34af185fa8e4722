"""An example prefopt backbone plugin: AuraFlow, a flow-matching text-to-image MMDiT with a UMT5 text encoder.

The whole family-specific code is a Config, a few class attributes, ``encode_prompts`` and ``_predict``:
loading (with one clear sentence when weights are missing), VAE encoding and latent normalisation, sampling,
LoRA saving and switching, the σ grid and the flow-matching target all come from prefopt's base classes.
See docs/writing-a-backbone.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.hookspecs import hookimpl


@dataclass
class AuraFlowConfig(FlowMatchingConfig):
    pretrained: str = field(
        default="fal/AuraFlow-v0.3",
        metadata={"help": "Hub id or local directory of an AuraFlowPipeline in diffusers format."},
    )
    max_sequence_length: int = field(default=256, metadata={"help": "UMT5 text tokens per prompt."})


class AuraFlowBackbone(FlowMatchingBackbone):
    """AuraFlow text-to-image (flow matching, UMT5 text encoder, SDXL-style VAE)."""

    name = "auraflow"
    Config = AuraFlowConfig
    media = "image"                   # one frame: prefopt squeezes and restores the frame axis around the VAE
    default_resolution = (1024, 1024)
    pipeline_class_name = "AuraFlowPipeline"
    model_timestep_scale = 1.0        # AuraFlow's transformer takes σ in [0, 1] (its pipeline passes t / 1000)
    model_label = "AuraFlow"
    download_hint = "Download it with `hf download fal/AuraFlow-v0.3 --local-dir DIR` and set `backbone.options.pretrained=DIR`."

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        # encode_prompt zeroes padded tokens itself; every returned tensor must be batch-first (the cache slices it).
        embeds, _, _, _ = self.pipe.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, device=self.device,
            max_sequence_length=self.config.max_sequence_length,
        )
        return {"prompt_embeds": embeds.to(self.dtype)}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        # `noisy` is [B, C, F=1, h, w]; the transformer takes images [B, C, h, w].
        return model(
            noisy[:, :, 0].to(self.dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            timestep=model_timesteps.to(noisy.device, self.dtype),
            return_dict=False,
        )[0].unsqueeze(2)

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.config.max_sequence_length}  # sample with the text length training saw


@hookimpl
def register_backbones(register):
    register(AuraFlowBackbone)


def tiny_auraflow_pipeline(seed: int = 0):
    """A tiny random AuraFlowPipeline for tests, built offline from configs with prefopt's tiny-model helpers."""
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler

    from prefopt.tiny_models import image_vae, llama_tokenizer, umt5_encoder

    torch.manual_seed(seed)
    tokenizer = llama_tokenizer()
    text_encoder = umt5_encoder(tokenizer)
    transformer = AuraFlowTransformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16,
        pos_embed_max_size=64,
    )
    return AuraFlowPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=image_vae(scaling_factor=0.13025),
                            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler())
