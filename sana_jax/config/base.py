"""The base of every component config: a frozen dataclass whose fields are the keys of a ``config.json``.

One source of truth per fact: a config mirrors the reference library's ``config.json`` exactly. A key the class
does not know is an error naming the key; a missing key takes the diffusers default. Keys starting with ``_``
(``_class_name``, ``_diffusers_version``, ...) are metadata, not architecture, and are not fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import types
import typing
from typing import Any, ClassVar

from sana_jax import _io

DIFFUSERS_VERSION = "0.42.1"


class ConfigError(ValueError):
    """A config.json that does not describe a valid component."""


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """Base class: JSON round trip with strict keys. Subclasses set ``class_name``."""

    class_name: ClassVar[str] = ""
    # Which library's folder format the config belongs to; written as `_diffusers_version` or `transformers_version`.
    library: ClassVar[str] = "diffusers"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "ComponentConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if not k.startswith("_") and k not in fields)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} for {cls.class_name or cls.__name__}; "
                f"expected a subset of {sorted(fields)}"
            )
        name = data.get("_class_name")
        if name is not None and cls.class_name and name != cls.class_name:
            raise ConfigError(f"{source}: _class_name is {name!r}, expected {cls.class_name!r}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue
            values[key] = _coerce(hints[key], value, f"{source}: key {key!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": self.class_name}
        if self.library == "diffusers":
            out["_diffusers_version"] = DIFFUSERS_VERSION
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ComponentConfig":
        return cls.from_dict(read_json(path), source=str(path))

    def to_json_file(self, path: str | os.PathLike) -> None:
        _io.atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def _to_json(value):
    return [_to_json(v) for v in value] if isinstance(value, tuple) else value


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON object; Python's parser accepts the `-Infinity` diffusers writes into scheduler configs."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Checks a JSON value against a field's type; lists become tuples, ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        for arg in args:
            with contextlib.suppress(ConfigError):
                return _coerce(arg, value, where)
        raise ConfigError(f"{where}: {value!r} is not a {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")

