"""The operating-system half of the python tool's sandbox: the bubblewrap (``bwrap``) command line.

:mod:`mastery.agents.sandbox` runs untrusted code; this module decides what that code can see and who it runs as.
Everything here is measured on the host (bubblewrap 0.8, Linux 6.x, running as root and as a normal user):

- **Who.** ``bwrap --uid 65534`` alone is not enough when the caller is root: bubblewrap maps the sandbox uid onto
  the caller's, so the code is kernel uid 0 without capabilities, and RLIMIT_NPROC does not bind uid 0 (20 forks
  went through a limit of 4). As root we therefore create the user namespace ourselves with two mappings,
  0 -> 0 (so bubblewrap can still set up mounts from paths under ``/root``) and 65534 -> 65534, hand it to bwrap
  with ``--userns``, keep only CAP_SETUID/CAP_SETGID, and ``setpriv`` drops to 65534 before Python starts: the code
  is kernel uid 65534 (nobody), with no capabilities, no supplementary groups and ``no_new_privs``. As a normal
  user, bubblewrap's own ``--unshare-user`` keeps the caller's (unprivileged) uid, which is already what we want.
- **Where.** New mount, PID, IPC, UTS, cgroup and network namespaces (the network one holds only a down loopback).
  The root is an empty tmpfs with, read-only: ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links or
  directories), ``/etc/ld.so.cache``, the interpreter's prefix and the environment's site-packages (so numpy and
  the other installed libraries import; the project's source tree is not there, and neither is anything else
  under the home folder or ``/work``). A fresh ``/proc`` of the new PID namespace and a minimal ``/dev``. ``/tmp``
  is a size-limited tmpfs holding the working folder.
- **When it ends.** ``--die-with-parent`` and a PID namespace: when its init process dies, the kernel kills every
  process left in it, ``setsid`` or not; the caller kills that init at the deadline (``--info-fd`` names it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

NOBODY = 65534
WORKDIR = "/tmp/work"  # the code's current folder and $HOME, inside the sandbox's /tmp tmpfs
INSTALL_HINT = "install bubblewrap with `make system` and allow user namespaces"


def default_bwrap() -> str:
    return shutil.which("bwrap") or "/usr/bin/bwrap"


def interpreter() -> str:
    """The real interpreter behind this environment (a venv's ``bin/python`` is a link to it)."""
    return os.path.realpath(sys.executable)


def site_packages() -> list[str]:
    """The environment's library folders that are not part of the interpreter's own prefix."""
    paths = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    prefix = os.path.realpath(sys.base_prefix)
    return sorted(p for p in paths if os.path.isdir(p) and not _under(p, prefix))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _read_only_view() -> list[str]:
    """bwrap arguments for the read-only part of the filesystem."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = f"/{name}"
        if os.path.islink(host):  # merged /usr: recreate the link rather than bind what it points to
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    # The dynamic loader's cache only: no passwd, shadow, hosts, ssl keys or anything else from /etc.
    args += ["--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = os.path.realpath(sys.base_prefix)
    for path in [prefix, *site_packages()]:
        if _under(path, "/usr"):
            continue
        # bwrap creates missing parents as 0700 (root-only): open them up so uid 65534 can reach the bind below
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
        args += ["--ro-bind", path, path]
    return args


@dataclass
class Launch:
    """One sandboxed process: its argv and the file descriptors it needs (closed by :meth:`close`)."""

    argv: list[str]
    pass_fds: list[int]
    info_read: int  # bwrap writes {"child-pid": N} here: the host pid of the namespace's init
    child_pid: int | None = None
    _fds: list[int] = field(default_factory=list)

    def started(self) -> None:
        """Close our copies of the descriptors bwrap inherited (so its info pipe reaches EOF if it dies)."""
        for fd in self.pass_fds[1:]:
            if fd in self._fds:
                os.close(fd)
                self._fds.remove(fd)

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def read_child_pid(self) -> int | None:
        """The namespace init's host pid, once bwrap has written it (non-blocking)."""
        if self.child_pid is None:
            try:
                os.set_blocking(self.info_read, False)
                data = os.read(self.info_read, 4096)
                self.child_pid = int(json.loads(data.decode())["child-pid"])
            except (OSError, ValueError, KeyError):
                return None
        return self.child_pid


def _user_namespace() -> int:
    """As root: a new user namespace mapping 0 -> 0 and 65534 -> 65534 (see the module docstring); returns its fd.

    ``unshare --user`` creates it; we (root in the parent namespace) write the maps, keep a descriptor that keeps
    the namespace alive, and let the helper exit."""
    helper = subprocess.Popen(["unshare", "--user", "sh", "-c", "echo ready; exec cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    try:
        if helper.stdout is None or helper.stdout.readline().strip() != b"ready":
            err = helper.stderr.read().decode(errors="replace").strip() if helper.stderr else ""
            raise OSError(f"unshare --user failed: {err.splitlines()[-1] if err else 'no output'}")
        mapping = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{name}", "w") as fh:
                fh.write(mapping)
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if helper.stdin is not None:
            helper.stdin.close()
        helper.wait()


def build(bwrap: str, python_args: list[str], code_fd: int, *, disk_bytes: int) -> Launch:
    """The bwrap command line that runs ``python -I <python_args>`` with ``main.py`` read from ``code_fd``."""
    info_read, info_write = os.pipe()
    fds = [info_read, info_write]
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    try:
        if os.geteuid() == 0:
            userns = _user_namespace()
            fds.append(userns)
            who = ["--userns", str(userns), "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all", "--"]
        else:
            who = ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
            drop = []
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    argv = [bwrap, *who, *namespaces, "--die-with-parent", "--new-session", "--hostname", "sandbox",
            *_read_only_view(),
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(disk_bytes), "--tmpfs", "/tmp",
            "--perms", "0777", "--dir", WORKDIR,
            "--perms", "0444", "--ro-bind-data", str(code_fd), f"{WORKDIR}/main.py",
            "--chdir", WORKDIR, "--info-fd", str(info_write),
            "--", *drop, interpreter(), "-I", *python_args]
    return Launch(argv=argv, pass_fds=[code_fd, *fds[1:]], info_read=info_read, _fds=fds)
