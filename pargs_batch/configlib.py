"""The config loader every command shares: YAML + dotted overrides into checked dataclasses.

A schema is a tree of dataclasses whose fields are made with ``option(help, default)`` and whose
``__post_init__`` checks values with ``positive``, ``one_of`` and ``check_model_path``. A bad
value fails before any model loads, with one line that names the key, the value and what is
allowed (``ConfigError``). The schemas live with their commands: ``config.py`` (generate),
``evaluation/config.py``, ``rm_training/config.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that is not allowed; ``str()`` is the one-line message for users."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config error: {key}={value!r} is not allowed: {allowed}")

    def __reduce__(self):  # across processes (a spawned trainer's error reaches its parent whole)
        return ConfigError, (self.key, self.value, self.allowed)


def option(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model_path(key: str, path: str) -> None:
    """A model is a local directory or a Hugging Face hub id; anything else is a config error."""
    if not path:
        raise ConfigError(key, path, "a model directory or a Hugging Face hub id is required")
    if os.path.isdir(os.path.expanduser(path)):
        return
    looks_local = path.startswith(("/", ".", "~")) or path.count("/") > 1
    if looks_local or not _HUB_ID.match(path):
        raise ConfigError(key, path, "no such directory (and not a hub id like 'org/name')")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise ConfigError(key, path, "not in the local Hugging Face cache and HF_HUB_OFFLINE=1")


def positive(key: str, value: int | float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, value, "must be >= 0" if allow_zero else "must be > 0")


def one_of(key: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(key, value, "expected one of " + ", ".join(map(str, allowed)))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return True, args[0]
    return False, tp


def _coerce(key: str, value: Any, tp: Any) -> Any:
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(key, value, "a value is required")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, value, "expected a number") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, value, "expected a string")
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, "expected a mapping")
        return value
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(key, value, "expected a list")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    return value


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """Make the dataclass ``cls`` from nested dicts, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", data, "expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(prefix + str(key), value, "unknown key; known keys: " + ", ".join(names))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value or {}, prefix + key + ".")
        else:
            kwargs[key] = _coerce(prefix + key, value, tp)
    # sections left out are still validated, with their defaults
    for name in names:
        if name not in kwargs and dataclasses.is_dataclass(hints[name]):
            kwargs[name] = build(hints[name], {}, prefix + name + ".")
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, raw, "overrides look like section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, raw, f"{part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def load_config(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Read YAML from ``path`` (optional), apply dotted overrides, build and validate ``cls``."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError("--config", str(path), "no such file") from None
        except yaml.YAMLError as e:
            raise ConfigError("--config", str(path), f"not valid YAML ({e.__class__.__name__})") from None
    return build(cls, apply_overrides(data, list(overrides)))


def merge_overrides(data: dict, overrides: Mapping[str, Any], cls: type | None = None) -> dict:
    """Apply Python overrides to a nested dict of the schema ``cls``: a dotted key (``"decode.beta"``)
    sets one value; a section name with a mapping (``decode={"beta": 2.0}``) sets the keys it names
    and keeps the rest. Only sections merge: a key whose value is itself a mapping
    (``ray.engine_resources``) is replaced whole."""
    for key, value in overrides.items():
        node, kind, parts = data, cls, str(key).split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # a section left empty in YAML
                node[part] = {}
            node, kind = node[part], _section(kind, part)
            if not isinstance(node, dict):
                raise ConfigError(key, value, f"{part} is not a section")
        last = parts[-1]
        section = _section(kind, last)
        if isinstance(value, Mapping) and (section is not None or kind is None):
            if not isinstance(node.get(last), dict):
                node[last] = {}
            merge_overrides(node[last], value, section)
        else:
            node[last] = copy.deepcopy(value)
    return data


def _section(cls: type | None, name: str) -> type | None:
    """The dataclass type of ``cls``'s field ``name`` when it is a section, else None."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    tp = typing.get_type_hints(cls).get(name)
    return tp if dataclasses.is_dataclass(tp) else None


class Loadable:
    """What a top-level config offers its users: made from YAML or a dict, with overrides, and
    written back out. Every way in is checked by ``build`` (one ``ConfigError`` naming the key)."""

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
        """The config in a YAML file, with ``section.key=value`` overrides (as on the command line)."""
        return load_config(cls, path, overrides)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], /, **overrides: Any):
        """The config a nested dict describes (the YAML's shape), with ``with_overrides``' overrides
        (``data={...}`` is the data section's override: the dict itself is positional)."""
        return build(cls, merge_overrides(copy.deepcopy(dict(values)), overrides, cls))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The whole config as YAML that ``from_yaml`` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, **overrides: Any):
        """A new config: this one with ``decode={"beta": 2.0}`` or ``**{"decode.beta": 2.0}`` applied."""
        return type(self).from_dict(self.to_dict(), **overrides)
