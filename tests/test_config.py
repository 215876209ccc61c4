import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import Annotated

import pytest
from annotated_types import Interval, MinLen

from mastery.core.config import (
    SEED_MAX,
    AllowNonFinite,
    Fraction,
    apply_overrides,
    config_to_dict,
    field_types,
    numeric_fields,
    validate_config,
)
from mastery.core.errors import ConfigError
from mastery.core.lessons import LESSONS


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    epochs: int = 3
    name: str = "a"
    use_bn: bool = False
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1")


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(Cfg(), ["lr=0.05", "epochs=7", "name=b", "use_bn=true", "sizes=4,5,6", "limit=9"])
    assert cfg == Cfg(lr=0.05, epochs=7, name="b", use_bn=True, sizes=(4, 5, 6), limit=9)
    assert apply_overrides(cfg, ["limit=none"]).limit is None
    assert config_to_dict(cfg)["sizes"] == [4, 5, 6]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown key; valid keys are: epochs, limit, lr, name, sizes, use_bn"):
        apply_overrides(Cfg(), ["momentum=0.9"])


@pytest.mark.parametrize(
    ("item", "message"),
    [("epochs=2.5", "expected an integer"), ("lr=fast", "expected a number"), ("use_bn=maybe", "boolean"),
     ("epochs", "expected key=value"), ("epochs=0", "epochs must be >= 1")],
)
def test_bad_values_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Cfg(), [item])


# -- declared ranges (annotated-types) and the generic rules ---------------------------------


@dataclass(frozen=True)
class Ranged:
    lr: Annotated[float, Interval(gt=0, le=10)] = 0.1
    epochs: Annotated[int, Interval(ge=1, le=1000)] = 3
    share: Fraction = 0.5
    sizes: Annotated[tuple[Annotated[int, Interval(ge=1, le=64)], ...], MinLen(2)] = (1, 2)
    cap: Annotated[int, Interval(ge=1, le=100)] | None = None
    loss_bar: Annotated[float, AllowNonFinite()] = float("inf")
    plain: float = 1.0  # no declared range: only the generic rules
    name: str = "a"
    seed: int = 0


def test_field_types_are_plain_for_parsing():
    types_ = field_types(Ranged)
    assert types_["lr"] is float and types_["epochs"] is int and types_["sizes"] == tuple[int, ...]
    assert types_["cap"] == int | None


@pytest.mark.parametrize(
    ("item", "message"),
    [("lr=nan", "--set lr=nan: expected a finite number"), ("lr=0", "--set lr=0: must be > 0"),
     ("lr=1e999", "--set lr=1e999: expected a finite number"), ("plain=-inf", "--set plain=-inf: expected a finite"),
     ("epochs=0", "--set epochs=0: must be >= 1"), ("epochs=1000000000", "--set epochs=1000000000: must be <= 1000"),
     ("share=1.5", "--set share=1.5: must be <= 1.0"), ("sizes=3", "--set sizes=3: needs at least 2 item(s)"),
     ("sizes=3,0", "--set sizes=3,0: item 0 must be >= 1"), ("cap=0", "--set cap=0: must be >= 1"),
     ("seed=-1", "--set seed=-1: must be >= 0"), (f"seed={SEED_MAX + 1}", f"must be <= {SEED_MAX}"),
     ("plain=" + "9" * 400, "expected a finite number"), ("epochs=" + "9" * 5000, "expected an integer")],
)
def test_declared_and_generic_ranges_are_checked_at_parse_time(item, message):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Ranged(), [item])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_values_inside_the_ranges_pass():
    cfg = apply_overrides(Ranged(), ["lr=10", "epochs=1000", "share=0", "sizes=64,1", "cap=none", "loss_bar=nan",
                                     f"seed={SEED_MAX}", "plain=-1e300"])
    assert (cfg.lr, cfg.epochs, cfg.share, cfg.sizes, cfg.cap, cfg.seed) == (10.0, 1000, 0.0, (64, 1), None, SEED_MAX)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"lr": float("nan")}, "lr=nan: expected a finite number"), ({"epochs": 0}, "epochs=0: must be >= 1"),
     ({"epochs": True}, "epochs=True: expected an integer"), ({"epochs": 2.0}, "epochs=2.0: expected an integer"),
     ({"lr": "0.1"}, "lr='0.1': expected a number"), ({"sizes": [1, 2]}, "expected a tuple"),
     ({"sizes": (1, 2.5)}, "item 2.5: expected an integer"), ({"seed": -1}, "seed=-1: must be >= 0"),
     ({"name": "a\0b"}, "must not contain a NUL character"), ({"share": None}, "expected a number, got None")],
)
def test_configs_built_in_code_get_the_same_checks(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        validate_config(Ranged(**changes))


def test_error_messages_stay_on_one_line():
    for item in ["epochs=1\n2", "lr=\x1b[31m", "nope\n=1", "sizes=1\n,x", "share=\u2028"]:
        with pytest.raises(ConfigError) as caught:
            apply_overrides(Ranged(), [item])
        assert str(caught.value).isprintable(), str(caught.value)


# -- every lab -------------------------------------------------------------------------------

LABS = [lesson for lesson in LESSONS if lesson.implemented]


@pytest.mark.parametrize("lesson", LABS, ids=lambda lesson: lesson.id)
def test_every_lab_refuses_bad_numbers_in_one_line(lesson):
    module = importlib.import_module(lesson.lab_module)
    preset = module.PRESETS["tiny"]
    fields = numeric_fields(module.Config)
    floats = [n for n, t in field_types(module.Config).items() if t in (float, float | None)]
    assert "seed" in fields
    with pytest.raises(ConfigError, match=r"^--set seed=-1: must be >= 0$"):
        apply_overrides(preset, ["seed=-1"])
    for name in floats:
        for raw in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=rf"^--set {name}={raw}: expected a finite number$"):
                apply_overrides(preset, [f"{name}={raw}"])
    for name, annotation in field_types(module.Config).items():
        if annotation in (int, int | None):  # every count has an upper bound now
            with pytest.raises(ConfigError, match=rf"^--set {name}=1000000000000: must be <= "):
                apply_overrides(preset, [f"{name}=1000000000000"])


def test_a_bad_value_stops_a_real_run_before_it_starts(capsys, tmp_path):
    from mastery.cli import main
    from mastery.core.labs import load_lab, run_lab

    for lab_id, item in [("l04", "seed=-1"), ("l04", "lr=nan"), ("l04", "test_fraction=inf"), ("l02", "c=nan"),
                         ("l02", "seed=-1"), ("l01", "repeats=1000000000"), ("l04", "hidden=0")]:
        code = main(["labs", "run", lab_id, "--quiet", "--out", str(tmp_path), "--set", item])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"mastery: error: --set {item}: "), err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written
    lab = load_lab("l04")
    with pytest.raises(ConfigError, match="seed=-1: must be >= 0"):
        run_lab(lab, dataclasses.replace(lab.config("tiny"), seed=-1), "tiny")


def test_dry_run_prints_the_resolved_config(capsys):
    from mastery.cli import main

    code = main(["labs", "run", "l04", "--dry-run", "--set", "lr=0.05", "--set", "hidden=8"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["lab"] == "l04" and out["preset"] == "tiny"
    assert out["config"]["lr"] == 0.05 and out["config"]["hidden"] == 8 and out["config"]["n_samples"] == 300
