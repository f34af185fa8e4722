"""YAML → dataclasses, with strict keys, typed values and ``a.b=c`` command-line overrides.

Every config is a dataclass whose fields carry ``metadata={"help": ...}``. Parsing walks the
dataclass's type hints, so an unknown key, a missing required key and a wrong type are all reported
with the full dotted path. Components (rewards, backbones, selectors) are referenced by registered
name; their ``options`` are parsed against the component's own ``Config`` dataclass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from prefopt.errors import ConfigError, PrefoptError


@dataclass
class ComponentSpec:
    """A component referenced by its registered name, with options for its own Config."""

    kind: typing.ClassVar[str] = ""
    name: str = field(metadata={"help": "Registered name of the component (see `prefopt plugins`)."})
    options: Any = field(
        default_factory=dict,
        metadata={"help": "Options for the component; keys are the fields of its Config dataclass."},
    )


@dataclass
class RewardSpec(ComponentSpec):
    """A reward plugin and its options."""

    kind: typing.ClassVar[str] = "rewards"


@dataclass
class BackboneSpec(ComponentSpec):
    """A backbone plugin and its options."""

    kind: typing.ClassVar[str] = "backbones"


@dataclass
class SelectorSpec(ComponentSpec):
    """A pair-selector plugin and its options."""

    kind: typing.ClassVar[str] = "pair_selectors"


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file `{path}` does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file `{path}` is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file `{path}` must hold a mapping at the top level, got {_kind(data)}.")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML; list items by index, ``rewards.0.name=x``)."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override `{override}` must look like `key.sub=value`.")
        dotted, raw_value = override.split("=", 1)
        keys = [k for k in dotted.strip().split(".")]
        if not all(keys):
            raise ConfigError(f"override `{override}` has an empty key.")
        _set_path(data, keys, _override_value(raw_value, dotted), dotted)
    return data


def _override_value(raw: str, dotted: str) -> Any:
    """An override's value, read as YAML (the same text inside the config file means the same)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"override `{dotted}`: `{raw}` is not a valid YAML value ({problem}); quote text, and "
                          "write lists as `[a,b]`.") from e


def _set_path(node: Any, keys: list[str], value: Any, dotted: str) -> None:
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"override `{dotted}`: `{key}` is not an index of a list of {len(node)}.")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override `{dotted}`: `{'.'.join(keys[:i])}` is not a mapping.")
        if last:
            node[key] = value
        else:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]


def parse(cls: type, data: Any, path: str = "", registry: Any = None) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types; ``path`` prefixes messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"`{path or '<root>'}` must be a mapping of {cls.__name__} options, got {_kind(data)}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(path, key, list(fields)))
    kwargs = {}
    for name, f in fields.items():
        field_path = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"`{field_path}` is required ({_help(f)}).")
            continue
        kwargs[name] = _convert(data[name], hints[name], field_path, registry)
    try:
        instance = cls(**kwargs)
        check_bounds(instance)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"`{path or cls.__name__}`: {e}") from e
    if isinstance(instance, ComponentSpec) and registry is not None:
        instance.options = _parse_component_options(instance, path, registry)
    return instance


def _parse_component_options(spec: ComponentSpec, path: str, registry: Any) -> Any:
    try:
        registration = registry.get(spec.kind, spec.name)
    except PrefoptError as e:
        raise ConfigError(f"`{_join(path, 'name')}`: {e}") from e
    options = spec.options
    if dataclasses.is_dataclass(options):
        return options
    return parse(registration.config_class, options or {}, _join(path, "options"), registry)


def _convert(value: Any, hint: Any, path: str, registry: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path, registry)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"`{path}` must be {_type_name(hint)}, got {_kind(value)} `{value!r}`.")
    if origin is Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            # YAML 1.1 reads a bare `no`/`off` as false (`mixed_precision: no`); the choice meant is the string.
            value = next((a for a in (("no", "off", "false") if not value else ("yes", "on", "true")) if a in args),
                         value)
        if value not in args:
            raise ConfigError(choice_message(path, args, value))
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        return _convert_sequence(value, hint, origin or hint, args, path, registry)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"`{path}` must be a mapping, got {_kind(value)} `{value!r}`.")
        value_hint = args[1] if args else Any
        return {k: _convert(v, value_hint, _join(path, str(k)), registry) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, path, registry)
    return _convert_scalar(value, hint, path)


