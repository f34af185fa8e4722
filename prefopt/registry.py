"""Collects what plugins register and looks components up by name.

A duplicate name is an error that names both plugins, so a user knows which package to remove.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass
from typing import Any

from prefopt.errors import PluginError

KINDS = ("rewards", "pair_selectors", "backbones", "recipes")
KIND_LABELS = {
    "rewards": "reward",
    "pair_selectors": "pair selector",
    "backbones": "backbone",
    "recipes": "recipe",
}


@dataclass(frozen=True)
class Registration:
    """One registered component: its class, and the plugin and package that provided it."""

    kind: str
    name: str
    cls: type
    plugin: str
    package: str

    @property
    def config_class(self) -> type:
        return self.cls.Config


class Registry:
    """Registered components, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, cls: type, plugin: str, package: str) -> None:
        _check_component_class(kind, cls, plugin)
        name = cls.name
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{KIND_LABELS[kind]} `{name}` is registered twice: by plugin `{existing.plugin}` "
                f"(package `{existing.package}`) and by plugin `{plugin}` (package `{package}`). "
                "Uninstall one of them or rename one component."
            )
        self._entries[kind][name] = Registration(kind, name, cls, plugin, package)

    def get(self, kind: str, name: str) -> Registration:
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        close = difflib.get_close_matches(name, list(entries), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        available = ", ".join(sorted(entries)) or "none"
        raise PluginError(
            f"no {KIND_LABELS[kind]} named `{name}` is registered.{hint} Available: {available}. "
            "Run `prefopt plugins` to see every component and the package that provides it."
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def all(self, kind: str) -> list[Registration]:
        return [self._entries[kind][name] for name in self.names(kind)]

    def create(self, kind: str, name: str, config: Any = None, **kwargs: Any) -> Any:
        """Instantiate a registered component with its parsed config (defaults when None)."""
        registration = self.get(kind, name)
        if config is None:
            config = registration.config_class()
        return registration.cls(config, **kwargs)


def _check_component_class(kind: str, cls: type, plugin: str) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(cls, type) or not isinstance(name, str) or not name:
        raise PluginError(
            f"plugin `{plugin}` registered {cls!r} as a {KIND_LABELS[kind]}; register a class with a "
            "non-empty string attribute `name`."
        )
    config_class = getattr(cls, "Config", None)
    if config_class is None or not dataclasses.is_dataclass(config_class):
        raise PluginError(
            f"{KIND_LABELS[kind]} `{name}` from plugin `{plugin}` needs a dataclass attribute `Config` "
            "describing its options."
        )
    if kind == "backbones":
        _check_backbone_class(cls, name, plugin)
        return
    missing = [member for member in _required_members(kind) if not _implements(cls, member)]
    if missing:
        listing = ", ".join(f"`{m}`" for m in missing)
        raise PluginError(
            f"{KIND_LABELS[kind]} `{name}` from plugin `{plugin}` does not implement {listing}, which prefopt "
            f"calls; see docs/plugin-hooks.md for what a {KIND_LABELS[kind]} must provide."
        )


# Members of the Protocols in prefopt.interfaces; a backbone must implement every abstract member of Backbone.
_PROTOCOL_MEMBERS = {"rewards": ("score", "provenance"), "pair_selectors": ("select",),
                     "recipes": ("run", "missing_requirements")}


def _required_members(kind: str) -> tuple[str, ...]:
    if kind == "backbones":
        from prefopt.interfaces import Backbone

        return tuple(sorted(Backbone.__abstractmethods__))
    return _PROTOCOL_MEMBERS[kind]


def _check_backbone_class(cls: type, name: str, plugin: str) -> None:
    """A backbone subclasses prefopt.Backbone (which supplies the media-size rules and cache key the core reads)
    and leaves no abstract member unimplemented; its `sample_timesteps` takes the trainer's `latent_shape`."""
    import inspect

    from prefopt.interfaces import Backbone

    where = f"backbone `{name}` from plugin `{plugin}`"
    if not issubclass(cls, Backbone):
        raise PluginError(f"{where} must subclass prefopt.Backbone; see docs/writing-a-backbone.md.")
    if inspect.isabstract(cls):
        listing = ", ".join(f"`{m}`" for m in sorted(cls.__abstractmethods__))
        raise PluginError(f"{where} does not implement {listing}, which prefopt calls; see docs/writing-a-backbone.md.")
    parameters = inspect.signature(cls.sample_timesteps).parameters
    if "latent_shape" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise PluginError(f"{where}: `sample_timesteps` must accept the keyword `latent_shape` (the trainer passes "
                          "the batch's latent shape, for schedules that depend on the media size).")


def _implements(cls: type, member: str) -> bool:
    value = getattr(cls, member, None)
    if value is None or getattr(value, "__isabstractmethod__", False):
        return False
    return callable(value) or isinstance(value, property)


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """Call every plugin's register hooks once and return the collected components."""
    from prefopt.plugins import load_plugins, package_of

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
