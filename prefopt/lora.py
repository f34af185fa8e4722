"""LoRA on a diffusers denoiser through peft: add, fuse an earlier LoRA, switch to the reference."""

from __future__ import annotations

import contextlib
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
    # diffusers reads the adapter's config (rank, α) from the file's metadata only through a pipeline's
    # load_lora_weights (a model's load_lora_adapter given a path drops it); passed here with the tensors, a
    # LoRA with α ≠ r is applied at its trained scale α/r, not at 1.
    from prefopt.data import load_tensors

    metadata = _adapter_metadata(path)
    if metadata is not None:  # frozen means deterministic: no dropout in the reference or the policy pass
        metadata = {k: 0.0 if k.rsplit(".", 1)[-1] == "lora_dropout" else v for k, v in metadata.items()}
    with expected_peft_warnings():
        denoiser.load_lora_adapter(load_tensors(path, "initial LoRA"), adapter_name=INIT_ADAPTER, prefix=prefix,
                                   metadata=metadata)
    for parameter in adapter_parameters(denoiser, INIT_ADAPTER):  # in the dtype the pipeline loads it in
        parameter.requires_grad_(False)


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
