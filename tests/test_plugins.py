"""The plugin manager and registry: discovery, duplicates, and the PREFOPT_LOAD_PLUGINS switch."""

import importlib.metadata
import inspect
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prefopt import hookimpl, hookspecs, plugins
from prefopt.errors import PluginError
from prefopt.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class EmptyConfig:
    scale: float = field(default=1.0, metadata={"help": "Scale."})


def _component(name, doc="A test component.", without=()):
    """A class with every member any kind of component must implement (stubs), less ``without``."""
    from prefopt.registry import KINDS, _required_members

    members = {m: (lambda self, *a, **k: None) for kind in KINDS for m in _required_members(kind) if m not in without}
    declared = {"roles": frozenset({"make", "filter"})}  # what a pair selector must declare
    return type(name.title().replace("-", ""), (), {"name": name, "Config": EmptyConfig, "__doc__": doc, **declared,
                                                    **members})


def _plugin_module(hook_name, *classes):
    module = types.ModuleType(f"fake_{hook_name}")

    def hook(register):
        for cls in classes:
            register(cls)

    hook.__name__ = hook_name
    setattr(module, hook_name, hookimpl(hook))
    return module


def _assert_hook_registers(plugin, hook_name, kind):
    component = _minimal_backbone("zz-test") if kind == "backbones" else _component("zz-test")
    plugin(_plugin_module(hook_name, component), name="zz-plugin", package="zz-package")
    entry = get_registry().get(kind, "zz-test")
    assert (entry.plugin, entry.package) == ("zz-plugin", "zz-package")


def test_hook_register_rewards(plugin):
    _assert_hook_registers(plugin, "register_rewards", "rewards")


def test_hook_register_pair_selectors(plugin):
    _assert_hook_registers(plugin, "register_pair_selectors", "pair_selectors")


def test_hook_register_backbones(plugin):
    _assert_hook_registers(plugin, "register_backbones", "backbones")


def test_hook_register_recipes(plugin):
    _assert_hook_registers(plugin, "register_recipes", "recipes")


def test_duplicate_name_names_both_plugins(plugin):
    plugin(_plugin_module("register_rewards", _component("dup")), name="first-plugin")
    plugin(_plugin_module("register_rewards", _component("dup")), name="second-plugin")
    with pytest.raises(PluginError, match=r"`dup` is registered twice.*`first-plugin`.*`second-plugin`"):
        get_registry()


def test_component_without_config_dataclass_is_rejected(plugin):
    bad = type("Bad", (), {"name": "bad"})
    plugin(_plugin_module("register_rewards", bad), name="bad-plugin")
    with pytest.raises(PluginError, match="`bad` from plugin `bad-plugin` needs a dataclass attribute `Config`"):
        get_registry()


@pytest.mark.parametrize("kind, member", [("register_rewards", "score"), ("register_pair_selectors", "select"),
                                          ("register_recipes", "missing_requirements")])
def test_a_component_missing_a_member_the_core_calls_is_rejected_at_registration(plugin, kind, member):
    plugin(_plugin_module(kind, _component("partial", without=(member,))), name="partial-plugin")
    with pytest.raises(PluginError, match=f"`partial` from plugin `partial-plugin` does not implement `{member}`"):
        get_registry()


def test_abilities_are_checked_at_registration():
    """A selector must declare its roles; an ability offered is offered whole and in the form prefopt calls it; a
    reward's `measures` promise methods it must have. Each is one sentence at registration, not a failure mid-run."""
    from prefopt.interfaces import FACE_EMBEDDING

    def check_prompts(self, config, prompts):  # an instance method where prefopt calls a classmethod
        return None

    cases = [("register_pair_selectors", _component("roleless"), "must declare `roles`"),
             ("register_rewards", type("Halfway", (_component("halfway"),), {"check_prompts": check_prompts}),
              "`check_prompts` must be a classmethod"),
             ("register_rewards", type("Claims", (_component("claims"),), {"measures": frozenset({FACE_EMBEDDING})}),
              "declares `face_embedding` but lacks `embed_largest_face`")]
    cases[0][1].roles = None
    for hook, cls, message in cases:
        plugins.register_plugin(_plugin_module(hook, cls), name=f"{cls.name}-plugin")
        try:
            with pytest.raises(PluginError, match=message):
                get_registry()
        finally:
            plugins.unregister_plugin(f"{cls.name}-plugin")
    registered = {entry.name: entry.abilities for entry in get_registry().all("rewards")}
    assert registered["miniature-action"] == ["ChecksWeights", "ChecksPrompts"]
    assert "BuildsTinyModel" in registered["clip-semantic"] and "ChecksReferences" in registered["dlib-id"]


def _minimal_backbone(name, without=(), old_signature=False):
    """A Backbone subclass with exactly the abstract members (stubs), less ``without``."""
    from prefopt.interfaces import Backbone

    members = {m: (lambda self, *a, **k: None) for m in Backbone.__abstractmethods__ if m not in without}
    if "denoiser" in members:
        members["denoiser"] = property(lambda self: None)
    if old_signature:
        members["sample_timesteps"] = lambda self, batch_size, generator=None: None
    return type("Minimal", (Backbone,), {"name": name, "Config": EmptyConfig, **members})


@pytest.mark.parametrize("member", ["to", "use_loras", "denoiser", "generate"])
def test_a_backbone_missing_an_abstract_member_is_rejected_at_registration(plugin, member):
    plugin(_plugin_module("register_backbones", _minimal_backbone("partial", without=(member,))), name="p-plugin")
    with pytest.raises(PluginError, match=f"backbone `partial` from plugin `p-plugin` does not implement `{member}`"):
        get_registry()


def test_a_backbone_must_subclass_backbone_and_take_the_latent_shape(plugin):
    plugin(_plugin_module("register_backbones", _component("duck")), name="duck-plugin")
    with pytest.raises(PluginError, match="`duck` from plugin `duck-plugin` must subclass prefopt.Backbone"):
        get_registry()


def test_a_backbone_with_the_old_sample_timesteps_signature_is_named(plugin):
    plugin(_plugin_module("register_backbones", _minimal_backbone("old", old_signature=True)), name="old-plugin")
    with pytest.raises(PluginError, match="`sample_timesteps` must accept the keyword `latent_shape`"):
        get_registry()


def test_unknown_name_suggests_and_lists(plugin):
    plugin(_plugin_module("register_rewards", _component("sharpness")), name="p")
    with pytest.raises(PluginError, match=r"no reward named `sharpnes`.*Did you mean `sharpness`"):
        get_registry().get("rewards", "sharpnes")


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


def test_load_plugins_env_restricts_installed_plugins(monkeypatch):
    wanted = _plugin_module("register_rewards", _component("from-wanted"))
    other = _plugin_module("register_rewards", _component("from-other"))
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
