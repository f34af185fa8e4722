"""LoRA on a diffusers denoiser through peft: add, fuse an earlier LoRA, switch to the reference."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from prefopt.errors import PrefoptError
from prefopt.layout import LORA_WEIGHTS_NAME

POLICY_ADAPTER = "dpo"
REFERENCE_ADAPTER = "ref"
INIT_ADAPTER = "init"  # an earlier LoRA (MagicID's identity LoRA) under the trained one, frozen, never fused


def add_lora(
    denoiser: torch.nn.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str],
    adapter_name: str = POLICY_ADAPTER,
) -> list[torch.nn.Parameter]:
    """Attach a trainable LoRA adapter (B = 0, so the policy starts equal to the reference)."""
    from peft import LoraConfig

    with_peft_adapters(denoiser)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
        init_lora_weights=True,  # task_type stays None: diffusers models are not LLMs
    )
    try:
        with expected_peft_warnings():
            denoiser.add_adapter(config, adapter_name=adapter_name)
    except ValueError as e:
        raise PrefoptError(f"LoRA target modules {list(target_modules)} do not fit this model: {e}") from e
    params = [p for n, p in denoiser.named_parameters() if f".{adapter_name}." in n]
    for p in params:
        p.data = p.data.float()  # LoRA weights train in float32 even when the base is bf16
        p.requires_grad_(True)
    return params


@contextlib.contextmanager
def expected_peft_warnings() -> Iterator[None]:
    """peft warns when a second adapter joins a model, or several are active; prefopt does both on purpose (the
    frozen initial LoRA under the trained one; test_trainer.py::test_the_reference_with_an_initial_lora_is_the_
    sampling_model checks the result)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Adapter cannot be set when the model is merged")
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute in the model")
        yield


def attach_frozen_lora(denoiser: torch.nn.Module, path: str | Path, prefix: str) -> None:
    """Load an earlier LoRA (diffusers format) as the frozen adapter ``init``: base + it is the reference, and the
    trained adapter adds to it. Kept as an adapter, not fused into the (bf16) weights, where rounding would lose a
    gentle update's detail: the reference then computes exactly what the sampling pipeline, which loads the same
    file as an adapter, computes."""
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHTS_NAME
    if not path.is_file():
        raise PrefoptError(f"initial LoRA `{path}` does not exist; train it first or fix `init_lora`.")
    # Frozen means deterministic: no dropout in the reference or the policy pass.
    load_lora_file(denoiser, path, prefix, INIT_ADAPTER, frozen_dropout=True, what="initial LoRA")
    for parameter in adapter_parameters(denoiser, INIT_ADAPTER):  # in the dtype the pipeline loads it in
        parameter.requires_grad_(False)


class _NoTextEncoderKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("No LoRA keys associated to") and "prefix='text_encoder" in message)


@contextlib.contextmanager
def denoiser_only_loras() -> Iterator[None]:
    """A pipeline's ``load_lora_weights`` warns, once per text encoder, that a LoRA file has no keys for it; prefopt's
    LoRAs adapt the denoiser only, so that warning says nothing (one for the denoiser itself still shows)."""
    logger = logging.getLogger("diffusers.loaders.lora_base")
    quiet = _NoTextEncoderKeys()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


_ADAPTER_CLASSES: dict[type, type] = {}


def with_peft_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """Give ``model`` diffusers' adapter methods (``add_adapter``, ``set_adapters``, ``load_lora_adapter``…) when
    its class lacks them: diffusers ships them for the families it has LoRA loaders for (``PeftAdapterMixin``), but
    they work through peft on any torch module, so a family without them (PixArt) trains and samples LoRAs the same
    way. The instance's class becomes a subclass that adds the mixin (same name and module), nothing else about the
    model changes; pickling the whole module (``torch.save(model)``) then fails on the class, so save state dicts
    (``save_pretrained`` and LoRA files do)."""
    from diffusers.loaders.peft import PeftAdapterMixin

    cls = type(model)
    if isinstance(model, PeftAdapterMixin):
        return model
    if cls not in _ADAPTER_CLASSES:
        _ADAPTER_CLASSES[cls] = type(cls.__name__, (cls, PeftAdapterMixin), {"__module__": cls.__module__})
    model.__class__ = _ADAPTER_CLASSES[cls]
    return model


