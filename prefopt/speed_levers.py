"""Memory and speed levers on the denoiser: checkpointing, attention backend, compilation, FP8.

Each lever changes how a step is computed, never what: tests compare every lever with the plain step.

Activation checkpointing of only every n-th transformer block: checkpointing every block saves the most
memory and recomputes a whole forward; when memory allows, checkpointing every second or third block
recomputes less. diffusers passes each block module to the model's checkpointing function, so a selective
function decides per block. Within a checkpointed block, ``save_attention`` keeps the fused attention
kernel's outputs (the attention output and its log-sum-exp: per token, no N×N matrix) so the
recomputation skips attention, which is most of a long video's forward (selective activation
checkpointing with a policy on the attention ops).

Per-forward settings (:func:`forward_state`) let a backbone tell its own modules something about the batch
(HunyuanVideo: "every text token is valid, drop the attention mask"). A checkpointed block is recomputed
during backward, outside the backbone's call, so the recomputation replays the settings of its forward;
without that it could run a different kernel than the forward did.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from prefopt.errors import PrefoptError

_FORWARD_STATE: dict[str, Any] = {}  # a plain global: torch.compile guards on it without a graph break
_HOOKS_OPTION = "respect_saved_tensors_hooks" in inspect.signature(checkpoint).parameters  # newer torch


@contextlib.contextmanager
def forward_state(**settings: Any) -> Iterator[None]:
    """Settings that modules read with :func:`forward_setting` while the block runs (and is recomputed)."""
    with _exactly({**_FORWARD_STATE, **settings}):
        yield


def forward_setting(name: str, default: Any = None) -> Any:
    return _FORWARD_STATE.get(name, default)


@contextlib.contextmanager
def _exactly(settings: dict[str, Any]) -> Iterator[None]:
    saved = dict(_FORWARD_STATE)
    _FORWARD_STATE.clear()
    _FORWARD_STATE.update(settings)
    try:
        yield
    finally:
        _FORWARD_STATE.clear()
        _FORWARD_STATE.update(saved)


# Fused attention kernels: their outputs are O(tokens), so keeping them is cheap; the math path's N×N
# intermediates are never kept. (Ops a torch build lacks are skipped.)
_FUSED_ATTENTION = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")


@functools.cache
def _fused_attention_ops() -> frozenset:
    ops = []
    for name in _FUSED_ATTENTION:
        try:
            ops.append(getattr(torch.ops.aten, name))
        except AttributeError:
            continue  # not in this torch build
    return frozenset(ops)


def _keep_fused_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op.overloadpacket in _fused_attention_ops():
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _together(*managers: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


def _checkpoint_contexts(save_attention: bool):
    """checkpoint's ``context_fn``, called at forward time: the recomputation replays the forward's
    settings, and with ``save_attention`` takes the attention outputs kept by the forward."""
    replay = _exactly(dict(_FORWARD_STATE))
    if not save_attention:
        return contextlib.nullcontext(), replay
    keep, reuse = create_selective_checkpoint_contexts(_keep_fused_attention)
    return keep, _together(reuse, replay)


def transformer_blocks(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's repeated blocks, in order (every ModuleList child of the model, flattened)."""
    blocks = []
    for child in denoiser.children():
        if isinstance(child, torch.nn.ModuleList):
            blocks.extend(child)
    return blocks


def enable_block_checkpointing(denoiser: torch.nn.Module, every: int = 1, save_attention: bool = False) -> int:
    """Checkpoint blocks 0, n, 2n, …, keeping their attention outputs with ``save_attention``; returns how
    many blocks are checkpointed."""
    if every < 1:
        raise ValueError(f"`every` must be at least 1, got {every}")
    chosen = {id(block) for index, block in enumerate(transformer_blocks(denoiser)) if index % every == 0}
    contexts = functools.partial(_checkpoint_contexts, save_attention)
    # Where torch can, the kept attention outputs go through saved-tensor hooks too (offload_activations).
    extra = {"respect_saved_tensors_hooks": True} if save_attention and _HOOKS_OPTION else {}

    def selective(block, *args, **kwargs):
        if id(block) in chosen:
            return checkpoint(block, *args, use_reentrant=False, context_fn=contexts, **extra, **kwargs)
        return block(*args, **kwargs)

    denoiser.enable_gradient_checkpointing(gradient_checkpointing_func=selective)
    return len(chosen)


