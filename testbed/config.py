"""Validated configuration dataclasses: checks, dict round-trips, dotted overrides, stable hashes.

Every config in the project is a frozen dataclass that calls the helpers below from its
``__post_init__``, so a bad value fails where it is written, naming the field and the value.
Values from the command line, YAML/JSON files and sweeps all pass through :func:`from_dict`,
which reads each one as its field's declared type (text is parsed, ``3.0`` for an int is 3) or
fails with a one-line :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import reprlib
import textwrap
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")  # a config dataclass

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
# Runs trained together in one process by default (compare, experiment, sweep). On a 2-core CPU a
# member costs about the same at 4 and at 16 (bench_engine); a GPU wants every member at once.
POPULATION = 16
NONE = ("none", "null")


_SHORT = reprlib.Repr()  # long values are elided, so errors stay one readable line
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40
_SHORT.maxlevel = 2  # a nested value (a YAML alias bomb) shows its first two levels


def shown(value: object) -> str:
    """``repr(value)``, elided to stay short: how an error line shows a value it refuses."""
    return _SHORT.repr(value)


class ConfigError(ValueError):
    """A configuration field holds a value it must not."""


def fail(owner: object, field: str, value: object, why: str) -> typing.NoReturn:
    name = type(owner).__name__
    raise ConfigError(f"{name}.{field}={_SHORT.repr(value)}: {why}")


def _finite_number(owner: object, field: str) -> float:
    """The field's value, failing unless it is a real, finite number (bools are not numbers)."""
    v = getattr(owner, field)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        fail(owner, field, v, "must be a number")
    if not isinstance(v, numbers.Integral) and not math.isfinite(v):
        fail(owner, field, v, "must be a finite number")
    return typing.cast(float, v)  # a real number, returned as it is (an int stays an int)


def check_finite(owner: object, *fields: str) -> None:
    """Raise ConfigError unless each named field is a finite number (not NaN, inf or text)."""
    for f in fields:
        _finite_number(owner, f)


def check_positive(owner: object, *fields: str, allow_zero: bool = False) -> None:
    """Raise ConfigError unless each named field is a finite number > 0 (>= 0 with allow_zero)."""
    for f in fields:
        v = _finite_number(owner, f)
        if v < 0 or (v == 0 and not allow_zero):
            fail(owner, f, v, "must be >= 0" if allow_zero else "must be > 0")


def check_range(owner: object, field: str, lo: float, hi: float) -> None:
    """Raise ConfigError unless the field is a finite number in [lo, hi]."""
    v = _finite_number(owner, field)
    if not lo <= v <= hi:
        fail(owner, field, v, f"must lie in [{lo}, {hi}]")


def check_at_most(owner: object, bound: float, *fields: str) -> None:
    """Raise ConfigError unless each named field is a finite number <= ``bound``: a sane ceiling,
    above which a value is a typo that would overflow later, far from its field."""
    for f in fields:
        v = _finite_number(owner, f)
        if v > bound:
            fail(owner, f, v, f"must be <= {bound:g}")


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


def from_dict(cls: type[C], data: Mapping[str, Any], _path: str = "") -> C:
    """Build ``cls`` from a (possibly partial, possibly nested) dict; unknown keys fail.

    Each value is read as its field's declared type (see :func:`coerce`), so text, YAML and JSON
    values all work, and a wrong one fails naming its dotted field.
    """
    where = _path or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}={shown(data)}: expected a mapping of field names to values")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown, key=str)}; known: {sorted(names)}")
    types_ = _field_types(cls)
    kwargs = {
        key: coerce(f"{_path}.{key}" if _path else key, value, types_[key]) for key, value in data.items()
    }
    return cls(**kwargs)


