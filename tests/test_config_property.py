"""Random ``--set`` values through the real command line, for every lab: a config is accepted, or refused
with exit code 2 and one line on stderr; never a traceback, never exit 1 (which means "checks failed").

``mastery labs run LAB --dry-run`` validates and prints the config without running anything, so each
example costs milliseconds. Field names are mixed with unknown ones; values are the kinds that broke
configs before: negative and huge integers, NaN, infinities, -0.0, 1e308, empty strings, control
characters, unicode and comma-separated lists.
"""

import contextlib
import importlib
import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from mastery.cli import main
from mastery.core.config import field_annotations, field_types
from mastery.core.lessons import LESSONS

LABS = [lesson for lesson in LESSONS if lesson.implemented]

SPECIAL = ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "-0.0", "0", "-1", "1e308", "-1e308", "1e-320", "1e999",
           "", " ", "none", "null", "true", "false", "1,2,3", ",", ",,", "1,,2", "0x10", "1_000", "١٢", "½", "∞",
           "4294967296", "2147483647", "2147483648", "-9223372036854775809", "9" * 30, "1.5", "abc", "a=b",
           "1\n2", "3\r", "x\u2028y", "\x1b[2J", "nan,1", "1,inf"]
_floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)
_ints = st.one_of(st.integers(-(2**70), 2**70), st.integers(-3, 3), st.integers(0, 2**33)).map(str)
_lists = st.lists(st.one_of(_ints, _floats, st.text(max_size=3)), min_size=0, max_size=4).map(",".join)
VALUES = st.one_of(st.sampled_from(SPECIAL), _ints, _floats, _lists, st.text(max_size=12))


def _outside_declared_range(config_cls: type, config: dict) -> list[str]:
    """The fields of an accepted config that break their declared constraints, judged by pydantic (an
    implementation of annotated-types independent of mastery.core.config)."""
    broken = []
    for name, annotation in field_annotations(config_cls).items():
        value = tuple(config[name]) if isinstance(config[name], list) else config[name]
        try:
            TypeAdapter(annotation).validate_python(value, strict=True)
        except ValidationError as exc:
            broken.append(f"{name}={value!r}: {exc.errors()[0]['msg']}")
    return broken


def _invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing the command line (also one line, exit 2)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("lesson", LABS, ids=lambda lesson: lesson.id)
def test_random_overrides_are_accepted_or_refused_in_one_line(lesson):
    config_cls = importlib.import_module(lesson.lab_module).Config
    fields = sorted(field_types(config_cls))
    keys = st.one_of(st.sampled_from(fields), st.sampled_from(fields), st.text(max_size=8))
    pairs = st.lists(st.tuples(keys, VALUES), min_size=1, max_size=3)

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pairs=pairs, preset=st.sampled_from(["tiny", "full"]))
    def check(pairs, preset):
        argv = ["labs", "run", lesson.id, "--preset", preset, "--dry-run"]
        argv += [f"--set={key}={value}" for key, value in pairs]
        code, out, err = _invoke(argv)
        assert "Traceback" not in err
        if code == 0:
            assert err == ""
            config = json.loads(out)["config"]  # json.loads accepts NaN/Infinity: look for them
            assert set(config) == set(fields)
            numbers = [v for v in config.values() if isinstance(v, float)]
            numbers += [x for v in config.values() if isinstance(v, list) for x in v if isinstance(x, float)]
            assert all(math.isfinite(x) for x in numbers), config
            assert 0 <= config["seed"] < 2**32
            assert not _outside_declared_range(config_cls, config), _outside_declared_range(config_cls, config)
        else:
            assert code == 2, (code, err)
            assert err.count("\n") == 1 and err.endswith("\n") and err[:-1].isprintable(), err
            assert err.startswith("mastery: error: ") or err.startswith("mastery labs run: error: "), err

    check()
