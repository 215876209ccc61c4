"""The settings object: precedence, parsing, errors, masking, `mastery config show`, and no stray env reads."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from mastery.cli import main
from mastery.core.errors import ConfigError
from mastery.core.settings import Settings, describe, get_settings, mask

SRC = Path(__file__).resolve().parents[1] / "src" / "mastery"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MASTERY_* variables and an empty working folder (so no ./.env); returns that folder."""
    for name in list(os.environ):
        if name.upper().startswith("MASTERY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env: Path) -> None:
    s = get_settings()
    assert s.cache == Path("~/.cache/mastery").expanduser()
    assert s.model_store == s.cache / "models"  # derived from the cache, not a fixed path
    assert s.data_dir == () and s.threads is None and s.kb_dir is None and s.llm_api_key is None
    assert (s.llm_backend, s.llm_timeout, s.llm_ctx) == ("embedded", 120.0, 4096)
    assert {r["source"] for r in describe()} == {"default"}


def test_precedence_default_then_env_file_then_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / ".env"
    env_file.write_text("MASTERY_THREADS=2\nMASTERY_CACHE=/from/file\n# a comment\nMASTERY_LLM_MODEL=file-model\n")
    monkeypatch.setenv("MASTERY_THREADS", "3")
    s = get_settings()
    assert s.threads == 3  # environment beats the file
    assert s.cache == Path("/from/file")  # the file beats the default
    assert s.model_store == Path("/from/file/models")
    assert s.kb_dir is None  # neither: the default
    sources = {r["variable"]: r["source"] for r in describe()}
    assert sources["MASTERY_THREADS"] == "environment"
    assert sources["MASTERY_CACHE"] == sources["MASTERY_LLM_MODEL"] == str(env_file.absolute())
    assert sources["MASTERY_KB_DIR"] == "default"


def test_llm_client_settings_come_from_the_env_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mastery.llm.settings import load_settings

    (clean_env / ".env").write_text("MASTERY_LLM_BACKEND=openai\nMASTERY_LLM_BASE_URL=http://127.0.0.1:9/v1\n"
                                    "MASTERY_LLM_MODEL=m\nMASTERY_LLM_API_KEY=k-123\nMASTERY_THREADS=3\n")
    llm = load_settings()
    assert (llm.backend, llm.url, llm.model, llm.api_key, llm.threads) == ("openai", "http://127.0.0.1:9/v1", "m",
                                                                           "k-123", 3)
    assert load_settings(model="override").model == "override"


def test_env_file_variable_points_elsewhere(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("MASTERY_LLM_CTX=1024\n")
    other = clean_env / "conf" / "prod.env"
    other.parent.mkdir()
    other.write_text("MASTERY_LLM_CTX=8192\n")
    monkeypatch.setenv("MASTERY_ENV_FILE", str(other))
    assert get_settings().llm_ctx == 8192
    monkeypatch.setenv("MASTERY_ENV_FILE", str(clean_env / "missing.env"))
    with pytest.raises(ConfigError, match=r"^MASTERY_ENV_FILE names .*missing\.env, which is not a file$"):
        get_settings()


def test_changes_are_seen_on_the_next_call(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_THREADS", "2")
    assert get_settings().threads == 2
    monkeypatch.setenv("MASTERY_THREADS", "4")
    assert get_settings().threads == 4
    monkeypatch.delenv("MASTERY_THREADS")
    (clean_env / ".env").write_text("MASTERY_THREADS=5\n")
    assert get_settings().threads == 5
    (clean_env / ".env").write_text("MASTERY_THREADS=6\n")
    assert get_settings().threads == 6


def test_parsing(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_DATA_DIR", os.pathsep.join(["~/mirror-a", " /mirror/b ", ""]))
    monkeypatch.setenv("MASTERY_LLM_BACKEND", " OpenAI ")
    monkeypatch.setenv("MASTERY_KB_DIR", "  ")  # blank means unset, as it did before
    s = get_settings()
    assert s.data_dir == (Path("~/mirror-a").expanduser(), Path("/mirror/b"))
    assert s.llm_backend == "openai"
    assert s.kb_dir is None


def test_from_env_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_LLM_MODEL", "from-process")
    assert Settings.from_env({}).llm_model is None
    assert Settings.from_env({"MASTERY_LLM_MODEL": "given"}).llm_model == "given"
    assert get_settings().llm_model == "from-process"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MASTERY_THREADS", "many", "MASTERY_THREADS must be an integer, got 'many'"),
    ("MASTERY_THREADS", "0", "MASTERY_THREADS must be >= 1, got '0'"),
    ("MASTERY_LLM_TIMEOUT", "soon", "MASTERY_LLM_TIMEOUT must be a float, got 'soon'"),
    ("MASTERY_LLM_CTX", "4k", "MASTERY_LLM_CTX must be an integer, got '4k'"),
    ("MASTERY_LLM_BACKEND", "gpt", "MASTERY_LLM_BACKEND: LLM backend must be one of embedded, ollama, openai, "
                                   "got 'gpt'"),
])
def test_bad_value_is_one_line_naming_the_variable(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert str(info.value) == message


def test_bad_value_in_env_file_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("MASTERY_LLM_THREADS=two\n")
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert str(info.value) == "MASTERY_LLM_THREADS must be an integer, got 'two'"


def test_mask() -> None:
    assert mask("sk-abcdefgh12") == "****12"
    assert mask("short") == "****"  # too short to show any of it


def _show(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["config", "show", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_config_show_text(clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (clean_env / ".env").write_text("MASTERY_LLM_API_KEY=sk-live-0123456789zz\nMASTERY_KB_DIR=/kb/here\n")
    monkeypatch.setenv("MASTERY_LLM_MODEL", "llama3")
    code, out, _ = _show(capsys)
    assert code == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0] == f".env file: {clean_env.absolute() / '.env'}"
    assert lines["MASTERY_LLM_MODEL"][1:] == ["llama3", "environment"]
    assert lines["MASTERY_KB_DIR"][1:] == ["/kb/here", str(clean_env.absolute() / ".env")]
    assert lines["MASTERY_LLM_API_KEY"][1:] == ["****zz", str(clean_env.absolute() / ".env")]
    assert lines["MASTERY_CHROMA_URL"][1:] == ["(unset)", "default"]
    assert "0123456789" not in out  # the secret itself never appears
    assert set(lines) == {f"MASTERY_{name.upper()}" for name in Settings.model_fields}


def test_config_show_json(clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MASTERY_LLM_API_KEY", "sk-live-0123456789zz")
    monkeypatch.setenv("MASTERY_THREADS", "2")
    code, out, _ = _show(capsys, "--json")
    data = json.loads(out)
    rows = {r["variable"]: r for r in data["settings"]}
    assert code == 0 and data["env_file"] is None
    assert rows["MASTERY_THREADS"]["value"] == "2" and rows["MASTERY_THREADS"]["source"] == "environment"
    assert rows["MASTERY_LLM_API_KEY"]["value"] == "****zz"
    assert rows["MASTERY_MODEL_STORE"]["value"] == str(Path("~/.cache/mastery/models").expanduser())
    assert "0123456789" not in out


def test_config_show_bad_value_exits_2(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MASTERY_THREADS", "lots")
    code, _, err = _show(capsys)
    assert code == 2
    assert err == "mastery: error: MASTERY_THREADS must be an integer, got 'lots'\n"


# -- the guard: nothing but core/settings.py reads a MASTERY_* variable ---------------------------
_READERS = {"get", "getenv", "pop", "setdefault"}


def mastery_env_reads(source: str) -> list[int]:
    """Line numbers where ``source`` looks up a ``MASTERY_*`` name: ``os.getenv(...)``, ``<mapping>.get(...)``,
    ``<mapping>[...]`` or ``... in os.environ``, with the name written out or held in a module constant."""
    tree = ast.parse(source)
    constants = {target.id for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and str(node.value.value).startswith("MASTERY_")
                 for target in node.targets if isinstance(target, ast.Name)}

    def is_name(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.startswith("MASTERY_")
        if isinstance(node, ast.JoinedStr) and node.values:
            return is_name(node.values[0])
        return isinstance(node, ast.Name) and node.id in constants

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ")

    def reads(node: ast.AST) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _READERS:
            return bool(node.args) and is_name(node.args[0])
        if isinstance(node, ast.Subscript):
            return isinstance(node.ctx, ast.Load) and is_name(node.slice)
        if isinstance(node, ast.Compare):
            return is_name(node.left) and any(is_environ(c) for c in node.comparators)
        return False

    return sorted({node.lineno for node in ast.walk(tree) if reads(node)})


def test_guard_catches_each_way_of_reading() -> None:
    snippet = '''import os
NAME = "MASTERY_X"
a = os.environ.get("MASTERY_A")
b = os.getenv("MASTERY_B", "")
c = os.environ["MASTERY_C"]
d = env.get(NAME)
e = "MASTERY_E" in os.environ
os.environ["MASTERY_OK"] = "writes are not reads"
f = os.environ.get("HOME")
'''
    assert mastery_env_reads(snippet) == [3, 4, 5, 6, 7]


def test_no_module_but_settings_reads_mastery_variables() -> None:
    offenders = [f"{path.relative_to(SRC.parent)}:{line}"
                 for path in sorted(SRC.rglob("*.py")) if path != SRC / "core" / "settings.py"
                 for line in mastery_env_reads(path.read_text())]
    assert offenders == [], "read MASTERY_* through mastery.core.settings.get_settings(): " + ", ".join(offenders)


def test_readme_lists_every_setting() -> None:
    readme = (SRC.parents[1] / "README.md").read_text()
    missing = [f"MASTERY_{name.upper()}" for name in Settings.model_fields
               if f"| `MASTERY_{name.upper()}` |" not in readme]
    assert missing == []
