"""Tiny randomly initialised models, built from configs (as diffusers' own tests do), and the parts they share.

Each backbone family builds its own tiny pipeline (``Backbone.tiny_pipeline``, from the tokenizers and encoders
here); CLIP-based rewards build a tiny CLIP (``BuildsTinyModel``). They exercise the real loading, encoding,
training and sampling code offline; their outputs are noise. The CPU quickstart and the test suite save them with
``save_pretrained`` and load them back through the same ``from_pretrained`` path that real checkpoints take.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
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


def t5_tokenizer():
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -2.0) for c in _CHARS] + [("▁" + c, -2.5) for c in _CHARS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


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


def dynamic_shift_scheduler(**shifts):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, **shifts)


def save_tiny_pipeline(backbone: str, directory: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of a registered backbone family and ``save_pretrained`` it to ``directory`` (unless
    it is there)."""
    from prefopt.plugins import get_registry

    directory = Path(directory)
    if not (directory / "model_index.json").is_file():
        pipe = get_registry().get("backbones", backbone).cls.tiny_pipeline(seed)
        write_folder(directory, pipe.save_pretrained, replaces="model_index.json")  # never half written
    return directory


def save_tiny_models(specs: Sequence, seed: int = 0) -> None:
    """``run.build_tiny_models``: each component's tiny random model at the path its options name (unless one is
    there): a backbone's pipeline, and the model of every reward that builds one (``BuildsTinyModel``)."""
    from prefopt.hub import resolve_path
    from prefopt.interfaces import BuildsTinyModel
    from prefopt.plugins import get_registry

    for spec in specs:
        cls = get_registry().get(spec.kind, spec.name).cls
        if spec.kind == "backbones":
            save_tiny_pipeline(spec.name, resolve_path(spec.options.pretrained), seed)
        elif issubclass(cls, BuildsTinyModel):
            cls.save_tiny_model(spec.options, seed)


def tiny_backbones() -> dict[str, tuple[int, int, int]]:
    """Every registered backbone family that has a tiny pipeline → the (frames, height, width) its media take."""
    from prefopt.plugins import get_registry

    return {entry.name: entry.cls.tiny_media_size for entry in get_registry().all("backbones")
            if entry.cls.tiny_media_size is not None}


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
