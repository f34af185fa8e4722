"""An example prefopt backbone plugin: PixArt-Σ, an ε-prediction DiT with a T5 text encoder, for which diffusers
ships no LoRA loader.

What the family needs beyond the base class is a Config, a few class attributes, ``encode_prompts`` and
``_predict``. Two things differ from a family with diffusers LoRA support, and prefopt handles both: the
transformer class has no ``add_adapter`` (prefopt gives any denoiser diffusers' peft methods when it trains a LoRA
on it) and the pipeline has no ``load_lora_weights``/``save_lora_weights`` (prefopt writes the LoRA file in the
same format and loads it onto the transformer). See docs/writing-a-backbone.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefopt import DDPMBackbone, DiffusersBackboneConfig
from prefopt.hookspecs import hookimpl


@dataclass
class PixArtSigmaConfig(DiffusersBackboneConfig):  # ε/v families take the shared options; DDPM noising has no knobs
    pretrained: str = field(
        default="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        metadata={"help": "Hub id or local directory of a PixArtSigmaPipeline in diffusers format."},
    )
    max_sequence_length: int = field(default=300, metadata={"help": "T5 text tokens per prompt."})


class PixArtSigmaBackbone(DDPMBackbone):
    """PixArt-Σ text-to-image (DiT, DDPM noising, ε-prediction with a learned variance the loss ignores)."""

    name = "pixart-sigma"
    Config = PixArtSigmaConfig
    media = "image"
    default_resolution = (1024, 1024)
    pipeline_class_name = "PixArtSigmaPipeline"
    model_label = "PixArt-Σ"
    download_hint = ("Download it with `hf download PixArt-alpha/PixArt-Sigma-XL-2-1024-MS --local-dir DIR` and set "
                     "`backbone.options.pretrained=DIR`.")

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, mask, _, _ = self.pipe.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, device=self.device,
            max_sequence_length=self.config.max_sequence_length,
        )
        return {"prompt_embeds": embeds.to(self.dtype), "prompt_attention_mask": mask}  # both batch-first

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        device = noisy.device
        prediction = model(
            noisy[:, :, 0].to(self.dtype),
            encoder_hidden_states=conditioning["prompt_embeds"].to(device, self.dtype),
            encoder_attention_mask=conditioning["prompt_attention_mask"].to(device),
            timestep=model_timesteps.to(device),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},  # PixArt-Σ has no size conditioning
            return_dict=False,
        )[0]
        if prediction.shape[1] == 2 * noisy.shape[1]:  # ε and the learned variance: the loss compares ε only
            prediction = prediction.chunk(2, dim=1)[0]
        return prediction.unsqueeze(2)

    def _pipeline_call_kwargs(self) -> dict:
        # Sample at the size asked for (binning would resize) and with the text length training saw.
        return {"use_resolution_binning": False, "max_sequence_length": self.config.max_sequence_length}

    tiny_media_size = (1, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        """A tiny random PixArtSigmaPipeline for tests, built offline from configs."""
        from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

        from prefopt.tiny_models import image_vae, t5_encoder, t5_tokenizer

        torch.manual_seed(seed)
        tokenizer = t5_tokenizer()
        transformer = PixArtTransformer2DModel(
            sample_size=16, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2,
            caption_channels=16, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6,
        )
        return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=t5_encoder(tokenizer, d_model=16),
                                   vae=image_vae(), transformer=transformer, scheduler=DDIMScheduler())


@hookimpl
def register_backbones(register):
    register(PixArtSigmaBackbone)
