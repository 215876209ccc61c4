"""The python tool's sandbox: normal runs, limits, output capture, and refusing to run without the OS sandbox.

The escape attempts are in tests/test_sandbox_escapes.py."""

import sys

import pytest

from mastery.agents.sandbox import run_python, sandbox_available
from mastery.agents.tools import call_tool, python_tool
from mastery.agents.types import ToolError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap and namespaces are Linux")


def test_normal_run_prints_and_shows_the_last_expression():
    result = run_python("import math\nprint(math.factorial(10))\nsum(range(5))")
    assert result.stdout.splitlines() == ["3628800", "10"]
    assert result.returncode == 0 and not result.truncated and not result.timed_out


def test_installed_libraries_import():
    # the environment's site-packages is part of the read-only view, so the model can use numpy
    out = run_python("import numpy as np\nprint(int(np.arange(10).sum()))").stdout
    assert out.strip() == "45"


def test_time_limit_kills_the_process():
    with pytest.raises(ToolError, match="time limit of 1s"):
        run_python("while True:\n    pass", timeout_s=1)


def test_sleeping_child_is_killed_by_the_wall_clock():
    # CPU time does not grow while sleeping: only the parent's timeout stops this one
    result = run_python("import time\ntime.sleep(30)", timeout_s=0.5, check=False)
    assert result.timed_out and result.wall_s < 10
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
def test_network_is_refused_by_the_hook(code):
    with pytest.raises(ToolError, match="blocked operation: network access"):
        run_python(code)


def test_network_namespace_has_only_loopback():
    # /proc/net/dev lists the namespace's interfaces: only lo, and nothing else to reach the world through
    out = run_python("print(open('/proc/net/dev').read())").stdout
    interfaces = {line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line}
    assert interfaces == {"lo"}


@pytest.mark.parametrize("code", ["import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                                  "import os\nos.fork()"])
def test_processes_are_refused(code):
    with pytest.raises(ToolError, match="blocked operation: starting processes"):
        run_python(code)


def test_writes_stay_in_a_private_folder_that_does_not_outlive_the_run():
    first = run_python("open('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())\nimport os\n"
                       "print(os.getcwd(), sorted(os.listdir('.')))")
    assert first.stdout.splitlines() == ["kept", "/tmp/work ['main.py', 'notes.txt']"]
    second = run_python("import os\nprint(sorted(os.listdir('.')))")
    assert second.stdout.strip() == "['main.py']"  # each run gets a fresh tmpfs


def test_dir_fd_writes_inside_the_folder_still_work():
    # the hook resolves dir_fd against the folder it names rather than refusing every dir_fd
    code = ("import os\nos.mkdir('sub')\nd = os.open('sub', os.O_RDONLY)\nos.mkdir('a', dir_fd=d)\n"
            "os.close(os.open('f', os.O_CREAT | os.O_WRONLY, dir_fd=d))\n"
            "os.rename('f', 'g', src_dir_fd=d, dst_dir_fd=d)\n"
            "sorted(os.listdir('sub'))")
    assert run_python(code).stdout.strip() == "['a', 'g']"


def test_writes_outside_the_folder_are_refused_by_the_hook():
    with pytest.raises(ToolError, match="writing outside the working folder"):
        run_python("open('/tmp/elsewhere.txt', 'w').write('x')")


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


# -- refusing to run without the OS sandbox -------------------------------------------------------
def test_refuses_when_bubblewrap_is_missing(tmp_path):
    missing = str(tmp_path / "no-such-bwrap")
    assert not sandbox_available(missing)
    with pytest.raises(ToolError, match=r"refusing to run code without the OS sandbox: bubblewrap is not installed"
                                        r".*make system"):
        run_python("print(1)", bwrap=missing)


def test_refuses_when_namespaces_cannot_be_created(tmp_path):
    # A bwrap that fails the way it does on a kernel without unprivileged user namespaces; were there a weak
    # fallback, the code would run and print instead of raising.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ToolError, match=r"without the OS sandbox: bwrap: No permissions to create a new namespace; "
                                        r"install bubblewrap with `make system`"):
        run_python("print(1)", bwrap=str(fake))
    assert not sandbox_available(str(fake))
