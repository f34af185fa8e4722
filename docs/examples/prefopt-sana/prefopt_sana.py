"""An example prefopt backbone plugin: Sana, a flow-matching linear-attention DiT with a Gemma-2 text encoder and a
deep-compression autoencoder (DC-AE) instead of a KL VAE.

The DC-AE encodes to deterministic latents (``EncoderOutput.latent``, no ``latent_dist``); prefopt's
``_vae_encode`` takes either kind, and a family with yet another encoder overrides that one hook. Everything else
is a Config, class attributes, ``encode_prompts`` and ``_predict``. See docs/writing-a-backbone.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefopt import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.hookspecs import hookimpl


@dataclass
class SanaConfig(FlowMatchingConfig):  # flow families take FlowMatchingConfig: σ density, shift, loss weighting
    pretrained: str = field(
        default="Efficient-Large-Model/Sana_1600M_1024px_diffusers",
        metadata={"help": "Hub id or local directory of a SanaPipeline in diffusers format."},
    )
    max_sequence_length: int = field(default=300, metadata={"help": "Gemma text tokens per prompt."})
    human_instruction: bool = field(
        default=True,
        metadata={"help": "Prefix prompts with the pipeline's complex human instruction, as SanaPipeline does by "
                          "default (training and sampling then encode prompts alike)."},
    )


class SanaBackbone(FlowMatchingBackbone):
    """Sana text-to-image (flow matching, Gemma-2 text encoder, DC-AE with 32× compression)."""

    name = "sana"
    Config = SanaConfig
    media = "image"
    default_resolution = (1024, 1024)
    pipeline_class_name = "SanaPipeline"
    model_label = "Sana"
    download_hint = ("Download it with `hf download Efficient-Large-Model/Sana_1600M_1024px_diffusers --local-dir DIR` "
                     "and set `backbone.options.pretrained=DIR`.")

    def _instruction(self) -> list[str] | None:
        if not self.config.human_instruction:
            return None
        return inspect.signature(type(self.pipe).__call__).parameters["complex_human_instruction"].default

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, mask, _, _ = self.pipe.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, device=self.device,
            max_sequence_length=self.config.max_sequence_length, complex_human_instruction=self._instruction(),
        )
        return {"prompt_embeds": embeds.to(self.dtype), "prompt_attention_mask": mask}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        device = noisy.device
        return model(
            noisy[:, :, 0].to(self.dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(device, self.dtype),
            encoder_attention_mask=conditioning["prompt_attention_mask"].to(device),
            # the pipeline passes its scheduler's timestep (1000·σ) times the transformer's own timestep_scale
            timestep=(model_timesteps * self.denoiser.config.timestep_scale).to(device, self.dtype),
            return_dict=False,
        )[0].unsqueeze(2)

    def _pipeline_call_kwargs(self) -> dict:
        return {"use_resolution_binning": False, "max_sequence_length": self.config.max_sequence_length,
                "complex_human_instruction": self._instruction()}

    tiny_media_size = (1, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16, "human_instruction": False}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        """A tiny random SanaPipeline (a 2× DC-AE) for tests, built offline from configs."""
        from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
        from transformers import Gemma2Config, Gemma2Model

        from prefopt.tiny_models import llama_tokenizer

        torch.manual_seed(seed)
        tokenizer = llama_tokenizer()
        text_encoder = Gemma2Model(Gemma2Config(
            head_dim=8, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
            num_key_value_heads=2, vocab_size=len(tokenizer), attn_implementation="eager"))
        transformer = SanaTransformer2DModel(
            patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=8,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
            sample_size=16, timestep_scale=2.0)  # ≠ 1, so a test sees a forgotten scale
        vae = AutoencoderDC(
            in_channels=3, latent_channels=4, attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
            upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
            scaling_factor=0.41407)
        scheduler = DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
        return SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                            scheduler=scheduler)


@hookimpl
def register_backbones(register):
    register(SanaBackbone)
