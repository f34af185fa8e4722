"""Every hook a prefopt plugin can implement. Each takes a ``register`` callback and returns nothing."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("prefopt")
hookimpl = HookimplMarker("prefopt")


@hookspec
def register_rewards(register):
    """Register Reward classes: ``register(RewardClass)``."""


@hookspec
def register_pair_selectors(register):
    """Register PairSelector classes: ``register(SelectorClass)``."""


@hookspec
def register_backbones(register):
    """Register Backbone classes: ``register(BackboneClass)``."""


@hookspec
def register_recipes(register):
    """Register Recipe classes: ``register(RecipeClass)``."""
