"""The plugin manager: loads first-party plugins and installed ``prefopt`` entry points, and fills the registry.

First-party parts are ordinary plugins listed in ``DEFAULT_PLUGINS``; they register through the same
hooks as third-party packages. ``PREFOPT_LOAD_PLUGINS`` restricts which installed distributions load:
unset loads all, ``""`` loads none, ``"pkg-a,pkg-b"`` loads only those distributions.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os

import pluggy

from prefopt import hookspecs
from prefopt.errors import PluginError
from prefopt.registry import KINDS, Registry

ENTRY_POINT_GROUP = "prefopt"
LOAD_PLUGINS_ENV = "PREFOPT_LOAD_PLUGINS"
FIRST_PARTY_PACKAGE = "prefopt"

DEFAULT_PLUGINS = (
    "prefopt_plugins.backbones",
    "prefopt_plugins.rewards",
    "prefopt_plugins.selectors",
    "prefopt_recipes.plugin",
    "prefopt_plugins.miniature",
)

pm = pluggy.PluginManager("prefopt")
pm.add_hookspecs(hookspecs)

_loaded = False
# plugin name (as registered with pluggy) -> distribution that provides it
_plugin_packages: dict[str, str] = {}


def load_plugins() -> pluggy.PluginManager:
    """Load first-party plugins and the allowed installed plugins, once per process."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        _plugin_packages[module_name] = FIRST_PARTY_PACKAGE
    _load_entry_points(_allowed_distributions())
    return pm


def _allowed_distributions() -> set[str] | None:
    """None means every installed plugin; otherwise the normalised distribution names to load."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {_normalise(name) for name in value.split(",") if name.strip()}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _load_entry_points(allowed: set[str] | None) -> None:
    found = set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist.name if entry_point.dist else "unknown"
        if allowed is not None and _normalise(dist) not in allowed:
            continue
        found.add(_normalise(dist))
        try:
            plugin = entry_point.load()
        except ImportError as e:
            raise PluginError(
                f"plugin `{entry_point.name}` from package `{dist}` failed to import: {e}. "
                f"Fix or uninstall it, or set {LOAD_PLUGINS_ENV} to the plugins you want."
            ) from e
        name = f"{dist}:{entry_point.name}"
        if pm.is_registered(plugin) or pm.get_plugin(name) is not None:
            continue
        pm.register(plugin, name=name)
        _plugin_packages[name] = dist
    missing = sorted((allowed or set()) - found)
    if missing:
        raise PluginError(
            f"{LOAD_PLUGINS_ENV} names `{', '.join(missing)}`, but no installed package with that name "
            f"provides a `{ENTRY_POINT_GROUP}` entry point."
        )


def register_plugin(plugin: object, name: str, package: str | None = None) -> None:
    """Register a plugin object (module or instance) by hand, as tests and notebooks do."""
    pm.register(plugin, name=name)
    _plugin_packages[name] = package or name
    _invalidate_registry()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    pm.unregister(name=name)
    _plugin_packages.pop(name, None)
    _invalidate_registry()


def package_of(plugin_name: str) -> str:
    """The distribution that provides a registered plugin."""
    return _plugin_packages.get(plugin_name, plugin_name)


def _invalidate_registry() -> None:
    get_registry.cache_clear()


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Call every plugin's register hooks once and return the collected components."""
    pm = load_plugins()
    registry = Registry()
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name

            def register(cls: type, _kind: str = kind, _plugin: str = plugin) -> None:
                registry.add(_kind, cls, _plugin, package_of(_plugin))

            impl.function(register=register)
    return registry
