"""Escape attempts against the python tool's sandbox: each must fail, shown by evidence on the host.

Most run twice: with the in-process audit hook (what the tool does) and without it (``audit_hook=False``), which
stands for an attacker who got around the hook: the operating system must hold on its own. Markers the code
would print are computed (``6 * 7``), so a traceback quoting the source cannot fake a hit."""

import ast
import hashlib
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import mastery
from mastery.agents import sandbox_bwrap
from mastery.agents.sandbox import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap and namespaces are Linux")

MARKER = "ESCAPED-42"
SHELL_MARKER = "echo ESCAPED-$((6*7))"
PROJECT = Path(mastery.__file__).resolve().parents[2]
STDLIB = Path(os.__file__).resolve().parent  # host folder that is in the sandbox's view, read-only


@pytest.fixture(params=[True, False], ids=["hook", "no-hook"])
def hook(request):
    return request.param


def run(code, **kw):
    kw.setdefault("timeout_s", 10)
    return run_python(code, check=False, **kw)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- who the code is -----------------------------------------------------------------------------
def test_code_runs_as_an_unprivileged_host_user(hook):
    # The uid inside is only a name: what the kernel checks is the host uid it maps to. bwrap --uid 65534 alone,
    # run by root, maps it to host uid 0, and then RLIMIT_NPROC does not bind (the old sandbox's escape ran as 0).
    code = ("import os\nprint(os.getuid())\nprint(open('/proc/self/uid_map').read().strip())\n"
            "print([l for l in open('/proc/self/status').read().splitlines() if l.startswith(('CapEff', 'CapPrm', "
            "'NoNewPrivs'))])\nprint(os.getgroups())")
    lines = run(code, audit_hook=hook).stdout.splitlines()
    uid = int(lines[0])
    assert uid != 0
    if os.geteuid() == 0:  # one user namespace under the host's: its map names the host uid
        host_uids = [int(out) + uid - int(inside) for inside, out, count in (line.split() for line in lines[1:-2])
                     if int(inside) <= uid < int(inside) + int(count)]
        assert host_uids == [sandbox_bwrap.NOBODY]
    # (run by a normal user, bwrap nests a second namespace; the host uid is then the caller's own, never 0)
    assert lines[-2] == "['CapPrm:\\t0000000000000000', 'CapEff:\\t0000000000000000', 'NoNewPrivs:\\t1']"
    assert lines[-1] == "[]"


# -- starting processes ---------------------------------------------------------------------------
FORK_EXEC = f"""
import _posixsubprocess, os
r, w = os.pipe()
pid = _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'{SHELL_MARKER}'], [b'/bin/sh'], True, (w,), None, None,
                                 -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)
os.waitpid(pid, 0)
"""
STARTERS = {
    "fork_exec": FORK_EXEC,
    "subprocess": f"import subprocess\nsubprocess.run(['/bin/sh', '-c', '{SHELL_MARKER}'])",
    "os.system": f"import os\nos.system('{SHELL_MARKER}')",
    "os.fork": "import os\nif os.fork() == 0:\n    print('ESCAPED-' + str(6 * 7), flush=True)\n    os._exit(0)\n"
               "os.wait()",
    "ctypes": f"import ctypes\nctypes.CDLL(None).system(b'{SHELL_MARKER}')",
    "posix_spawn": f"import os\nos.waitpid(os.posix_spawn('/bin/sh', ['sh', '-c', '{SHELL_MARKER}'], {{}}), 0)",
}


@pytest.mark.parametrize("name", list(STARTERS))
def test_no_process_can_be_started(name, hook):
    # With the hook: refused in Python. Without it: RLIMIT_NPROC (binding, since the uid is not root) refuses the
    # fork in the kernel; the old sandbox let _posixsubprocess.fork_exec start /bin/sh as uid 0.
    result = run(STARTERS[name], audit_hook=hook)
    assert MARKER not in result.stdout + result.stderr
    if hook:
        assert "sandbox: starting processes is not allowed" in result.stderr or "sandbox: ctypes" in result.stderr
    elif name in ("os.system", "ctypes"):  # glibc's system() reports a failed spawn as exit status 127
        assert result.stdout.strip() == str(127 << 8)
    else:
        assert "Resource temporarily unavailable" in result.stderr


