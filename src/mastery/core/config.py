"""Lab configuration: presets and ``--set key=value`` overrides, checked by type and range.

A lab's ``Config`` declares each numeric field's range once, beside the field, with the
`annotated-types <https://github.com/annotated-types/annotated-types>`_ vocabulary that pydantic and
hypothesis also read::

    epochs: Annotated[int, Interval(ge=1, le=1000)] = 3
    lr: Annotated[float, Interval(gt=0, le=10)] = 1e-3
    hidden: tuple[Annotated[int, Interval(ge=1, le=65_536)], ...] = (256, 128)

:func:`validate_config` reads those constraints for every config, whether it came from ``--set`` or
was built in code, then applies the rules every field gets without asking:

- a value has its field's type (an ``int`` field holds an int, not a bool or a float);
- a float is finite (NaN and infinity pass every ``<`` check silently, so they are refused unless
  the field carries :class:`AllowNonFinite`);
- an int fits in 64 bits (NumPy and torch take nothing wider);
- a ``seed`` without its own bounds lies in ``[0, 2**31 - 1]`` (``numpy.random.seed`` takes ``< 2**32``);
- a string holds no NUL character (no path, URL or prompt can contain one).

Relations between fields (``d_model`` divisible by ``heads``) stay in the config's own ``validate()``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types as at

from mastery.core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# numpy.random.seed and sklearn take seeds below 2**32 and labs derive seeds as seed + offset (up to 20,000):
# half the range keeps every derived seed valid.
SEED_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# A share, rate or threshold on a [0, 1] metric (accuracy, F1, recall, hit rate).
Fraction = Annotated[float, at.Interval(ge=0.0, le=1.0)]


@dataclass(frozen=True)
class Unbounded:
    """Marks a numeric field that deliberately has no range (the lab contract asks for one otherwise);
    ``reason`` says why, for the reader."""

    reason: str


@dataclass(frozen=True)
class AllowNonFinite:
    """Marks a float field for which NaN and infinity are meaningful values."""


# -- parsing --------------------------------------------------------------------------------
def _shown(raw: str) -> str:
    """``raw`` as it may appear in a one-line message: control characters and newlines escaped."""
    return raw if raw.isprintable() else ascii(raw)[1:-1]


def _parse_scalar(kind: type, raw: str, key: str) -> Any:
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"--set {key}={_shown(raw)}: expected a boolean (true/false)")
    if kind is int:
        try:
            return int(raw)
        except ValueError:  # also a number too long to convert (Python's 4300-digit limit)
            raise ConfigError(f"--set {key}={_shown(raw)}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--set {key}={_shown(raw)}: expected a number") from None
    if kind is str:
        return raw
    raise ConfigError(f"--set {key}: fields of type {kind!r} cannot be set from the command line")


def parse_value(annotation: Any, raw: str, key: str) -> Any:
    """Convert ``raw`` to the type named by a dataclass field annotation.

    Supports bool, int, float, str, ``X | None`` and ``tuple[X, ...]`` (comma-separated).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw.strip().lower() in {"none", "null", ""} and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return parse_value(non_none[0], raw, key)
        raise ConfigError(f"--set {key}: unsupported union type {annotation!r}")
    if origin is tuple:
        inner = args[0] if args else str
        parts = [p for p in raw.split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"--set {key}={_shown(raw)}: expected a comma-separated list")
        return tuple(parse_value(inner, p.strip(), key) for p in parts)
    if origin is typing.Literal:
        if raw not in args:
            raise ConfigError(f"--set {key}={_shown(raw)}: expected one of {', '.join(map(str, args))}")
        return raw
    return _parse_scalar(annotation, raw, key)


def field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> plain type (``Annotated`` stripped): what ``--set`` parses."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


