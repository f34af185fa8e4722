"""Collects what plugins register and looks components up by name.

A component is checked when it registers: the members its kind requires, the form of every ability it offers
(``prefopt.interfaces.ABILITIES``), a selector's declared roles, the methods a reward's ``measures`` promise. A
duplicate name is an error that names both plugins, so a user knows which package to remove. The plugin manager
(``prefopt.plugins``) fills the registry.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from prefopt.errors import PluginError
from prefopt.interfaces import ABILITIES

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

    @property
    def abilities(self) -> list[str]:
        """The abilities the component offers (names of prefopt.interfaces' ability protocols)."""
        return [ability.__name__ for ability in ABILITIES[self.kind] if _offers(self.cls, ability)]


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
    where = f"{KIND_LABELS[kind]} `{name}` from plugin `{plugin}`"
    if kind == "backbones":
        _check_backbone_class(cls, name, plugin)
    else:
        missing = [member for member in _required_members(kind) if not _implements(cls, member)]
        if missing:
            listing = ", ".join(f"`{m}`" for m in missing)
            raise PluginError(f"{where} does not implement {listing}, which prefopt calls; see docs/plugin-hooks.md "
                              f"for what a {KIND_LABELS[kind]} must provide.")
    for ability in ABILITIES[kind]:
        _check_ability(cls, ability, where)
    if kind == "pair_selectors":
        _check_roles(cls, where)
    if kind == "rewards":
        _check_measures(cls, where)


def _offers(cls: type, ability: type) -> bool:
    """Whether ``cls`` has any member of an ability protocol (then it must have every one, in the right form)."""
    return any(getattr(cls, member, None) is not None for member in _protocol_members(ability))


def _protocol_members(ability: type) -> list[str]:
    return [m for m in vars(ability) if not m.startswith("_") and callable(getattr(ability, m, None))]


def _check_ability(cls: type, ability: type, where: str) -> None:
    """An ability is all its members, each a classmethod where the protocol has one (they are called before any
    instance exists) and taking the protocol's arguments."""
    import inspect

    if not _offers(cls, ability):
        return
    for member in _protocol_members(ability):
        wanted = inspect.getattr_static(ability, member)
        found = inspect.getattr_static(cls, member, None)
        if found is None or not callable(getattr(cls, member)):
            raise PluginError(f"{where} offers {ability.__name__} but lacks `{member}`; see docs/plugin-hooks.md.")
        if isinstance(wanted, classmethod) and not isinstance(found, (classmethod, staticmethod)):
            raise PluginError(f"{where}: `{member}` must be a classmethod ({ability.__name__}: prefopt calls it "
                              "before the component is built).")
        expected = len(inspect.signature(getattr(ability, member)).parameters)
        parameters = inspect.signature(getattr(cls, member)).parameters.values()
        if not any(p.kind is p.VAR_POSITIONAL for p in parameters) and len(parameters) < expected:
            raise PluginError(f"{where}: `{member}` must take {expected} argument(s) ({ability.__name__}).")


def _check_roles(cls: type, where: str) -> None:
    from prefopt.interfaces import FILTERS_PAIRS, MAKES_PAIRS

    roles = getattr(cls, "roles", None)
    if not isinstance(roles, (frozenset, set, tuple, list)) or not roles or set(roles) - {MAKES_PAIRS, FILTERS_PAIRS}:
        raise PluginError(f"{where} must declare `roles`: what it can do in a chain, a set of `{MAKES_PAIRS}` (make "
                          f"pairs from scored items) and `{FILTERS_PAIRS}` (keep some of an earlier selector's pairs).")


def _check_measures(cls: type, where: str) -> None:
    from prefopt.interfaces import MEASURE_METHODS

    for measure in getattr(cls, "measures", ()):
        if measure not in MEASURE_METHODS:
            raise PluginError(f"{where} declares an unknown measure `{measure}` (known: {', '.join(MEASURE_METHODS)}).")
        missing = [m for m in MEASURE_METHODS[measure] if not _implements(cls, m)]
        if missing:
            raise PluginError(f"{where} declares `{measure}` but lacks `{missing[0]}`, which that measure promises.")


# Members of the Protocols in prefopt.interfaces; a backbone must implement every abstract member of Backbone.
_PROTOCOL_MEMBERS = {"rewards": ("score", "provenance"), "pair_selectors": ("select",),
                     "recipes": ("prepare", "missing_requirements", "check_inputs", "run", "clean")}


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


