"""The lab contract (mastery.core.contract) over every lab, without the datasets mirror, and the check itself."""

import importlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from mastery.core.config import apply_overrides, check_literals
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
