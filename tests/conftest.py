"""Shared test set-up: the datasets mirror, a private cache, and no network beyond loopback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_MIRROR = REPO.parent / "shared" / "data"

if not os.environ.get("MASTERY_DATA_DIR") and _DEFAULT_MIRROR.is_dir():
    os.environ["MASTERY_DATA_DIR"] = str(_DEFAULT_MIRROR)
# Tests write to a private cache (below), but models already pulled into the user's cache (the
# GGUF LLM, which `.ci/run` pulls first) are read from there as one more read-only mirror.
_USER_CACHE = Path(os.environ.get("MASTERY_CACHE", "~/.cache/mastery")).expanduser()
_MIRRORS = [str(Path(p).expanduser().resolve()) for p in os.environ.get("MASTERY_DATA_DIR", "").split(os.pathsep) if p]
if _USER_CACHE.is_dir():
    _MIRRORS.append(str(_USER_CACHE.resolve()))
# Absolute paths: some tests chdir into a temporary folder.
os.environ["MASTERY_DATA_DIR"] = os.pathsep.join(_MIRRORS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# OpenMP worker threads that spin while idle make BLAS/XGBoost fits 10-100x slower when pytest
# shares the cores with anything else; passive waiting gives the same results without the spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_real_connect = socket.socket.connect
_LOOPBACK = ("127.", "::1", "localhost")


class NetworkBlocked(RuntimeError):
    pass


def _guarded_connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    host = str(address[0]) if isinstance(address, tuple) else str(address)
    if not host.startswith(_LOOPBACK):
        raise NetworkBlocked(f"test tried to reach {address}; tests must not use the network")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _restore_environ() -> object:
    """Each test sees the environment as the session started it: a library that sets variables for its own
    process (CrewAI's opt-outs, say) must not change what later tests measure."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Verification stamps and fetched files go to a per-session folder, never the user's cache.
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def have_mirror() -> bool:
    """The shared datasets are reachable: one of the MASTERY_DATA_DIR folders holds the IMDb file."""
    folders = [Path(p) for p in os.environ.get("MASTERY_DATA_DIR", "").split(os.pathsep) if p]
    return any((folder / "imdb_aclimdb.csv.gz").is_file() for folder in folders)


needs_mirror = pytest.mark.skipif(not have_mirror(), reason="needs MASTERY_DATA_DIR with the shared datasets")
