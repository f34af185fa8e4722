"""The registry: what a component must be, checked when its plugin loads, each refusal one sentence."""


import pytest

from prefopt import plugins
from prefopt.errors import PluginError
from prefopt.plugins import get_registry


def test_duplicate_name_names_both_plugins(make_component, make_plugin_module, plugin):
    plugin(make_plugin_module("register_rewards", make_component("dup")), name="first-plugin")
    plugin(make_plugin_module("register_rewards", make_component("dup")), name="second-plugin")
    with pytest.raises(PluginError, match=r"`dup` is registered twice.*`first-plugin`.*`second-plugin`"):
        get_registry()


def test_component_without_config_dataclass_is_rejected(make_plugin_module, plugin):
    bad = type("Bad", (), {"name": "bad"})
    plugin(make_plugin_module("register_rewards", bad), name="bad-plugin")
    with pytest.raises(PluginError, match="`bad` from plugin `bad-plugin` needs a dataclass attribute `Config`"):
        get_registry()


@pytest.mark.parametrize("kind, member", [("register_rewards", "score"), ("register_pair_selectors", "select"),
                                          ("register_recipes", "missing_requirements")])
def test_a_component_missing_a_member_the_core_calls_is_rejected_at_registration(make_component, make_plugin_module, plugin, kind, member):
    plugin(make_plugin_module(kind, make_component("partial", without=(member,))), name="partial-plugin")
    with pytest.raises(PluginError, match=f"`partial` from plugin `partial-plugin` does not implement `{member}`"):
        get_registry()


def test_abilities_are_checked_at_registration(make_component, make_plugin_module):
    """A selector must declare its roles; an ability offered is offered whole and in the form prefopt calls it; a
    reward's `measures` promise methods it must have. Each is one sentence at registration, not a failure mid-run."""
    from prefopt.interfaces import FACE_EMBEDDING

    def check_prompts(self, config, prompts):  # an instance method where prefopt calls a classmethod
        return None

    cases = [("register_pair_selectors", make_component("roleless"), "must declare `roles`"),
             ("register_rewards", type("Halfway", (make_component("halfway"),), {"check_prompts": check_prompts}),
              "`check_prompts` must be a classmethod"),
             ("register_rewards", type("Claims", (make_component("claims"),), {"measures": frozenset({FACE_EMBEDDING})}),
              "declares `face_embedding` but lacks `embed_largest_face`")]
    cases[0][1].roles = None
    for hook, cls, message in cases:
        plugins.register_plugin(make_plugin_module(hook, cls), name=f"{cls.name}-plugin")
        try:
            with pytest.raises(PluginError, match=message):
                get_registry()
        finally:
            plugins.unregister_plugin(f"{cls.name}-plugin")
    registered = {entry.name: entry.abilities for entry in get_registry().all("rewards")}
    assert registered["miniature-action"] == ["ChecksWeights", "ChecksPrompts"]
    assert "BuildsTinyModel" in registered["clip-semantic"] and "ChecksReferences" in registered["dlib-id"]


@pytest.mark.parametrize("member", ["to", "use_loras", "denoiser", "generate"])
def test_a_backbone_missing_an_abstract_member_is_rejected_at_registration(make_plugin_module, make_backbone_class, plugin, member):
    plugin(make_plugin_module("register_backbones", make_backbone_class("partial", without=(member,))), name="p-plugin")
    with pytest.raises(PluginError, match=f"backbone `partial` from plugin `p-plugin` does not implement `{member}`"):
        get_registry()


def test_a_backbone_must_subclass_backbone_and_take_the_latent_shape(make_component, make_plugin_module, plugin):
    plugin(make_plugin_module("register_backbones", make_component("duck")), name="duck-plugin")
    with pytest.raises(PluginError, match="`duck` from plugin `duck-plugin` must subclass prefopt.Backbone"):
        get_registry()


def test_a_backbone_with_the_old_sample_timesteps_signature_is_named(make_plugin_module, make_backbone_class, plugin):
    plugin(make_plugin_module("register_backbones", make_backbone_class("old", old_signature=True)), name="old-plugin")
    with pytest.raises(PluginError, match="`sample_timesteps` must accept the keyword `latent_shape`"):
        get_registry()


def test_unknown_name_suggests_and_lists(make_component, make_plugin_module, plugin):
    plugin(make_plugin_module("register_rewards", make_component("sharpness")), name="p")
    with pytest.raises(PluginError, match=r"no reward named `sharpnes`.*Did you mean `sharpness`"):
        get_registry().get("rewards", "sharpnes")