def set_attention_backend(denoiser: torch.nn.Module, backend: str) -> None:
    """Use a diffusers attention backend in this denoiser only; hub-kernel backends are refused because
    they download code."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    names = [b.value for b in AttentionBackendName if not b.value.endswith("_hub")]  # hub kernels download code
    if backend not in names:
        raise PrefoptError(f"`attention_backend` must be one of {', '.join(names)}; got `{backend}`.")
    process_default = _AttentionBackendRegistry._active_backend
    try:
        denoiser.set_attention_backend(backend)
    except (RuntimeError, ImportError, ValueError) as e:
        raise PrefoptError(f"attention backend `{backend}` is not usable here: {e}") from e
    finally:
        # diffusers also makes the backend the process-wide default, which would reach every other model
        # (a recipe's later generation stages, whose padded prompts need a mask); the processors keep theirs.
        _AttentionBackendRegistry.set_active_backend(process_default)


def compile_blocks(denoiser: torch.nn.Module, mode: str | None = None) -> int:
    """torch.compile each repeated block (regional compilation: one graph serves every block of a class,
    so compiling takes seconds per block type, not per block); returns how many blocks were compiled."""
    blocks = transformer_blocks(denoiser)
    if not blocks:
        raise PrefoptError(f"`compile_blocks`: {type(denoiser).__name__} has no repeated blocks (ModuleList) to compile.")
    for block in blocks:
        block.compile(mode=mode)
    return len(blocks)


FP8Recipe = Literal["off", "tensorwise", "rowwise", "emulated"]


def convert_to_float8(denoiser: torch.nn.Module, recipe: FP8Recipe, device: torch.device) -> int:
    """Swap the transformer blocks' frozen linear layers for torchao Float8Linear (FP8 matmuls with dynamic
    scaling); returns how many were swapped. LoRA matrices, modulation layers (one token per sample) and
    layers whose sizes are not multiples of 16 (an FP8 GEMM requirement) stay in high precision.
    ``emulated`` casts to FP8 and back but multiplies in high precision: the same numerics on any device
    (for checking the loss tolerance), no speed-up."""
    if recipe == "off":
        return 0
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise PrefoptError("`fp8` needs torchao: install it with `pip install 'prefopt[fp8]'`.") from e
    if recipe != "emulated" and not _has_fp8_matmul(device):
        raise PrefoptError(
            f"`fp8={recipe}` needs FP8 matrix multiplication (a CUDA GPU of compute capability 8.9 or newer); "
            f"this run is on `{device}`. Use `fp8=emulated` to check the numerics, or `fp8=off`."
        )
    config = Float8LinearConfig(emulate=True) if recipe == "emulated" else Float8LinearConfig.from_recipe_name(recipe)
    block_names = {id(block) for block in transformer_blocks(denoiser)}
    prefixes = tuple(f"{name}." for name, module in denoiser.named_modules() if id(module) in block_names)
    swapped: list[str] = []

    def eligible(module: torch.nn.Module, name: str) -> bool:
        ok = (name.startswith(prefixes) and "lora_" not in name and ".norm" not in name
              and module.in_features % 16 == 0 and module.out_features % 16 == 0)
        if ok:
            swapped.append(name)
        return ok

    convert_to_float8_training(denoiser, module_filter_fn=eligible, config=config)
    if not swapped:
        raise PrefoptError(f"`fp8`: no linear layer of {type(denoiser).__name__}'s blocks can use FP8 "
                           "(sizes must be multiples of 16).")
    return len(swapped)


def _has_fp8_matmul(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def apply_speed_levers(denoiser: torch.nn.Module, device: torch.device, *, fp8: FP8Recipe = "off",
                       gradient_checkpointing: bool = False, checkpoint_every_n_blocks: int = 1,
                       checkpoint_save_attention: bool = False, attention_backend: str | None = None,
                       compile: bool = False) -> None:
    """The trainer's levers, in this order: FP8 swaps modules before compile traces them, and compile sees
    the final processors. benchmarks/dpo_step.py calls this too, so it measures what the trainer runs."""
    if checkpoint_save_attention and not gradient_checkpointing:
        raise PrefoptError("`checkpoint_save_attention` keeps attention outputs in checkpointed blocks: it needs "
                           "`gradient_checkpointing: true`.")
    convert_to_float8(denoiser, fp8, device)
    if gradient_checkpointing:
        enable_block_checkpointing(denoiser, checkpoint_every_n_blocks, checkpoint_save_attention)
    if attention_backend:
        set_attention_backend(denoiser, attention_backend)
    if compile:
        compile_blocks(denoiser)
