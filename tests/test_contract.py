"""The lab contract (mastery.core.contract) over every lab, without the datasets mirror, and the check itself."""

import importlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pytest
from annotated_types import Gt, Interval

from mastery.core.config import Unbounded, apply_overrides, check_literals
from mastery.core.contract import check_lab
from mastery.core.errors import ConfigError
from mastery.core.index import README_END, README_START, labs_table
from mastery.core.lessons import LESSONS

IMPLEMENTED = [lesson for lesson in LESSONS if lesson.implemented]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("lesson", IMPLEMENTED, ids=lambda lesson: lesson.id)
def test_every_lab_meets_the_contract(lesson):
    assert check_lab(importlib.import_module(lesson.lab_module)) == []


def _module(**attrs) -> types.ModuleType:
    module = types.ModuleType("mastery.labs.l99_example", "L99 · an example lab.")
    module.__dict__.update(attrs)
    return module


@dataclass(frozen=True)
class GoodConfig:
    mode: Literal["fast", "slow"] = "fast"
    seed: int = 0


def _run(config, progress):  # the contract looks at the signature only
    raise AssertionError("not called")


def test_a_conforming_module_has_no_problems():
    module = _module(Config=GoodConfig, PRESETS={"tiny": GoodConfig(), "full": GoodConfig("slow")},
                     HEADLINE=("accuracy",), REQUIRES=("titanic",), run=_run)
    assert check_lab(module) == []


def test_each_breach_is_named():
    @dataclass  # not frozen
    class Loose:
        mode: str = "fast"
        table: dict = None  # cannot be set with --set
        seed: int = 0

        def validate(self):
            if self.mode not in ("fast", "slow"):
                raise ConfigError("mode")

    module = _module(Config=Loose, PRESETS={"tiny": Loose()}, HEADLINE=(), REQUIRES=("no-such-asset",), run=_run)
    problems = "\n".join(check_lab(module))
    for expected in ("not frozen", "Config.table", "Config.mode: a hand-written choice check", "'tiny' and 'full'",
                     "HEADLINE", "unregistered assets: no-such-asset"):
        assert expected in problems, expected


def test_a_preset_that_breaks_its_literal_is_reported():
    bad = GoodConfig(mode="medium")  # type: ignore[arg-type]
    module = _module(Config=GoodConfig, PRESETS={"tiny": bad, "full": GoodConfig()}, HEADLINE=("a",), REQUIRES=(),
                     run=_run)
    assert any("PRESETS['tiny'] does not validate: mode='medium'" in p for p in check_lab(module))


def test_literal_fields_are_checked_for_code_built_configs_and_for_set():
    with pytest.raises(ConfigError, match="mode='medium': expected one of fast, slow"):
        check_literals(GoodConfig(mode="medium"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--set mode=medium: expected one of fast, slow"):
        apply_overrides(GoodConfig(), ["mode=medium"])
    assert apply_overrides(GoodConfig(), ["mode=slow"]).mode == "slow"


def test_readme_lab_table_is_generated_from_the_labs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the table links docs/results/ relative to the repository root
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(README_START) + len(README_START): readme.index(README_END)].strip()
    assert block == labs_table(Path("docs/results")), "README table is stale: run 'mastery labs table --write'"
    for lesson in IMPLEMENTED:
        for name in importlib.import_module(lesson.lab_module).HEADLINE:
            assert f"`{name}`" in block


def test_numbers_without_a_range_are_reported():
    @dataclass(frozen=True)
    class Loose:
        epochs: int = 3  # no range: a count that could run for ever
        lr: Annotated[float, Gt(0)] = 0.1  # a lower bound alone is not a range
        sizes: tuple[int, ...] = (1,)  # tuple items count too
        cap: Annotated[int, Interval(ge=1, le=10)] | None = None
        fine: Annotated[float, Interval(ge=0, le=1)] = 0.5
        free: Annotated[float, Unbounded("any offset is meaningful")] = 0.0
        seed: int = 0  # bounded by the generic rule

    module = _module(Config=Loose, PRESETS={"tiny": Loose(), "full": Loose()}, HEADLINE=("a",), REQUIRES=(),
                     run=_run)
    reported = {p.split("Config.")[1].split(":")[0] for p in check_lab(module) if "without a range" in p}
    assert reported == {"epochs", "lr", "sizes"}


def test_a_preset_outside_its_declared_range_is_reported():
    @dataclass(frozen=True)
    class Ranged:
        epochs: Annotated[int, Interval(ge=1, le=10)] = 3
        seed: int = 0

    module = _module(Config=Ranged, PRESETS={"tiny": Ranged(epochs=0), "full": Ranged(seed=-5)}, HEADLINE=("a",),
                     REQUIRES=(), run=_run)
    problems = check_lab(module)
    assert any("PRESETS['tiny'] does not validate: epochs=0: must be >= 1" in p for p in problems), problems
    assert any("PRESETS['full'] does not validate: seed=-5: must be >= 0" in p for p in problems), problems
