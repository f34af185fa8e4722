"""The miniature video model: a HunyuanVideo transformer that denoises pixels, in a HunyuanVideo pipeline.

Why pixel space: the world's clips are 8 × 32 × 32, and a HunyuanVideo-style VAE (8× spatial, 4× temporal)
would leave 2 × 4 × 4 latents, too few to carry a face; a VAE trained here would cost part of the 90-minute
pretraining budget and add its own errors to every reward. In pixel space with 4 × 4 patches the
transformer sees 8 × 8 × 8 = 512 tokens, the size measured to train at about 1 s per batch-16 step on two
cores. The pipeline is saved without a VAE (`vae: [null, null]`); prefopt's backbones treat such a pipeline
as pixel space (media are their own latents, in [-1, 1]).

The text encoders are small, randomly initialised and frozen (a Llama and a CLIP text model with
character tokenizers): the prompts of this world are a handful of fixed action sentences, which any fixed
encoder maps to distinct embeddings; only the transformer learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Prompt tokens the model reads. The tokenizer spells (one token per character) and the world's longest prompt,
# "a person comes closer to the camera", is 36 tokens; the shipped model's first 60 minutes read only 16,
# which cut both walking prompts to "a person walks " (docs/miniature.md).
PROMPT_TOKENS = 40


@dataclass(frozen=True)
class MiniatureModelConfig:
    """The transformer's size; the defaults are the shipped model's."""

    heads: int = 4
    head_dim: int = 32
    double_blocks: int = 2
    single_blocks: int = 2
    patch: int = 4
    text_dim: int = 32
    seed: int = 0
    text_tokens: str = "character"  # or "word": one Llama token per word of the world's prompts (docs/miniature.md)

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        # (time, height, width), even numbers summing to the head dim
        time = 2 * (self.head_dim // 8)
        space = (self.head_dim - time) // 2
        space -= space % 2
        return time, space, self.head_dim - time - space


def miniature_pipeline(config: MiniatureModelConfig = MiniatureModelConfig()):
    """A HunyuanVideoPipeline without a VAE: a pixel-space transformer (3 channels in and out)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    from prefopt.tiny_models import clip_text_model, clip_tokenizer, llama_tokenizer

    torch.manual_seed(config.seed)
    tokenizer = word_tokenizer() if config.text_tokens == "word" else llama_tokenizer()
    tokenizer_2 = clip_tokenizer()
    # Two layers: the pipeline reads the third-to-last hidden state of the Llama encoder.
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_dim, intermediate_size=2 * config.text_dim,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
    ))
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=3, out_channels=3, num_attention_heads=config.heads, attention_head_dim=config.head_dim,
        num_layers=config.double_blocks, num_single_layers=config.single_blocks, num_refiner_layers=1,
        patch_size=config.patch, patch_size_t=1, text_embed_dim=config.text_dim, pooled_projection_dim=8,
        rope_axes_dim=config.rope_axes,
    )
    return HunyuanVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=None,
        # Unshifted σ: at 32 px there is little low-frequency structure for a shift to protect.
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        text_encoder_2=clip_text_model(len(tokenizer_2)), tokenizer_2=tokenizer_2,
    )


def word_tokenizer():
    """The Llama encoder's tokenizer with one token per word of the world's seven prompts (``<unk>`` for any other
    word), right-padded as HunyuanVideo's own: "left" and "right" become one token each, where the character
    tokenizer spells them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from prefopt_plugins.miniature.world import ACTIONS

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for word in sorted({word for sentence in ACTIONS.values() for word in sentence.split()}):
        vocab[word] = len(vocab)
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=words, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="right")


def miniature_backbone(pretrained: str = "in-memory", pipeline=None, max_sequence_length: int = PROMPT_TOKENS):
    """prefopt's HunyuanVideo backbone on the miniature model (a saved folder, or an in-memory ``pipeline``),
    with the settings recipes/miniature.yaml uses: float32 on the CPU, no chat template, whole prompts."""
    from prefopt.config import parse
    from prefopt.plugins import get_registry

    entry = get_registry().get("backbones", "hunyuan-video")
    options = parse(entry.config_class, {"pretrained": str(pretrained), "dtype": "float32", "device": "cpu",
                                         "use_prompt_template": False, "max_sequence_length": max_sequence_length})
    return entry.cls(options, pipeline=pipeline) if pipeline is not None else entry.cls(options)