def coerce(path: str, value: Any, tp: Any) -> Any:
    """``value`` read as the declared type ``tp`` of the field at dotted ``path``; text is parsed.

    Raises a one-line ConfigError naming ``path`` when the value cannot be that type. Floats
    must be finite; an int field takes an integral float (``3.0`` from YAML is 3).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.strip().lower() in NONE)
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(path, value, inner[0])
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, path)
        example = dataclasses.fields(tp)[0].name
        raise ConfigError(
            f"{path}={shown(value)}: {path} is a section, not a value; "
            f"set its fields, e.g. {path}.{example}=..."
        )
    if origin is tuple:
        return _coerce_tuple(path, value, args)
    reader = _READERS.get(tp)
    return value if reader is None else reader(path, value)


def _bad(path: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{path}={_SHORT.repr(value)}: {why}")


def _read_bool(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in TRUE or text in FALSE:
        return text in TRUE
    _bad(path, value, "expected true or false")


def _read_int(path: str, value: Any) -> int:
    number: Any = _parse_number(path, value, "an integer") if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        _bad(path, value, "expected an integer")
    if isinstance(number, numbers.Integral):
        return int(number)
    # typeshed's numbers.Real has no __int__, yet every real number converts
    if not math.isfinite(number) or number != int(number):  # type: ignore[call-overload]
        _bad(path, value, "expected an integer")
    return int(number)  # type: ignore[call-overload]


def _read_float(path: str, value: Any) -> float:
    number = _parse_number(path, value, "a number") if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        _bad(path, value, "expected a number")
    try:
        out = float(number)
    except OverflowError:
        _bad(path, value, "must be a finite number")
    if not math.isfinite(out):
        _bad(path, value, "must be a finite number")
    return out


def _parse_number(path: str, text: str, what: str) -> int | float:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    _bad(path, text, f"cannot read it as {what}")


def _read_str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        _bad(path, value, "expected text")
    return value


_READERS = {bool: _read_bool, int: _read_int, float: _read_float, str: _read_str}


def _coerce_tuple(path: str, value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A ``tuple[X, ...]`` field: a list, or text with ``+`` between items (``0.5+0.5``)."""
    if isinstance(value, str):
        value = [t for t in value.split("+") if t.strip()]
    if not isinstance(value, list | tuple):
        _bad(path, value, "expected a list, or items joined by '+' (e.g. 0.5+0.5)")
    return tuple(coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))


def parse_overrides(pairs: Iterable[str], flag: str = "--set") -> dict[str, str]:
    """``["a.b=1", ...]`` as ``{"a.b": "1"}``: the one ``FIELD=VALUE`` parser of every option.

    ``flag`` names the option in errors. A name given twice fails rather than one silently winning.
    """
    out: dict[str, str] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {p!r}: expected NAME=VALUE, e.g. trainer.lr=0.005")
        if key in out:
            raise ConfigError(f"{flag} {key!r}: given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def field_type(cls: type, dotted: str) -> Any:
    """Declared type of a dotted field, e.g. ``objective.sapo_tau``; unknown names fail."""
    tp: Any = cls
    seen: list[str] = []
    for part in dotted.split("."):
        if not _is_dataclass_type(tp):
            raise ConfigError(f"{dotted!r}: {'.'.join(seen)} is a value, not a section with fields")
        types_ = _field_types(tp)
        if part not in types_:
            raise ConfigError(f"{dotted!r}: {tp.__name__} has no field {part!r}; known: {sorted(types_)}")
        tp = types_[part]
        seen.append(part)
    return tp


def parse_value(cls: type, dotted: str, text: str) -> Any:
    """Parse the text of an override for the dotted field of ``cls``."""
    return coerce(dotted, text, field_type(cls, dotted))


def with_overrides(cfg: C, overrides: Mapping[str, Any]) -> C:
    """Copy of ``cfg`` with dotted fields replaced (values typed, or text to parse).

    A mapping given for a section updates that section's fields.
    """
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        field_type(type(cfg), dotted)  # unknown names fail here
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        if isinstance(value, Mapping) and isinstance(node[leaf], dict):
            value = {**node[leaf], **value}
        node[leaf] = value
    return from_dict(type(cfg), data)


def field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    source: str | None = None,
    trl: str | None = None,
    verl: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    keyed_when_set: bool = False,
    keyed_by_content: bool = False,
) -> Any:
    """A config field with its explanation, as TRL's ``GRPOConfig`` documents each of its fields:
    ``help`` says what it does (units, range, effect); ``source`` where it comes from (a paper);
    ``trl`` and ``verl`` name the same knob in TRL's ``GRPOConfig`` and in verl's config, where
    they have one. ``sapo-testbed config --explain`` and ``docs/CONFIG.md`` show them.
    ``keyed_when_set``: see :func:`added_field`. ``keyed_by_content``: a path whose content, not
    its text, enters ``config_hash`` (see :func:`content_digest`)."""
    extra = {"source": source, "trl": trl, "verl": verl}
    metadata: dict[str, Any] = {"help": help, **{k: v for k, v in extra.items() if v is not None}}
    if keyed_when_set:
        metadata["keyed_when_set"] = True
    if keyed_by_content:
        metadata["keyed_by_content"] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def added_field(
    default: Any, *, help: str, source: str | None = None, trl: str | None = None, verl: str | None = None
) -> Any:
    """A config field added after runs were stored: left out of ``config_hash`` while it holds
    ``default``, so every stored run (and cached base policy) keeps its key."""
    return field(default, help=help, source=source, trl=trl, verl=verl, keyed_when_set=True)


