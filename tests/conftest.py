"""Test-wide setup: never autoload installed third-party plugins; keep every run offline and small."""

import os

# Must be set before prefopt.plugins loads anything: tests register the plugins they need by hand.
os.environ["PREFOPT_LOAD_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

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