def _convert_sequence(value, hint, container, args, path, registry):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"`{path}` must be a list, got {_kind(value)} `{value!r}`.")
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"`{path}` must have {len(args)} items, got {len(value)}.")
        return tuple(_convert(v, a, f"{path}.{i}", registry) for i, (v, a) in enumerate(zip(value, args)))
    item_hint = args[0] if args else Any
    items = [_convert(v, item_hint, f"{path}.{i}", registry) for i, v in enumerate(value)]
    return tuple(items) if container is tuple else items


def _convert_scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        number = _float(value)
        if number is not None:
            if not math.isfinite(number):  # no option means anything with nan or inf; found here, not mid-run
                raise ConfigError(f"`{path}` must be a finite number, got `{value}`.")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"`{path}` must be {_type_name(hint)}, got {_kind(value)} `{value!r}`.")


def check_bounds(config: Any) -> None:
    """Raise ValueError for the first field outside the bounds its metadata declares: ``min``/``max`` (inclusive),
    ``above``/``below`` (exclusive). Every parsed config is checked; a config's ``__post_init__`` may call it too,
    so that one built in Python is held to the same bounds."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        m = f.metadata
        rules = (("min", value < m.get("min", value), "at least"), ("max", value > m.get("max", value), "at most"),
                 ("above", "above" in m and value <= m["above"], "greater than"),
                 ("below", "below" in m and value >= m["below"], "less than"))
        for key, broken, words in rules:
            if broken:
                raise ValueError(f"`{f.name}` must be {words} {m[key]}, got {value}")


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    # PyYAML reads `2e-5` (no decimal point) as a string; accept numeric strings for floats.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def choice_message(name: str, choices: typing.Sequence, value: Any) -> str:
    """`name` must be one of the choices (with the closest one when a typo is likely)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]!r}`?" if close else ""
    return f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got `{value!r}`.{hint}"


def _unknown_key_message(path: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f" Did you mean `{_join(path, close[0])}`?" if close else ""
    return f"unknown key `{_join(path, str(key))}`.{hint} Valid keys here: {', '.join(valid)}."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean (true/false)",
             Path: "a path (string)"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(hint))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(hint)[1])}" if typing.get_args(hint) else "a mapping"
    return getattr(hint, "__name__", str(hint))


def to_dict(config: Any, *, hashed: bool = False) -> Any:
    """A dataclass config as plain YAML-able data (paths as strings, tuples as lists); ``hashed``: without the fields
    whose metadata marks them ``outside_hash`` (names and places that change nothing a stage makes, such as a
    tracker's run name), as stage hashes see it."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name), hashed=hashed) for f in dataclasses.fields(config)
                if f.init and not (hashed and f.metadata.get("outside_hash"))}
    if isinstance(config, (list, tuple)):
        return [to_dict(v, hashed=hashed) for v in config]
    if isinstance(config, dict):
        return {str(k): to_dict(v, hashed=hashed) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def help_text(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every field of a config dataclass, nested ones flattened. A nested
    config's defaults are those of the instance its field makes (``dpo_stage1``'s 2500 steps, not 1000)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, hint = _join(prefix, f.name), hints[f.name]
        default = _field_default(f, defaults)
        nested = dataclasses.is_dataclass(hint) and not issubclass(hint, ComponentSpec)
        shown = "required" if default is dataclasses.MISSING else "" if nested else _show_default(default)
        rows.append((key, _type_name(hint) + _bounds_text(f), shown, _help(f)))
        if nested:
            rows.extend(help_text(hint, key, default if dataclasses.is_dataclass(default) else None))
    return rows


def _bounds_text(f: dataclasses.Field) -> str:
    """The bounds a field declares, as `prefopt options` and docs/options.md show them (` ≥ 0, < 1`)."""
    symbols = {"min": "≥", "above": ">", "max": "≤", "below": "<"}
    shown = [f"{symbol} {f.metadata[key]}" for key, symbol in symbols.items() if key in f.metadata]
    return f" ({', '.join(shown)})" if shown else ""


def _field_default(f: dataclasses.Field, instance: Any) -> Any:
    if instance is not None:
        return getattr(instance, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show_default(value: Any) -> str:
    import json

    return json.dumps(to_dict(value), ensure_ascii=False, default=str)