def config_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every field of a config class as (dotted name, field), sections first and then their own
    fields in order (``task``, ``task.world``, ``task.world.kind``, ...)."""
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        yield name, f
        if _is_dataclass_type(types_[f.name]):
            yield from config_fields(types_[f.name], f"{name}.")


def config_sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """The config class and each config class nested in it, as (dotted prefix, class): ``("",
    RunConfig)``, ``("task.", TaskConfig)``, ``("task.world.", WorldConfig)``, ..."""
    yield prefix, cls
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        if _is_dataclass_type(types_[f.name]):
            yield from config_sections(types_[f.name], f"{prefix}{f.name}.")


def explained_yaml(cfg: Any, width: int = 100) -> str:
    """``cfg`` as nested YAML with each field's help (and source) as a comment above it: the
    same values as plain YAML, so ``--config`` reads it back."""
    lines: list[str] = []
    _explain_into(lines, cfg, "", width)
    return "\n".join(lines) + "\n"


def _explain_into(lines: list[str], cfg: Any, indent: str, width: int) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        text = f.metadata.get("help", "")
        if "source" in f.metadata:
            text += f" Source: {f.metadata['source']}."
        lines += textwrap.wrap(text, width, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            _explain_into(lines, value, indent + "  ", width)
        else:
            plain = json.loads(json.dumps(value))  # tuples as lists
            text = yaml.safe_dump(plain, default_flow_style=True, width=1000).removesuffix("...\n")
            lines.append(f"{indent}{f.name}: {text.strip()}")


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        plain = {
            f.name: _plain(_keyed_value(f, getattr(obj, f.name)))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("keyed_when_set") and getattr(obj, f.name) == f.default)
        }
        storage_key = getattr(obj, "storage_key", None)  # a class may re-key fields whose default moved
        return plain if storage_key is None else storage_key(plain)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


def _keyed_value(f: dataclasses.Field[Any], value: Any) -> Any:
    """What a field contributes to a key: its value, or for a path keyed by content its digest."""
    return content_digest(value) if f.metadata.get("keyed_by_content") and value is not None else value


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) -> digest: one read per process


def _file_digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def content_digest(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes, or of a directory's files (each relative path with the
    digest of its bytes; hidden files and folders, such as download caches, left out), so that a run
    keyed by it changes when the data or the model changes and not when it moves. ``missing:<path>``
    when nothing is there (the loader then says so)."""
    p = Path(path).expanduser()
    if p.is_file():
        return f"sha256:{_file_digest(p)}"
    if p.is_dir():
        files = sorted(
            q
            for q in p.rglob("*")
            if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)
        )
        listing = "\n".join(f"{q.relative_to(p).as_posix()} {_file_digest(q)}" for q in files)
        return f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"
    return f"missing:{path}"


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config's content (a dataclass, or a dict of them): a storage key."""
    text = json.dumps(_plain(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def check_seed(owner: object, field: str) -> None:
    """Raise ConfigError unless the field is an int seed in [0, 2**63)."""
    v = getattr(owner, field)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        fail(owner, field, v, "must be an int in [0, 2**63)")


# -- input files: one line naming the file for anything it cannot be -----------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (else the last one wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: list[Any] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key)} written twice", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep)


def read_text(path: Path | str) -> str:
    """The UTF-8 text of an input file, or a one-line ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start})"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from err


def load_yaml(path: Path | str) -> Any:
    """A YAML input file's content, each key written once, or a one-line ConfigError naming it."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({problem}{where})") from err
