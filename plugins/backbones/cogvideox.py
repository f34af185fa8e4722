"""CogVideoX (2b, 5b): a v-prediction video transformer with its own zero-terminal-SNR noise schedule,
frame-major latents, and (5b) 3D rotary position embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prefopt.diffusers_backbone import DDPMBackbone, DiffusersBackboneConfig
from prefopt.errors import PrefoptError
from prefopt.tiny_models import t5_encoder, t5_tokenizer


@dataclass
class CogVideoXConfig(DiffusersBackboneConfig):
    pretrained: str = field(
        default="THUDM/CogVideoX-2b",
        metadata={"help": "Hub id or local directory of a CogVideoXPipeline (text-to-video) in diffusers format."},
    )


class CogVideoXBackbone(DDPMBackbone):
    """CogVideoX text-to-video (v-prediction with the model's own scheduler, T5 text encoder)."""

    name = "cogvideox"
    tiny_media_size = (9, 32, 32)
    Config = CogVideoXConfig
    frame_multiple = 4
    default_num_frames = 49
    default_resolution = (480, 720)
    pipeline_class_name = "CogVideoXPipeline"
    model_label = "CogVideoX"
    download_hint = (
        "Download it with `hf download THUDM/CogVideoX-2b --local-dir DIR` and set `backbone.options.pretrained=DIR`."
    )

    def __init__(self, config: CogVideoXConfig, pipeline=None):
        super().__init__(config, pipeline)
        if self.denoiser.config.get("patch_size_t"):
            raise PrefoptError(
                f"`{config.pretrained}` is CogVideoX 1.5 (temporal patches of {self.denoiser.config.patch_size_t} "
                "latent frames, which its pipeline pads with noise); prefopt's `cogvideox` backbone supports "
                "CogVideoX-2b and -5b only."
            )
        # The text length is fixed by the model: its position embedding covers text and video tokens.
        self.max_sequence_length = int(self.denoiser.config.max_text_seq_length)

    def _train_scheduler(self):
        # The pipeline's own scheduler class: DDPMScheduler.from_config would drop `snr_shift_scale` and
        # train on another ᾱ schedule. CogVideoX's schedulers have add_noise and get_velocity too.
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        self._require("text_encoder")
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts), do_classifier_free_guidance=False, num_videos_per_prompt=1,
            max_sequence_length=self.max_sequence_length, device=self.device, dtype=self.dtype,
        )
        return {"prompt_embeds": embeds}

    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        frame_major = noisy.permute(0, 2, 1, 3, 4).to(self.dtype)  # the model takes [B, F, C, h, w]
        rotary = None
        if self.denoiser.config.use_rotary_positional_embeddings:
            _, frames, _, height, width = frame_major.shape
            factor = self.pipe.vae_scale_factor_spatial
            rotary = self.pipe._prepare_rotary_positional_embeddings(height * factor, width * factor, frames,
                                                                     noisy.device)
        prediction = model(
            hidden_states=frame_major, timestep=model_timesteps,
            encoder_hidden_states=conditioning["prompt_embeds"].to(noisy.device, self.dtype),
            image_rotary_emb=rotary, return_dict=False,
        )[0]
        return prediction.permute(0, 2, 1, 3, 4)

    def _pipeline_call_kwargs(self) -> dict:
        return {"max_sequence_length": self.max_sequence_length}

    def _from_pipeline_latents(self, latents, *, num_frames, height, width) -> torch.Tensor:
        return latents.permute(0, 2, 1, 3, 4)  # the pipeline's [B, F, C, h, w] to [B, C, F, h, w]

    @classmethod
    def tiny_pipeline(cls, seed: int = 0):
        return tiny_cogvideox_pipeline(seed)


def tiny_cogvideox_pipeline(seed: int = 0):
    """A CogVideoXPipeline (CogVideoX-2b-like: v-prediction, zero-terminal-SNR DDIM) with tiny models."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=16, num_layers=1, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                       snr_shift_scale=3.0, timestep_spacing="trailing")
    return CogVideoXPipeline(tokenizer=t5_tok, text_encoder=t5_encoder(t5_tok), vae=vae,
                             transformer=transformer, scheduler=scheduler)
