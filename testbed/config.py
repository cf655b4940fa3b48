"""Validated configuration dataclasses: checks, dict round-trips, dotted overrides, stable hashes.

Every config in the project is a frozen dataclass that calls the helpers below from its
``__post_init__``, so a bad value fails where it is written, naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration field holds a value it must not."""


def fail(owner: object, field: str, value: object, why: str) -> typing.NoReturn:
    name = type(owner).__name__
    raise ConfigError(f"{name}.{field}={value!r}: {why}")


def check_positive(owner: object, *fields: str, allow_zero: bool = False) -> None:
    """Raise ConfigError unless each named field is > 0 (>= 0 with allow_zero)."""
    for f in fields:
        v = getattr(owner, f)
        if v < 0 or (v == 0 and not allow_zero):
            fail(owner, f, v, "must be >= 0" if allow_zero else "must be > 0")


def check_range(owner: object, field: str, lo: float, hi: float) -> None:
    v = getattr(owner, field)
    if not lo <= v <= hi:
        fail(owner, field, v, f"must lie in [{lo}, {hi}]")


def check_choice(owner: object, field: str, choices: Iterable[object]) -> None:
    v = getattr(owner, field)
    choices = tuple(choices)
    if v not in choices:
        fail(owner, field, v, f"must be one of {list(choices)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config (JSON-safe)."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build ``cls`` from a (possibly partial, possibly nested) dict; unknown keys fail."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        tp = types_[key]
        if _is_dataclass_type(tp) and isinstance(value, Mapping):
            value = from_dict(tp, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_scalar(text: str, tp: Any) -> Any:
    """Parse an override's text into the field's declared type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_scalar(text, inner[0])
    if tp is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"cannot read {text!r} as a bool")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError as err:
            raise ConfigError(f"cannot read {text!r} as {tp.__name__}") from err
    if origin is tuple:
        return tuple(_parse_scalar(t, args[0]) for t in text.split("+") if t)
    return json.loads(text)


def field_type(cls: type, dotted: str) -> Any:
    """Declared type of a dotted field, e.g. ``objective.tau``; unknown names fail."""
    tp: Any = cls
    for part in dotted.split("."):
        if not _is_dataclass_type(tp):
            raise ConfigError(f"{dotted!r}: {part!r} is not inside a config section")
        types_ = _field_types(tp)
        if part not in types_:
            raise ConfigError(f"{dotted!r}: {tp.__name__} has no field {part!r}; known: {sorted(types_)}")
        tp = types_[part]
    return tp


def parse_value(cls: type, dotted: str, text: str) -> Any:
    """Parse the text of an override for the dotted field of ``cls``."""
    return _parse_scalar(text, field_type(cls, dotted))


def with_overrides(cfg: C, overrides: Mapping[str, Any]) -> C:
    """Copy of ``cfg`` with dotted fields replaced (values already typed, or text to parse)."""
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        if isinstance(value, str):
            value = parse_value(type(cfg), dotted, value)
        else:
            field_type(type(cfg), dotted)
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return from_dict(type(cfg), data)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_dict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config's content (a dataclass, or a dict of them): a storage key."""
    text = json.dumps(_plain(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
