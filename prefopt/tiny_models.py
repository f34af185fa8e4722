"""Tiny randomly initialised pipelines, built from configs (as diffusers' own tests do).

They exercise the real loading, encoding, training and sampling code offline; their outputs are noise.
The CPU quickstart and the test suite save them with ``save_pretrained`` and load them back through the
same ``from_pretrained`` path that real checkpoints take.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from prefopt.files import write_folder

_CHARS = list(string.ascii_letters + string.digits + string.punctuation)


def llama_tokenizer():
    from transformers import LlamaTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for piece in ["▁", *_CHARS, *("▁" + c for c in _CHARS)]:
        vocab.setdefault(piece, len(vocab))
    # Right padding, as HunyuanVideo's own tokenizer: its transformer keeps the first sum(mask) text tokens.
    return LlamaTokenizerFast(vocab=vocab, merges=[], pad_token="<pad>", padding_side="right")


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def clip_text_model(vocab_size: int, hidden: int = 8, projection: int = 8):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=projection, max_position_embeddings=77,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))


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


def t5_tokenizer():
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in _CHARS] + [("▁" + c, -2.5) for c in _CHARS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def tiny_stable_diffusion_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A StableDiffusionPipeline (SD 1.5-style UNet) with tiny UNet, VAE and CLIP text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=clip_text_model(len(tokenizer)), tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def clip_with_projection(vocab_size: int, hidden: int = 8, projection: int = 8):
    """SDXL's second and SD3's CLIP encoders: pooled output through a projection. Two layers, so the
    penultimate hidden state these pipelines read is not the embedding output."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, projection_dim=projection, max_position_embeddings=77,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))


def umt5_encoder(tokenizer, d_model: int = 16):
    """A tiny UMT5 encoder (Wan's and AuraFlow's text encoder class) for ``tokenizer``."""
    from transformers import T5Config, UMT5EncoderModel

    return UMT5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=d_model // 8,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
    ))


def t5_encoder(tokenizer, d_model: int = 16):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=d_model // 8,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
    ))


def image_vae(latent_channels: int = 4, **normalisation):
    """A 2× AutoencoderKL (one down block): 32 px images make 16 px latents."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 8], in_channels=3, out_channels=3, latent_channels=latent_channels,
        norm_num_groups=4, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        **normalisation,
    )


def tiny_sdxl_pipeline(seed: int = 0):
    """A StableDiffusionXLPipeline: tiny UNet with text-time micro-conditioning and two CLIP encoders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 8, cross_attention_dim=16, norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=image_vae(scaling_factor=0.13025), text_encoder=clip_text_model(len(tokenizer)),
        text_encoder_2=clip_with_projection(len(tokenizer)), tokenizer=tokenizer, tokenizer_2=clip_tokenizer(),
        unet=unet, scheduler=scheduler, add_watermarker=False,
    )


def tiny_sd3_pipeline(seed: int = 0):
    """A StableDiffusion3Pipeline: tiny MMDiT, two projected CLIP encoders and a T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16,
        pos_embed_max_size=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=image_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=clip_with_projection(len(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=clip_with_projection(len(tokenizer)), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(t5_tok), tokenizer_3=t5_tok,
    )


def _dynamic_shift_scheduler(**shifts):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, **shifts)


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
    scheduler = _dynamic_shift_scheduler(shift=3.0, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                         max_image_seq_len=4096)
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=image_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=clip_text_model(len(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=t5_encoder(t5_tok), tokenizer_2=t5_tok,
    )


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
    scheduler = _dynamic_shift_scheduler(base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                                         max_image_seq_len=4096, shift_terminal=0.1)
    return LTXPipeline(transformer=transformer, scheduler=scheduler, vae=vae,
                       text_encoder=t5_encoder(t5_tok), tokenizer=t5_tok)


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


TINY_BUILDERS = {
    "hunyuan-video": tiny_hunyuan_video_pipeline,
    "wan": tiny_wan_pipeline,
    "stable-diffusion": tiny_stable_diffusion_pipeline,
    "sdxl": tiny_sdxl_pipeline,
    "sd3": tiny_sd3_pipeline,
    "flux": tiny_flux_pipeline,
    "ltx-video": tiny_ltx_video_pipeline,
    "cogvideox": tiny_cogvideox_pipeline,
}


#: (frames, height, width) of media that fit each tiny pipeline (its VAE's compression and patch sizes).
TINY_MEDIA_SIZES = {
    "hunyuan-video": (5, 32, 32), "wan": (5, 32, 32), "ltx-video": (9, 32, 32), "cogvideox": (9, 32, 32),
    "stable-diffusion": (1, 32, 32), "sdxl": (1, 32, 32), "sd3": (1, 32, 32), "flux": (1, 32, 32),
}
#: Backbone options the tiny pipelines need (their text encoders are short).
TINY_OPTIONS = {
    "hunyuan-video": {"use_prompt_template": False, "max_sequence_length": 16},
    "wan": {"max_sequence_length": 16}, "sd3": {"max_sequence_length": 16}, "flux": {"max_sequence_length": 16},
    "ltx-video": {"max_sequence_length": 16},
}


def save_tiny_pipeline(backbone: str, directory: str | Path, seed: int = 0) -> Path:
    """Build a tiny pipeline for ``backbone`` and ``save_pretrained`` it to ``directory`` (if absent)."""
    directory = Path(directory)
    if not (directory / "model_index.json").is_file():
        pipe = TINY_BUILDERS[backbone](seed)
        write_folder(directory, pipe.save_pretrained, replaces="model_index.json")  # never half written
    return directory


def tiny_clip(seed: int = 0):
    """A tiny random CLIPModel with its processor (tokenizer + image processor), for CLIP-based rewards."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    return CLIPModel(config), processor


def _save_model_and_processor(directory: str | Path, build) -> Path:
    """``save_pretrained`` a (model, processor) pair to ``directory`` unless present, atomically."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        model, processor = build()

        def save(tmp: Path) -> None:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

        write_folder(directory, save, replaces="config.json")
    return directory


def save_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny CLIP (model + processor) with ``save_pretrained`` (if absent); loads with from_pretrained."""
    return _save_model_and_processor(directory, lambda: tiny_clip(seed))


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
_PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen2_vl(seed: int = 0):
    """A tiny random Qwen2-VL (image-text-to-text) with a character-level tokenizer and its processor."""
    from transformers import (
        Qwen2TokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    torch.manual_seed(seed)
    vocab: dict[str, int] = {}
    for c in _CHARS + [" ", "\n"]:
        vocab.setdefault(c, len(vocab))
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS})
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=_PLAIN_CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "bos_token_id": None,
                     "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>")},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
    )
    return Qwen2VLForConditionalGeneration(config).eval(), processor


def save_tiny_vlm(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny Qwen2-VL (model + processor) with ``save_pretrained`` (if absent)."""
    return _save_model_and_processor(directory, lambda: tiny_qwen2_vl(seed))