def test_a_shell_that_does_start_is_confined(tmp_path):
    # Grant processes and drop the hook: the shell runs, as nobody, and still reaches nothing of the host.
    secret = tmp_path / "secret.txt"
    secret.write_text(f"host-secret-{uuid.uuid4().hex}")
    escaped = [STDLIB / f"escape-{uuid.uuid4().hex}", Path("/usr") / f"escape-{uuid.uuid4().hex}",
               tmp_path / "escaped.txt"]
    script = "; ".join(["id -u", "cat /etc/shadow", "ls -A /root", f"cat {PROJECT / 'pyproject.toml'}",
                        f"cat {secret}", *(f"echo x > {p}" for p in escaped), "cat /proc/*/environ"])
    result = run(f"import subprocess\nsubprocess.run(['/bin/sh', '-c', {script!r}])", audit_hook=False,
                 max_processes=4)
    lines = result.stdout.splitlines()
    assert lines and lines[0].isdigit() and lines[0] != "0"  # the old sandbox's shell ran as uid 0
    if os.geteuid() == 0:
        assert lines[0] == str(sandbox_bwrap.NOBODY)
    assert secret.read_text() not in result.stdout and "[project]" not in result.stdout
    assert "root:" not in result.stdout  # /etc/shadow's first line on the host
    assert not any(p.exists() for p in escaped)


# -- reading the host -----------------------------------------------------------------------------
def test_host_files_are_not_readable(tmp_path, hook):
    secret = tmp_path / "secret.txt"
    secret.write_text(f"host-secret-{uuid.uuid4().hex}")
    targets = [Path("/etc/shadow"), Path("/etc/passwd"), PROJECT / "pyproject.toml", secret,
               Path.home() / ".bashrc", Path.home() / ".profile"]
    targets = [t for t in targets if t.is_file()]
    assert len(targets) >= 3  # evidence: the host has them (the project's pyproject.toml and the secret at least)
    code = (f"for p in {[str(t) for t in targets]!r}:\n"
            "    try:\n        print(p, 'READ', open(p).read())\n"
            "    except OSError as exc:\n        print(p, 'ERR', type(exc).__name__)\n")
    out = run(code, audit_hook=hook).stdout
    assert out.count(" ERR ") == len(targets) and " READ " not in out
    assert secret.read_text() not in out


def test_home_and_project_folders_are_not_listed():
    folders = [Path.home(), PROJECT, PROJECT.parent]
    binds = [Path(p) for p in [sys.base_prefix, *sandbox_bwrap.site_packages()]]
    code = (f"import os\nfor d in {[str(f) for f in folders]!r}:\n"
            "    try:\n        print(sorted(os.listdir(d)))\n    except OSError as exc:\n        print([])\n")
    listings = [set(ast.literal_eval(line)) for line in run(code).stdout.splitlines()]
    for folder, listed in zip(folders, listings, strict=True):
        # only the folders leading to the interpreter and site-packages binds may appear, never their siblings
        allowed = {b.relative_to(folder).parts[0] for b in binds if folder in b.parents}
        assert listed <= allowed, (folder, listed)
        assert set(os.listdir(folder)) - allowed, f"evidence: the host's {folder} holds more than the binds"


def test_proc_shows_no_host_process(hook):
    # A host process with a secret in its environment, as the parent's was in the old sandbox
    secret = f"proc-secret-{uuid.uuid4().hex}"
    helper = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={"SANDBOX_TEST_SECRET": secret, "PATH": "/usr/bin:/bin"})
    try:
        assert helper.stdout.readline() == b"up\n"  # started, so its /proc entry shows the environment
        with open(f"/proc/{helper.pid}/environ", "rb") as fh:
            assert secret.encode() in fh.read()  # evidence: the host can read it
        code = (f"import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint('pids', pids)\n"
                f"for p in [*pids, {helper.pid}, {os.getpid()}, {os.getppid()}]:\n"
                "    for f in ('environ', 'cmdline'):\n"
                "        try:\n            print(p, f, open(f'/proc/{p}/{f}', 'rb').read())\n"
                "        except OSError as exc:\n            print(p, f, type(exc).__name__)\n")
        out = run(code, audit_hook=hook).stdout
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stdout.close()
    assert secret not in out
    pids = ast.literal_eval(out.splitlines()[0].split(" ", 1)[1])
    assert len(pids) <= 2  # the namespace's own init and the code: nothing of the host's


# -- writing the host -----------------------------------------------------------------------------
WRITES = {
    "open": "open(TARGET, 'w').write('x')",
    "dir_fd open": "fd = os.open(DIR, os.O_RDONLY)\nos.close(os.open(NAME, os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
    "dir_fd mkdir": "fd = os.open(DIR, os.O_RDONLY)\nos.mkdir(NAME, dir_fd=fd)",
    "dir_fd rename": "open('a', 'w').close()\nfd = os.open(DIR, os.O_RDONLY)\nos.rename('a', NAME, dst_dir_fd=fd)",
    "/proc/self/fd": "fd = os.open(DIR, os.O_RDONLY)\nopen(f'/proc/self/fd/{fd}/' + NAME, 'w').write('x')",
    "symlink": "os.symlink(TARGET, 'link')\nopen('link', 'w').write('x')",
    "reopen read-only fd for writing": "fd = os.open(VICTIM, os.O_RDONLY)\nopen(f'/proc/self/fd/{fd}', 'a').write('x')",
    "hard link": "os.link(VICTIM, 'hard')\nopen('hard', 'a').write('x')",
    "symlink to victim": "os.symlink(VICTIM, 'link')\nopen('link', 'a').write('x')",
}


