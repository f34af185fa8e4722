"""The plugin manager and registry: discovery, duplicates, and the PREFOPT_LOAD_PLUGINS switch."""

import importlib.metadata
import inspect
import re

import pytest

from prefopt import hookspecs, plugins
from prefopt.errors import PluginError
from prefopt.plugins import get_registry
from tests import ROOT


@pytest.fixture
def registers(plugin, make_component, make_plugin_module, make_backbone_class):
    """``registers(hook_name, kind)``: a component registered through that hook is found, with its plugin and
    package."""
    def _check(hook_name, kind):
        component = make_backbone_class("zz-test") if kind == "backbones" else make_component("zz-test")
        plugin(make_plugin_module(hook_name, component), name="zz-plugin", package="zz-package")
        entry = get_registry().get(kind, "zz-test")
        assert (entry.plugin, entry.package) == ("zz-plugin", "zz-package")

    return _check


def test_hook_register_rewards(registers):
    registers("register_rewards", "rewards")


def test_hook_register_pair_selectors(registers):
    registers("register_pair_selectors", "pair_selectors")


def test_hook_register_backbones(registers):
    registers("register_backbones", "backbones")


def test_hook_register_recipes(registers):
    registers("register_recipes", "recipes")


















def test_first_party_plugins_register_through_the_hooks():
    names = {p for p in plugins.pm.list_name_plugin() for p in [p[0]]}
    assert set(plugins.DEFAULT_PLUGINS) <= names


class _FakeDist:
    def __init__(self, name):
        self.name = name


class _FakeEntryPoint:
    def __init__(self, name, dist, module):
        self.name, self.dist, self._module = name, _FakeDist(dist), module

    def load(self):
        return self._module


def test_load_plugins_env_restricts_installed_plugins(make_component, make_plugin_module, monkeypatch):
    wanted = make_plugin_module("register_rewards", make_component("from-wanted"))
    other = make_plugin_module("register_rewards", make_component("from-other"))
    points = [_FakeEntryPoint("w", "wanted-pkg", wanted), _FakeEntryPoint("o", "other_pkg", other)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points)
    try:
        monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "wanted_pkg")
        plugins._load_entry_points(plugins._allowed_distributions())
        assert plugins.pm.get_plugin("wanted-pkg:w") is wanted
        assert plugins.pm.get_plugin("other_pkg:o") is None
        monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "missing-pkg")
        with pytest.raises(PluginError, match="names `missing-pkg`, but no installed package"):
            plugins._load_entry_points(plugins._allowed_distributions())
    finally:
        for name in ("wanted-pkg:w", "other_pkg:o"):
            if plugins.pm.get_plugin(name) is not None:
                plugins.unregister_plugin(name)


def test_tests_do_not_autoload_installed_plugins():
    assert plugins._allowed_distributions() == set()
    loaded = {name for name, _ in plugins.pm.list_name_plugin()}
    assert not [name for name in loaded if ":" in name], loaded


def _hook_names():
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


def test_every_hook_is_documented_with_its_signature():
    docs = (ROOT / "docs" / "plugin-hooks.md").read_text()
    for name in _hook_names():
        assert f"## {name}(register)" in docs, f"docs/plugin-hooks.md lacks a section for {name}"


def test_every_hook_has_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in _hook_names():
        assert re.search(rf"def test_hook_{name}\b", tests), f"no test named test_hook_{name}"
