"""The lab contract and its check, in the spirit of scikit-learn's ``check_estimator``.

Every lab module is held to the same shape, so the CLI, the demo, the tests and the docs can treat
all 44 alike without knowing any of them:

- a module docstring (the first line is the lab's one-line story);
- ``Config``: a *frozen* dataclass whose fields the CLI can set (bool, int, float, str, ``X | None``,
  ``tuple[X, ...]``, ``Literal[...]``), with ``seed: int``; a field with a fixed set of values is a
  ``Literal`` (checked by :func:`mastery.core.config.check_literals` for every config), never a
  hand-written ``if self.x not in (...)`` inside ``validate``; every int or float field declares its
  range (``Annotated[int, Interval(ge=1, le=1000)]``, checked by
  :func:`mastery.core.config.check_fields`) or is marked ``Unbounded("why")``;
- ``PRESETS`` with ``tiny`` and ``full``, both instances of ``Config`` that pass
  :func:`mastery.core.config.validate_config` (types, ranges, then the config's own ``validate``);
- ``HEADLINE``: the metric names that summarise a run, declared once (the README table and the
  conformance test read them from here);
- ``REQUIRES``: the registered assets (datasets, shelf models) a run reads, so the demo can say what
  is missing before it starts;
- ``run(config, progress) -> Report``.

:func:`check_lab` imports the module only: it needs no dataset and runs in milliseconds.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from types import ModuleType
from typing import Any

SETTABLE = (bool, int, float, str)


def _settable(annotation: Any) -> bool:
    """True when ``--set`` can parse a value of this type (see :func:`mastery.core.config.parse_value`)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in args)
    if origin is tuple:
        return bool(args) and _settable(args[0])
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return len(non_none) == 1 and _settable(non_none[0])
    return annotation in SETTABLE


def _hand_written_choices(config_cls: type) -> list[str]:
    """Fields that ``validate`` checks against a literal tuple/set of strings: they should be ``Literal``."""
    validate = getattr(config_cls, "validate", None)
    if validate is None:
        return []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(validate)))
    except (OSError, TypeError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1 or not isinstance(node.ops[0], ast.In | ast.NotIn):
            continue
        left, right = node.left, node.comparators[0]
        is_field = isinstance(left, ast.Attribute) and isinstance(left.value, ast.Name) and left.value.id == "self"
        is_strings = isinstance(right, ast.Tuple | ast.Set | ast.List) and right.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in right.elts)
        if is_field and is_strings:
            found.append(left.attr)
    return found


def check_lab(module: ModuleType) -> list[str]:
    """Every way ``module`` breaks the lab contract, one line each (an empty list: it conforms)."""
    from mastery.assets.catalog import ASSETS
    from mastery.core.config import has_range, numeric_fields, validate_config
    from mastery.core.errors import MasteryError

    name = module.__name__.rsplit(".", 1)[-1]
    problems: list[str] = []

    def fail(text: str) -> None:
        problems.append(f"{name}: {text}")

    if not (module.__doc__ or "").strip():
        fail("no module docstring")
    config_cls = getattr(module, "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        fail("Config is missing or not a dataclass")
        return problems
    if not config_cls.__dataclass_params__.frozen:
        fail("Config is not frozen (@dataclass(frozen=True))")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if not _settable(hints[field.name]):
            fail(f"Config.{field.name}: type {hints[field.name]!r} cannot be set with --set")
    if hints.get("seed") is not int:
        fail("Config has no 'seed: int' field")
    for field_name in _hand_written_choices(config_cls):
        fail(f"Config.{field_name}: a hand-written choice check in validate(); declare it as Literal[...]")
    for field_name, metadata in numeric_fields(config_cls).items():
        if not has_range(field_name, metadata):
            fail(f"Config.{field_name}: a number without a range; declare it, e.g. "
                 f"Annotated[int, Interval(ge=1, le=1000)], or mark it Unbounded('why')")

    presets = getattr(module, "PRESETS", None)
    if not isinstance(presets, dict) or not {"tiny", "full"} <= set(presets):
        fail("PRESETS must hold 'tiny' and 'full'")
    else:
        for preset, config in presets.items():
            if not isinstance(config, config_cls):
                fail(f"PRESETS[{preset!r}] is not a Config")
                continue
            try:
                validate_config(config)
            except MasteryError as exc:
                fail(f"PRESETS[{preset!r}] does not validate: {exc}")

    headline = getattr(module, "HEADLINE", None)
    if not (isinstance(headline, tuple) and headline and all(isinstance(m, str) and m for m in headline)):
        fail("HEADLINE must be a non-empty tuple of metric names")
    requires = getattr(module, "REQUIRES", None)
    if not isinstance(requires, tuple):
        fail("REQUIRES must be a tuple of registered asset names (empty when the lab reads none)")
    else:
        unknown = [a for a in requires if a not in ASSETS]
        if unknown:
            fail(f"REQUIRES names unregistered assets: {', '.join(unknown)}")

    run = getattr(module, "run", None)
    if not callable(run):
        fail("no run(config, progress) function")
    elif list(inspect.signature(run).parameters)[:2] != ["config", "progress"]:
        fail("run must take (config, progress)")
    return problems