@functools.cache
def field_annotations(config_cls: type) -> dict[str, Any]:
    """Field name -> annotation with its ``Annotated`` constraints kept: what the range checks read."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


# -- constraints ----------------------------------------------------------------------------
def _split(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, m1, m2]`` -> (T, [m1, m2]) with grouped metadata (Interval, Len) flattened."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for m in extra:
            metadata.extend(m if isinstance(m, at.GroupedMetadata) else [m])
    return annotation, metadata


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(non_none) < len(args):
            return non_none[0], True
    return annotation, False


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """(type, constraints, optional) of a field: ``Annotated[int, Ge(1)] | None`` -> (int, [Ge(1)], True)."""
    kind, metadata = _split(annotation)
    kind, optional = _optional(kind)
    kind, more = _split(kind)
    return kind, metadata + more, optional


def numeric_fields(config_cls: type) -> dict[str, list[Any]]:
    """Every int or float field (alone, optional or as tuple items) -> the constraints it declares."""
    out = {}
    for name, annotation in field_annotations(config_cls).items():
        base, metadata, _ = _unwrap(annotation)
        if typing.get_origin(base) is tuple:
            base, metadata = _split((typing.get_args(base) or (str,))[0])
        if base in (int, float):
            out[name] = metadata
    return out


def has_range(name: str, metadata: list[Any]) -> bool:
    """A lower and an upper bound, an explicit :class:`Unbounded`, or a seed (bounded by the generic rule)."""
    if name == "seed" or any(isinstance(m, Unbounded) for m in metadata):
        return True
    lower = any(isinstance(m, at.Ge | at.Gt) for m in metadata)
    upper = any(isinstance(m, at.Le | at.Lt) for m in metadata)
    return lower and upper


def _range_problem(value: Any, metadata: list[Any]) -> str | None:
    for m in metadata:
        if isinstance(m, at.Ge) and not value >= m.ge:
            return f"must be >= {m.ge}"
        if isinstance(m, at.Gt) and not value > m.gt:
            return f"must be > {m.gt}"
        if isinstance(m, at.Le) and not value <= m.le:
            return f"must be <= {m.le}"
        if isinstance(m, at.Lt) and not value < m.lt:
            return f"must be < {m.lt}"
        if isinstance(m, at.MultipleOf) and value % m.multiple_of:
            return f"must be a multiple of {m.multiple_of}"
        if isinstance(m, at.MinLen) and len(value) < m.min_length:
            return f"needs at least {m.min_length} item(s)" if isinstance(value, tuple) else \
                f"needs at least {m.min_length} character(s)"
        if isinstance(m, at.MaxLen) and len(value) > m.max_length:
            return f"takes at most {m.max_length} item(s)" if isinstance(value, tuple) else \
                f"takes at most {m.max_length} character(s)"
        if isinstance(m, at.Predicate) and not m.func(value):
            return f"fails {getattr(m.func, '__name__', 'its check')}"
    return None


_EXPECTED = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _scalar_problem(name: str, kind: Any, value: Any, metadata: list[Any]) -> str | None:
    """Why ``value`` does not fit a scalar field of type ``kind`` with ``metadata``; None when it does."""
    if typing.get_origin(kind) is typing.Literal:
        return None  # check_literals names the choices
    if kind is bool:
        return None if isinstance(value, bool) else "expected a boolean"
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return "expected an integer"
        if name == "seed" and not any(isinstance(m, at.Ge | at.Gt | at.Le | at.Lt) for m in metadata):
            metadata = [*metadata, at.Ge(0), at.Le(SEED_MAX)]
        if abs(value) > INT64_MAX:  # the declared range names the better bound, when there is one
            return _range_problem(value, metadata) or f"must be between {-INT64_MAX} and {INT64_MAX}"
    elif kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "expected a number"
        if not math.isfinite(value) and not any(isinstance(m, AllowNonFinite) for m in metadata):
            return "expected a finite number"
    elif kind is str:
        if not isinstance(value, str):
            return "expected a string"
        if "\0" in value:
            return "must not contain a NUL character"
    return _range_problem(value, metadata)


def field_problem(name: str, annotation: Any, value: Any) -> str | None:
    """Why ``value`` breaks field ``name``'s type or range (declared or generic); None when it fits."""
    kind, metadata, optional = _unwrap(annotation)
    if value is None:
        return None if optional else f"expected {_EXPECTED.get(kind, 'a value')}, got None"
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, tuple):
            return "expected a tuple"
        item_kind, item_metadata = _split((typing.get_args(kind) or (str,))[0])
        for item in value:
            problem = _scalar_problem(name, item_kind, item, item_metadata)
            if problem:
                return f"item {item!r} {problem}" if problem.startswith("must") else f"item {item!r}: {problem}"
        return _range_problem(value, metadata)
    return _scalar_problem(name, kind, value, metadata)


def _label(name: str, value: Any) -> str:
    return _shown(f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}")


def check_fields(config: Any) -> None:
    """Every field of ``config`` has its type and lies in its range; the first that does not is named."""
    for name, annotation in field_annotations(type(config)).items():
        value = getattr(config, name)
        problem = field_problem(name, annotation, value)
        if problem:
            raise ConfigError(f"{_label(name, value)}: {problem}")


def check_literals(config: Any) -> None:
    """Every ``Literal[...]`` field of a config dataclass holds one of its values (one check for all labs,
    instead of a hand-written ``if self.x not in (...)`` in each ``validate``)."""
    for name, annotation in field_types(type(config)).items():
        allowed = _literal_values(annotation)
        value = getattr(config, name)
        if allowed is not None and value not in allowed:
            choices = ", ".join(str(a) for a in allowed if a is not None)
            raise ConfigError(f"{_label(name, value)}: expected one of {choices}")


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of ``Literal[...]`` or ``Literal[...] | None``; None for other types."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return args
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is typing.Literal:
            return (*typing.get_args(inner[0]), None)
    return None


def validate_config(config: Any) -> Any:
    """Literal fields, every field's type and range, then the config's own ``validate()`` (relations
    between fields) when it has one; returns the config."""
    check_literals(config)
    check_fields(config)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def apply_overrides(config: Any, overrides: list[str] | dict[str, str]) -> Any:
    """Return a copy of ``config`` with ``key=value`` overrides applied and type-checked."""
    types_by_name = field_types(type(config))
    annotations = field_annotations(type(config))
    pairs: list[tuple[str, str]] = []
    if isinstance(overrides, dict):
        pairs = [(k, str(v)) for k, v in overrides.items()]
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {_shown(item)}: expected key=value")
            key, raw = item.split("=", 1)
            pairs.append((key.strip(), raw.strip()))
    changes: dict[str, Any] = {}
    for key, raw in pairs:
        if key not in types_by_name:
            valid = ", ".join(sorted(types_by_name))
            raise ConfigError(f"--set {_shown(key)}: unknown key; valid keys are: {valid}")
        value = parse_value(types_by_name[key], raw, key)
        problem = field_problem(key, annotations[key], value)
        if problem:  # named as typed, before the relations between fields are looked at
            raise ConfigError(f"--set {key}={_shown(raw)}: {problem}")
        changes[key] = value
    return validate_config(dataclasses.replace(config, **changes))


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