@pytest.mark.parametrize("name", list(WRITES))
@pytest.mark.parametrize("where", ["in view", "outside view"])
def test_host_files_cannot_be_written(name, where, hook, tmp_path):
    folder = STDLIB if where == "in view" else tmp_path  # read-only bind vs. a host folder the sandbox cannot see
    victim = STDLIB / "os.py" if where == "in view" else tmp_path / "victim.txt"
    if where == "outside view":
        victim.write_text("unchanged")
    before = sha256(victim)
    name_ = f"escape-{uuid.uuid4().hex}"
    target = folder / name_
    prelude = f"import os\nDIR, NAME, TARGET, VICTIM = {str(folder)!r}, {name_!r}, {str(target)!r}, {str(victim)!r}\n"
    try:
        result = run(prelude + WRITES[name], audit_hook=hook)
        assert result.returncode != 0 and ("Error" in result.stderr)
        if hook and where == "in view":  # the hook is the first to refuse, dir_fd and /proc/self/fd included
            assert "sandbox: " in result.stderr.splitlines()[-1]
        assert not target.exists()
        assert sha256(victim) == before
    finally:
        if target.exists():
            target.unlink() if target.is_file() else target.rmdir()


# -- resources ------------------------------------------------------------------------------------
def test_fork_bomb_is_bounded():
    code = """
import os, signal
me = os.getpid()
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
if os.getpid() != me:
    signal.pause()  # every copy forks until the limit, then waits to be killed with the namespace
print(err, len([p for p in os.listdir('/proc') if p.isdigit()]))
"""
    result = run(code, audit_hook=False, max_processes=5, timeout_s=20)
    errno_, visible = (int(x) for x in result.stdout.split())
    assert errno_ == 11 and not result.timed_out  # EAGAIN: RLIMIT_NPROC
    assert visible <= 5 + 2  # the code, its 5 children, the namespace's init


def test_filling_the_disk_fails_in_the_sandbox_only(hook):
    code = """
import os
written = 0
try:
    for i in range(100):
        with open(f'fill{i}', 'wb') as fh:
            fh.write(b'x' * 2**20)
        written += 1
except OSError as exc:
    print('stopped', exc.errno, written)
try:
    open('/dev/shm/x', 'wb').write(b'x')
except OSError as exc:
    print('shm', exc.errno)
"""
    out = run(code, audit_hook=hook, max_disk_mb=4).stdout.split()
    assert out[:2] == ["stopped", "28"] and int(out[2]) <= 4  # ENOSPC from the 4 MB tmpfs, not the host's disk
    assert out[3:] == ["shm", "None" if hook else "13"]  # /dev/shm is not writable (the hook refuses it first)


@pytest.mark.parametrize("main", ["hangs", "exits"])
def test_setsid_daemon_dies_with_the_run(main):
    # A double-forked, setsid daemon that re-executes itself under a name we can find on the host
    tag = f"sandbox-daemon-{uuid.uuid4().hex}"
    code = f"""
import os, sys
r, w = os.pipe()
os.set_inheritable(w, True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c',
                 'import os, sys, time; os.write(int(sys.argv[1]), b"up"); time.sleep(600)', str(w), {tag!r}])
    os._exit(0)
os.close(w)
assert os.read(r, 2) == b'up'
print('daemon running', flush=True)
if {main!r} == 'hangs':
    import time
    time.sleep(600)
"""
    result = run(code, audit_hook=False, max_processes=3, timeout_s=5 if main == "exits" else 2)
    assert "daemon running" in result.stdout  # evidence: it was alive inside
    assert result.timed_out == (main == "hangs")
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                survivors.append(pid)
        except OSError:
            pass
    assert survivors == []


def test_no_connection_reaches_a_host_listener(hook):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (f"import socket\nfor host in ('127.0.0.1', 'localhost', '::1'):\n"
            f"    try:\n        socket.create_connection((host, {port}), timeout=2)\n"
            "        print('ESCAPED-' + str(6 * 7))\n"
            "    except Exception as exc:\n        print(host, type(exc).__name__, exc)\n")
    try:
        result = run(code, audit_hook=hook)
        assert MARKER not in result.stdout and result.stdout.count("\n") == 3
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
