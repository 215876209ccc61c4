"""Starting Ray (or joining a cluster) the one safe way every command here uses.

Ray's processes talk over gRPC and TCP; anyone who can reach those ports can submit work, which is
running code as you. What a local ``ray.init`` does by default, measured here with ``ss -ltnp`` on Ray
2.60: the GCS, the raylet (two ports), the driver and every worker listen on **all interfaces** (``*``),
and the runtime-env agent on the machine's outward address. :func:`ray_session` therefore:

- makes Ray take the loopback address as the node's address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
  the switch Ray uses for single-machine mode on macOS and Windows; passing ``_node_ip_address=
  "127.0.0.1"`` alone is not enough, as ``ray.init`` replaces a loopback address by the outward one).
  Measured result: every listener (GCS, raylet, driver, workers, runtime-env agent) binds 127.0.0.1;
- turns the dashboard off (``include_dashboard=False``; with it off, no metrics-export or dashboard-agent
  HTTP port is opened either);
- turns on Ray's token authentication with a random token kept in a file only this user can read,
  inside Ray's temporary folder (Ray 2.60 would otherwise write it to ``~/.ray/auth_token``, mode 644);
  a client without the token is refused (checked: a driver with a wrong token gets ``ConnectionError``);
- keeps its temporary folder (sockets, logs, object spill) in ``<tmp>/mastery-ray-<uid>/ray``, inside a
  folder only this user can enter, instead of the shared ``/tmp/ray`` (short, because Unix socket paths
  are limited to 107 bytes; ``TMPDIR`` moves it);
- turns off usage statistics (``RAY_USAGE_STATS_ENABLED=0``): nothing is sent anywhere.

With ``address`` it joins a running cluster instead, whose own settings then apply. Measured for
``ray start --head --node-ip-address 127.0.0.1 --include-dashboard=false``: it binds loopback only when
started with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (otherwise the address is replaced as above), and it
runs *without* token authentication unless ``RAY_AUTH_MODE=token`` is set (it says so in a warning);
its Ray Client server listens on port 10001. The README shows the full recipe.

Ray reads these variables when it is imported and when its processes start, so they are set before the
first ``import ray``; a process that imported Ray earlier gets a warning and Ray's defaults for what it
already read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mastery.core.errors import ConfigError

log = logging.getLogger(__name__)

# Set before Ray is imported (ray_constants reads the first at import) and inherited by its processes.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage statistics sent
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # Tune trials keep the caller's working folder (relative paths work)
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, Tune prints nothing (the new output prints a table anyway)
}
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # node address = 127.0.0.1 (see the docstring)
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def ray_temp_dir() -> Path:
    """``<tmp>/mastery-ray-<uid>``, created user-only (an existing one must be ours and private).

    Ray gets the ``ray`` folder inside it: Ray makes its temporary folder world-writable (mode 777, for
    clusters shared by several users), and the private parent keeps everyone else out all the same.
    """
    from mastery.core.paths import private_folder

    return private_folder(Path(tempfile.gettempdir()) / f"mastery-ray-{os.getuid()}")


def _token_file(folder: Path) -> Path:
    """A random token in ``folder/auth_token`` (mode 600), reused while the file exists."""
    path = folder / "auth_token"
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _prepare_env(address: str | None, folder: Path) -> None:
    env = dict(RAY_ENV)
    if address is None or _is_loopback(address):
        env.update(LOOPBACK_ENV)
    if address is None and not any(k in os.environ for k in AUTH_ENV):
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_token_file(folder)))
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    if changed and "ray" in sys.modules:
        log.warning("ray was imported before its settings were made: %s may not apply", ", ".join(changed))
    os.environ.update(env)


def check_address(address: str) -> None:
    """A HOST:PORT nobody listens on is one line, at once; Ray itself retries it for minutes before giving up."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the "
                          "head with 'ray start --head' first") from None


def init_ray(num_cpus: int | None = None, address: str | None = None) -> Any:
    """Start a private local Ray with ``num_cpus`` CPUs, or join the cluster at ``address``; return ``ray``."""
    if address is not None and num_cpus is not None:
        raise ConfigError("--workers sets the CPUs of a local Ray; a cluster joined with --ray-address has its own")
    folder = ray_temp_dir()
    _prepare_env(address, folder)
    import ray

    if address is None:
        ctx = ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(folder / "ray"), log_to_driver=False,
                       logging_level=logging.WARNING, configure_logging=False)
    else:
        check_address(address)
        try:
            ctx = ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                           configure_logging=False)
        except ConnectionError as exc:
            raise ConfigError(f"--ray-address {address}: cannot join a Ray cluster there ({exc})") from None
    log.info("ray: GCS at %s, temporary folder %s", ctx.address_info.get("gcs_address"), folder)
    return ray


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, address: str | None = None) -> Iterator[Any]:
    """``ray`` for the length of the block: an already running session is used as it is (and left running,
    e.g. a test's shared one); otherwise one is started (or joined) and shut down at the end."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        yield sys.modules["ray"]
        return
    ray = init_ray(num_cpus, address)
    try:
        yield ray
    finally:
        ray.shutdown()
