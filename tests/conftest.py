"""Test-wide setup: never autoload installed third-party plugins; keep every run offline and small."""

import os

# Must be set before prefopt.plugins loads anything: tests register the plugins they need by hand.
os.environ["PREFOPT_LOAD_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def plugin(request):
    """Register a plugin object for one test and always unregister it afterwards."""
    from prefopt.plugins import register_plugin, unregister_plugin

    registered = []

    def _register(obj, name, package=None):
        register_plugin(obj, name=name, package=package)
        registered.append(name)
        return obj

    yield _register
    for name in registered:
        unregister_plugin(name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(kind)``: a tiny random pipeline saved with save_pretrained (built once per session)."""
    from prefopt.tiny_models import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-models")

    def _dir(kind: str) -> str:
        return str(save_tiny_pipeline(kind, root / kind))

    return _dir


@pytest.fixture
def make_backbone(tiny_model_dir):
    """``make_backbone(kind, **options)``: a backbone loaded from its tiny saved pipeline, in float32 on CPU."""
    from prefopt.config import parse
    from prefopt.plugins import get_registry

    def _make(kind: str, **options):
        entry = get_registry().get("backbones", kind)
        defaults = {"pretrained": tiny_model_dir(kind), "dtype": "float32", "device": "cpu", **entry.cls.tiny_options}
        return entry.cls(parse(entry.config_class, {**defaults, **options}))

    return _make


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps process-wide singletons; each test (and each forked rank) starts clean."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture
def with_lora():
    """``with_lora(backbone, b_std)``: a rank-4 LoRA on the attention projections (seed 0) whose B matrices
    are moved off zero, so policy and reference differ and every LoRA gradient is non-zero."""
    from prefopt.lora import add_lora

    def _add(backbone, b_std: float = 0.05):
        torch.manual_seed(0)
        add_lora(backbone.denoiser, rank=4, alpha=4, dropout=0.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        for name, p in backbone.denoiser.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, b_std)
        return backbone

    return _add
