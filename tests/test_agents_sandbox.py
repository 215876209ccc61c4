"""The python tool's sandbox: limits, refused operations, confinement, output capture."""

import os
import sys

import pytest

from mastery.agents.sandbox import network_namespace_available, run_python
from mastery.agents.tools import call_tool, python_tool
from mastery.agents.types import ToolError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="rlimits and audit hooks as on Linux")


def test_normal_run_prints_and_shows_the_last_expression():
    result = run_python("import math\nprint(math.factorial(10))\nsum(range(5))")
    assert result.stdout.splitlines() == ["3628800", "10"]
    assert result.returncode == 0 and not result.truncated


def test_time_limit_kills_the_process():
    with pytest.raises(ToolError, match="time limit of 1s"):
        run_python("while True:\n    pass", timeout_s=1)


def test_sleeping_child_is_killed_by_the_wall_clock():
    # CPU time does not grow while sleeping: only the parent's timeout stops this one
    with pytest.raises(ToolError, match="time limit"):
        run_python("import time\ntime.sleep(30)", timeout_s=0.5)


def test_memory_limit():
    with pytest.raises(ToolError, match="memory limit of 64 MB"):
        run_python("x = bytearray(512 * 2**20)", memory_mb=64)


@pytest.mark.parametrize("code", [
    "import socket\nsocket.socket()",
    "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1/')",
])
def test_network_is_refused(code):
    with pytest.raises(ToolError, match="blocked operation: network access"):
        run_python(code)


def test_network_namespace_has_no_interfaces_but_loopback_down():
    if not network_namespace_available():
        pytest.skip("unshare -rn is not permitted here; the audit hook alone refuses sockets")
    # /proc/net/dev lists the namespace's interfaces: only lo, and nothing else to reach the world through
    out = run_python("print(open('/proc/net/dev').read())").stdout
    interfaces = {line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line}
    assert interfaces <= {"lo"}


@pytest.mark.parametrize("code", ["import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                                  "import os\nos.fork()"])
def test_processes_are_refused(code):
    with pytest.raises(ToolError, match="blocked operation: starting processes"):
        run_python(code)


def test_writes_are_confined_to_the_temp_folder(tmp_path):
    target = tmp_path / "outside.txt"
    with pytest.raises(ToolError, match="writing outside the working folder"):
        run_python(f"open({str(target)!r}, 'w').write('x')")
    assert not target.exists()
    inside = run_python("open('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())\nimport os\n"
                        "print(os.getcwd())")
    lines = inside.stdout.splitlines()
    assert lines[0] == "kept" and "mastery-sandbox-" in lines[1]
    assert not os.path.exists(lines[1])  # the folder is removed afterwards


def test_file_size_limit():
    with pytest.raises(ToolError, match="file size limit exceeded"):
        run_python("open('big.bin', 'wb').write(b'x' * (3 * 2**20))", max_file_mb=1)


def test_output_is_truncated():
    result = run_python("print('a' * 100000)", max_output_chars=500)
    assert result.truncated and result.stdout.endswith("...[output truncated]")
    assert len(result.stdout) < 600


def test_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("MASTERY_SECRET_TOKEN", "hunter2")
    out = run_python("import os\nprint(sorted(os.environ))").stdout
    assert "MASTERY_SECRET_TOKEN" not in out and "PATH" in out


def test_errors_name_the_exception():
    with pytest.raises(ToolError, match="ZeroDivisionError"):
        run_python("1 / 0")
    with pytest.raises(ToolError, match="no code given"):
        run_python("   ")


def test_python_tool_through_call_tool():
    tool = python_tool(timeout_s=5)
    assert call_tool(tool, {"code": "print(6 * 7)"}) == "42"
    assert call_tool(tool, "x = 1") == "(no output: print() the result)"  # a bare string for the one parameter
    with pytest.raises(ToolError, match="time limit"):
        call_tool(python_tool(timeout_s=0.5), {"code": "while True: pass"})
