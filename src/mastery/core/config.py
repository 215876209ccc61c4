"""Lab configuration: presets and ``--set key=value`` overrides validated against field types."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from mastery.core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_scalar(kind: type, raw: str, key: str) -> Any:
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"--set {key}={raw}: expected a boolean (true/false)")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"--set {key}={raw}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--set {key}={raw}: expected a number") from None
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
            raise ConfigError(f"--set {key}={raw}: expected a comma-separated list")
        return tuple(parse_value(inner, p.strip(), key) for p in parts)
    if origin is typing.Literal:
        if raw not in args:
            raise ConfigError(f"--set {key}={raw}: expected one of {', '.join(map(str, args))}")
        return raw
    return _parse_scalar(annotation, raw, key)


def field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def check_literals(config: Any) -> None:
    """Every ``Literal[...]`` field of a config dataclass holds one of its values (one check for all labs,
    instead of a hand-written ``if self.x not in (...)`` in each ``validate``)."""
    for name, annotation in field_types(type(config)).items():
        allowed = _literal_values(annotation)
        value = getattr(config, name)
        if allowed is not None and value not in allowed:
            choices = ", ".join(str(a) for a in allowed if a is not None)
            raise ConfigError(f"{name}={value!r}: expected one of {choices}")


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
    """Literal fields, then the config's own ``validate()`` when it has one; returns the config."""
    check_literals(config)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def apply_overrides(config: Any, overrides: list[str] | dict[str, str]) -> Any:
    """Return a copy of ``config`` with ``key=value`` overrides applied and type-checked."""
    types_by_name = field_types(type(config))
    pairs: list[tuple[str, str]] = []
    if isinstance(overrides, dict):
        pairs = [(k, str(v)) for k, v in overrides.items()]
    else:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item}: expected key=value")
            key, raw = item.split("=", 1)
            pairs.append((key.strip(), raw.strip()))
    changes: dict[str, Any] = {}
    for key, raw in pairs:
        if key not in types_by_name:
            valid = ", ".join(sorted(types_by_name))
            raise ConfigError(f"--set {key}: unknown key; valid keys are: {valid}")
        changes[key] = parse_value(types_by_name[key], raw, key)
    return validate_config(dataclasses.replace(config, **changes))


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
