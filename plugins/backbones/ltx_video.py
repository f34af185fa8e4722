"""LTX-Video: a flow-matching video transformer on packed latent tokens, with a T5 text encoder (masked),
a 32×32×8 VAE with per-channel latent statistics, and a σ shift that grows with the video size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefopt.diffusers_backbone import FlowMatchingBackbone, FlowMatchingConfig
from prefopt.tiny_models import dynamic_shift_scheduler, t5_encoder, t5_tokenizer


@dataclass
class LTXVideoConfig(FlowMatchingConfig):
    pretrained: str = field(
        default="Lightricks/LTX-Video",
        metadata={"help": "Hub id or local directory of an LTXPipeline (text-to-video) in diffusers format."},
    )
    max_sequence_length: int = field(default=128, metadata={"min": 1, "help": "T5 text tokens per prompt."})
    frame_rate: float = field(
        default=25.0, metadata={"above": 0, "help": "Frame rate the model is told (scales its temporal rotary positions)."}
    )
    decode_timestep: float = field(
        default=0.05, metadata={"min": 0, "help": "Timestep of the VAE decoder for VAEs with timestep conditioning (0.9.1+)."}
    )
    decode_noise_scale: float = field(
        default=0.025, metadata={"min": 0, "help": "Noise mixed into latents before such a decoder (0.9.1+)."}
    )


class LTXVideoBackbone(FlowMatchingBackbone):
    """LTX-Video text-to-video (flow matching on packed tokens, T5 with attention mask, dynamic σ shift)."""

    name = "ltx-video"
    tiny_media_size = (9, 32, 32)
    tiny_options: ClassVar[dict] = {"max_sequence_length": 16}
    Config = LTXVideoConfig
    frame_multiple = 8
    default_num_frames = 97
    default_resolution = (480, 704)
    pipeline_class_name = "LTXPipeline"
    model_label = "LTX-Video"
    download_hint = (
        "Download it with `hf download Lightricks/LTX-Video --local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )

    def __init__(self, config: LTXVideoConfig, pipeline=None):
        super().__init__(config, pipeline)
        pipe = self.pipe
        # Kept: the VAE is unloaded before training, and the model's rotary scale needs its compression.
        self.rope_interpolation_scale = (pipe.vae_temporal_compression_ratio / config.frame_rate,
                                         pipe.vae_spatial_compression_ratio, pipe.vae_spatial_compression_ratio)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompt=list(prompts), do_classifier_free_guidance=False, num_videos_per_prompt=1,
            max_sequence_length=self.config.max_sequence_length, device=self.device, dtype=self.dtype,
        )
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        p, p_t = self.denoiser.config.patch_size, self.denoiser.config.patch_size_t
        _, _, frames, height, width = noisy.shape
        pipeline_class, device = self.pipeline_class(), noisy.device
        packed = model(
            hidden_states=pipeline_class._pack_latents(noisy.to(self.dtype), p, p_t),
            encoder_hidden_states=conditioning["prompt_embeds"].to(device, self.dtype),
            timestep=model_timesteps.to(device, torch.float32),  # as the pipeline: float32, not bf16
            encoder_attention_mask=conditioning["prompt_attention_mask"].to(device),
            num_frames=frames // p_t, height=height // p, width=width // p,
            rope_interpolation_scale=self.rope_interpolation_scale, return_dict=False,
        )[0]
        return pipeline_class._unpack_latents(packed, frames // p_t, height // p, width // p, p, p_t)

    def _sequence_length(self, latent_shape: Sequence[int]) -> int:
        p, p_t = self.denoiser.config.patch_size, self.denoiser.config.patch_size_t
        return int(latent_shape[-3] // p_t * (latent_shape[-2] // p) * (latent_shape[-1] // p))

    def _pipeline_call_kwargs(self) -> dict:
        c = self.config
        return {"max_sequence_length": c.max_sequence_length, "frame_rate": c.frame_rate,
                "decode_timestep": c.decode_timestep, "decode_noise_scale": c.decode_noise_scale}

    def _sample_latents(self, prompts, generators, *, num_inference_steps, **kwargs) -> torch.Tensor:
        if num_inference_steps < 2:  # LTX's scheduler cannot take one step (an IndexError deep in diffusers)
            raise ValueError(f"backbone `ltx-video` samples with at least 2 steps, got {num_inference_steps}.")
        return super()._sample_latents(prompts, generators, num_inference_steps=num_inference_steps, **kwargs)

    def _from_pipeline_latents(self, latents, *, num_frames, height, width) -> torch.Tensor:
        pipe, p, p_t = self.pipe, self.denoiser.config.patch_size, self.denoiser.config.patch_size_t
        frames = (num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
        h, w = height // pipe.vae_spatial_compression_ratio, width // pipe.vae_spatial_compression_ratio
        return self.pipeline_class()._unpack_latents(latents, frames // p_t, h // p, w // p, p, p_t)

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        if not vae.config.timestep_conditioning:
            return vae.decode(latents, return_dict=False)[0]
        # As LTXPipeline decodes (0.9.1+): a little noise, and the decoder told its timestep. Seeded, so a
        # video decodes the same every time.
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)).to(latents)
        scale = self.config.decode_noise_scale
        timestep = torch.full((latents.shape[0],), self.config.decode_timestep, device=latents.device,
                              dtype=latents.dtype)
        return vae.decode((1 - scale) * latents + scale * noise, timestep, return_dict=False)[0]

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_ltx_video_pipeline(seed)


def tiny_ltx_video_pipeline(seed: int = 0):
    """An LTXPipeline (LTX-Video): tiny transformer, a 4×4×4 video VAE with per-channel latent statistics."""
    from diffusers import AutoencoderKLLTXVideo, LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=1, caption_channels=16,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    # Non-trivial latent statistics (real checkpoints have them), so normalisation is exercised.
    vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, 8))
    vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    scheduler = dynamic_shift_scheduler(base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                                         max_image_seq_len=4096, shift_terminal=0.1)
    return LTXPipeline(transformer=transformer, scheduler=scheduler, vae=vae,
                       text_encoder=t5_encoder(t5_tok), tokenizer=t5_tok)
