"""Test-wide setup: never autoload installed third-party plugins; keep every run offline and small."""

import os

# Must be set before prefopt.plugins loads anything: tests register the plugins they need by hand.
os.environ["PREFOPT_LOAD_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass, field

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


# --- components for registry and plugin tests ----------------------------------------------------------------------


@dataclass
class EmptyConfig:
    scale: float = field(default=1.0, metadata={"help": "Scale."})


@pytest.fixture(scope="session")
def make_component():
    """``make_component(name, without=())``: a class with every member any kind of component must implement
    (stubs), less ``without``; it declares the roles a pair selector needs."""
    from prefopt.registry import KINDS, _required_members

    def _make(name, doc="A test component.", without=()):
        members = {m: (lambda self, *a, **k: None) for kind in KINDS for m in _required_members(kind)
                   if m not in without}
        declared = {"roles": frozenset({"make", "filter"})}
        return type(name.title().replace("-", ""), (), {"name": name, "Config": EmptyConfig, "__doc__": doc,
                                                        **declared, **members})

    return _make


@pytest.fixture(scope="session")
def make_plugin_module():
    """``make_plugin_module(hook_name, *classes)``: a plugin module whose hook registers the classes."""
    import types

    from prefopt import hookimpl

    def _make(hook_name, *classes):
        module = types.ModuleType(f"fake_{hook_name}")

        def hook(register):
            for cls in classes:
                register(cls)

        hook.__name__ = hook_name
        setattr(module, hook_name, hookimpl(hook))
        return module

    return _make


@pytest.fixture(scope="session")
def make_backbone_class():
    """``make_backbone_class(name, without=(), old_signature=False)``: a Backbone subclass with exactly the abstract
    members (stubs), less ``without``."""
    from prefopt.interfaces import Backbone

    def _make(name, without=(), old_signature=False):
        members = {m: (lambda self, *a, **k: None) for m in Backbone.__abstractmethods__ if m not in without}
        if "denoiser" in members:
            members["denoiser"] = property(lambda self: None)
        if old_signature:
            members["sample_timesteps"] = lambda self, batch_size, generator=None: None
        return type("Minimal", (Backbone,), {"name": name, "Config": EmptyConfig, **members})

    return _make


@pytest.fixture(scope="session")
def make_reward():
    """``make_reward(name, **options)``: a registered reward built from its options, as a config would build it."""
    from prefopt.config import parse
    from prefopt.plugins import get_registry

    def _make(name, **options):
        entry = get_registry().get("rewards", name)
        return entry.cls(parse(entry.config_class, options))

    return _make


# --- media and preference data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_bytes():
    """``image_bytes(seed, format="JPEG", size=48)``: a random RGB image, encoded."""
    import io

    import numpy as np
    from PIL import Image

    def _make(seed: int, format: str = "JPEG", size: int = 48) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=format)
        return buffer.getvalue()

    return _make


@pytest.fixture(scope="session")
def pick_a_pic(image_bytes):
    """``pick_a_pic(path, labels)``: a Pick-a-Pic v2-format parquet (caption, jpg_0, jpg_1 as JPEG bytes, label_0);
    row i's images are ``image_bytes(2i)`` and ``image_bytes(2i + 1)``."""
    def _make(path, labels=(1.0, 0.0, 0.5, 1.0)):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = {"caption": [f"a photo of thing {i}" for i in range(len(labels))],
                "jpg_0": [image_bytes(2 * i) for i in range(len(labels))],
                "jpg_1": [image_bytes(2 * i + 1) for i in range(len(labels))],
                "label_0": list(labels), "label_1": [1 - x for x in labels]}
        pq.write_table(pa.table(rows), path)
        return path

    return _make



@pytest.fixture(scope="session")
def scored_items():
    """``scored_items(n=200, seed=0)``: items from three sources scored on identity (static ones higher), dynamic and
    semantic, the way a MagicID repository's score table looks."""
    import numpy as np

    from prefopt.interfaces import ScoredItems

    def _make(n: int = 200, seed: int = 0) -> ScoredItems:
        rng = np.random.default_rng(seed)
        sources = np.array(["static", "base", "lora"], dtype=object)[rng.integers(0, 3, n)]
        identity = rng.uniform(1, 10, n) + (sources == "static") * 2
        return ScoredItems(
            ids=np.array([f"item{i}" for i in range(n)], dtype=object), sources=sources,
            prompts=np.array([f"prompt {i % 7}" for i in range(n)], dtype=object),
            scores={"identity": np.clip(identity, 1, 10), "dynamic": rng.uniform(1, 10, n),
                    "semantic": rng.uniform(1, 10, n)})

    return _make