def write_lora_file(path: Path, prefix: str, state_dict: dict[str, torch.Tensor], adapter_config: dict | None) -> Path:
    """A LoRA file in the format diffusers' ``save_lora_weights`` writes (keys ``<prefix>.<peft key>``, the
    adapter's config under the same prefix in the safetensors metadata), for pipelines without a LoRA loader."""
    import json

    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors.torch import save_file

    metadata = {"format": "pt"}
    if adapter_config:
        config = {f"{prefix}.{k}": sorted(v) if isinstance(v, set) else v for k, v in adapter_config.items()}
        metadata[LORA_ADAPTER_METADATA_KEY] = json.dumps(config, indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{prefix}.{k}": v.contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)
    return path


def load_lora_file(model: torch.nn.Module, path: Path, prefix: str, adapter_name: str,
                   *, frozen_dropout: bool = False, what: str = "LoRA") -> None:
    """Load a LoRA file in diffusers' format onto ``model`` as ``adapter_name``, at the scale α/r its metadata
    states (diffusers reads that metadata only through a pipeline's ``load_lora_weights``; a model's
    ``load_lora_adapter`` given a path drops it). ``frozen_dropout`` zeroes the file's dropout."""
    from prefopt.data import load_tensors

    metadata = _adapter_metadata(path)
    if metadata is not None and frozen_dropout:
        metadata = {k: 0.0 if k.rsplit(".", 1)[-1] == "lora_dropout" else v for k, v in metadata.items()}
    with_peft_adapters(model)
    with expected_peft_warnings():
        model.load_lora_adapter(load_tensors(path, what), adapter_name=adapter_name, prefix=prefix,
                                metadata=metadata)


def has_adapter(denoiser: torch.nn.Module, name: str) -> bool:
    return name in (getattr(denoiser, "peft_config", None) or {})


def activate(denoiser: torch.nn.Module, adapter_name: str = POLICY_ADAPTER) -> None:
    """Make ``adapter_name`` (on top of the frozen ``init``, when there is one) the active adapters; only the policy
    adapter trains."""
    names = [INIT_ADAPTER] if has_adapter(denoiser, INIT_ADAPTER) else []
    with expected_peft_warnings():
        denoiser.set_adapter([*names, adapter_name])
    for name in (INIT_ADAPTER, REFERENCE_ADAPTER):  # peft marks every active adapter trainable
        for parameter in adapter_parameters(denoiser, name):
            parameter.requires_grad_(False)


def _adapter_metadata(path: Path) -> dict | None:
    """The peft config diffusers stores in a LoRA file's safetensors metadata, or None for older files."""
    import json

    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(LORA_ADAPTER_METADATA_KEY)
    return json.loads(raw) if raw else None


def lora_state_dict(denoiser: torch.nn.Module, adapter_name: str = POLICY_ADAPTER) -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's key names (no adapter name in them), on the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser, adapter_name=adapter_name)
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}


def load_lora_state(denoiser: torch.nn.Module, state: dict[str, torch.Tensor], adapter_name: str = POLICY_ADAPTER) -> None:
    """Load weights saved by :func:`lora_state_dict` into an existing adapter."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(denoiser, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise PrefoptError(f"LoRA checkpoint has {len(unexpected)} keys this model lacks, e.g. `{unexpected[0]}`.")


def adapter_parameters(denoiser: torch.nn.Module, adapter_name: str) -> list[torch.nn.Parameter]:
    return [p for n, p in denoiser.named_parameters() if f".{adapter_name}." in n]


@contextlib.contextmanager
def reference_mode(denoiser: torch.nn.Module, reference_adapter: str | None = None) -> Iterator[None]:
    """Run the denoiser as the reference: the trained adapter off (the frozen ``init`` stays on when there is one),
    or the frozen reference adapter in its place (TR-DPO).

    peft toggles ``requires_grad`` when adapters switch; the flags are restored exactly on exit.
    """
    flags = [(p, p.requires_grad) for p in denoiser.parameters()]
    init = has_adapter(denoiser, INIT_ADAPTER)
    try:
        if reference_adapter is not None:
            activate(denoiser, reference_adapter)
        elif init:
            with expected_peft_warnings():
                denoiser.set_adapter(INIT_ADAPTER)
        else:
            denoiser.disable_adapters()
        yield
    finally:
        if reference_adapter is None and not init:
            denoiser.enable_adapters()
        else:
            activate(denoiser)
        for p, flag in flags:
            p.requires_grad_(flag)
