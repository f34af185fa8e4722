"""HunyuanVideo (diffusers format): the MagicID paper's base model, a guidance-distilled flow model.

Training forwards drop padded text tokens (``text_padding: trim``). diffusers' HunyuanVideo always builds
an attention mask from the text padding and passes it to every attention call, and attention kernels that
take no mask (flash, cuDNN) then cannot run. Trimmed, every remaining token is valid, the mask is all True
and the blocks' attention runs without it. The result is the same: padded tokens are masked out as keys,
and their own outputs are never read. Samples with different prompt lengths run as separate forwards.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from prefopt.diffusers_backbone import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.errors import PrefoptError
from prefopt.speed_levers import forward_setting, forward_state
from prefopt.tiny_models import clip_text_model, clip_tokenizer, llama_tokenizer

FULL_TEXT_MASK = "hunyuan_video.full_text_mask"  # forward setting: every text token of the batch is valid

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
    max_sequence_length: int = field(default=256, metadata={"min": 1, "help": "Llama text tokens kept per prompt."})
    text_padding: Literal["trim", "keep"] = field(
        default="trim",
        metadata={"help": "Training forwards: `trim` drops padded text tokens and then the all-True attention "
                          "mask, so mask-free attention kernels (flash, cuDNN) run; same result. `keep` runs "
                          "diffusers' forward as is."},
    )


class HunyuanVideoBackbone(FlowMatchingBackbone):
    """HunyuanVideo text-to-video (flow matching, 3D VAE 4×8×8, Llama + CLIP text encoders)."""

    name = "hunyuan-video"
    tiny_media_size = (5, 32, 32)
    tiny_options: ClassVar[dict] = {"use_prompt_template": False, "max_sequence_length": 16}
    Config = HunyuanVideoConfig
    pipeline_class_name = "HunyuanVideoPipeline"
    frame_multiple = 4
    model_label = "HunyuanVideo"
    download_hint = (
        "Download it with `hf download hunyuanvideo-community/HunyuanVideo --local-dir DIR` "
        "and set `backbone.options.pretrained=DIR`."
    )
    encoder_attributes = ("text_encoder", "text_encoder_2", "vae")

    def __init__(self, config: HunyuanVideoConfig, pipeline=None):
        super().__init__(config, pipeline)
        if config.text_padding == "trim":
            install_mask_free_attention(self.denoiser)

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
        lengths = _text_lengths(conditioning["prompt_attention_mask"]) if self.config.text_padding == "trim" else None
        if lengths is None:
            return self._call_denoiser(model, noisy, model_timesteps, conditioning)
        groups: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            groups.setdefault(length, []).append(row)
        if len(groups) == 1:  # the usual case: a winner and a loser share their prompt
            return self._call_trimmed(model, noisy, model_timesteps, conditioning, lengths[0])
        outputs, order = [], []
        for length, rows in groups.items():
            index = torch.tensor(rows, device=noisy.device)
            rows_conditioning = {k: v[index] for k, v in conditioning.items()}
            outputs.append(self._call_trimmed(model, noisy[index], model_timesteps[index], rows_conditioning, length))
            order.extend(rows)
        return torch.cat(outputs)[torch.argsort(torch.tensor(order, device=noisy.device))]

    def _call_trimmed(self, model, noisy, model_timesteps, conditioning, length: int) -> torch.Tensor:
        """The forward on the first ``length`` text tokens, which are all valid: no attention mask."""
        trimmed = {**conditioning, "prompt_embeds": conditioning["prompt_embeds"][:, :length],
                   "prompt_attention_mask": conditioning["prompt_attention_mask"][:, :length]}
        with forward_state(**{FULL_TEXT_MASK: True}):
            return self._call_denoiser(model, noisy, model_timesteps, trimmed)

    def _call_denoiser(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        batch = noisy.shape[0]
        dtype = self.dtype
        guidance = torch.full((batch,), self.config.guidance * 1000.0, device=noisy.device, dtype=dtype)
        return model(
            hidden_states=noisy.to(dtype),
            timestep=model_timesteps.to(noisy.device, torch.float32),  # as the pipeline: float32, not bf16
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, dtype),
            encoder_attention_mask=conditioning["prompt_attention_mask"].to(noisy.device),
            pooled_projections=conditioning["pooled_prompt_embeds"].to(noisy.device, dtype),
            guidance=guidance,
            return_dict=False,
        )[0]

    def _pipeline_call_kwargs(self) -> dict:
        extra = {"prompt_template": self._template()} if self._template() else {}
        return {"max_sequence_length": self.config.max_sequence_length, **extra}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_hunyuan_video_pipeline(seed)


def _text_lengths(mask: torch.Tensor) -> list[int] | None:
    """Valid text tokens per sample (one host sync); None when a prompt has none (nothing to trim to).
    Raises when padding comes before valid tokens, which diffusers' HunyuanVideo forward would misread."""
    mask = mask.bool()
    lengths, prefixes = torch.stack([mask.sum(1), mask.int().cumprod(1).sum(1)]).tolist()
    if lengths != prefixes:
        raise PrefoptError(
            "HunyuanVideo expects each prompt's valid text tokens first and padding after (its transformer keeps "
            "the first sum(mask) tokens), but a `prompt_attention_mask` has padding before valid tokens; load the "
            "Llama tokenizer with `padding_side='right'`."
        )
    return None if min(lengths) == 0 else lengths


@functools.cache
def _mask_free_processor_class() -> type:
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

    class MaskFreeWhenFullProcessor(HunyuanVideoAttnProcessor2_0):
        """HunyuanVideo's attention; drops the mask when the backbone has set FULL_TEXT_MASK for the batch."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     image_rotary_emb=None):
            if forward_setting(FULL_TEXT_MASK, False):
                attention_mask = None  # all True: the same attention, and mask-free kernels may run
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    return MaskFreeWhenFullProcessor


def install_mask_free_attention(denoiser: torch.nn.Module) -> None:
    """Give the blocks' attention modules the mask-dropping processor."""
    processor_class = _mask_free_processor_class()
    base = processor_class.__mro__[1]
    for module in denoiser.modules():
        if type(getattr(module, "processor", None)) is base:
            module.set_processor(processor_class())


def tiny_hunyuan_video_pipeline(seed: int = 0):
    """A HunyuanVideoPipeline with the tiny transformer and VAE documented in ENVIRONMENT.md."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = llama_tokenizer(), clip_tokenizer()
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
    ))
    # Hidden size 16 (2 heads × 8): every block linear is a multiple of 16, as FP8 matmuls require.
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )
    return HunyuanVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=clip_text_model(len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
    )
