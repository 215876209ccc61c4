"""Data versioning with git + DVC, driven through the real command-line tools.

Git versions small text; DVC versions the data beside it. `dvc add data.csv` moves the bytes into a
content-addressed cache (`.dvc/cache/files/md5/ab/cdef...`) and leaves a small `data.csv.dvc` file holding
the md5, which git commits. Checking out an old commit with git restores the old `.dvc` file, not the data:
`dvc checkout` then links the workspace file back from the cache. `dvc push` copies the cache to a remote
(here a local folder), so a fresh clone restores any version with `dvc pull`.

Pipelines: `dvc.yaml` lists stages with their command, dependencies, parameters (keys of params.yaml) and
outputs; `dvc repro` hashes all of them, compares with `dvc.lock`, and reruns only stages whose inputs
changed, plus everything downstream of a rerun stage whose outputs changed.

Every call goes through a subprocess (`python -m dvc`, `git`), as a user would type it; analytics are off.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mastery.assets.store import sha256_file
from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

__all__ = ["DvcRepo", "Repro", "VersioningError", "rewrite_csv_column", "sha256_file"]

_RAN = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


class VersioningError(MasteryError):
    """A git or dvc command that failed; the message holds the command and the end of its output."""


@dataclass(frozen=True)
class Repro:
    ran: tuple[str, ...]  # stages whose command ran, in order
    skipped: tuple[str, ...]  # stages dvc found unchanged
    seconds: float
    output: str


@dataclass
class DvcRepo:
    """A git repository with DVC initialised in it, and a local folder as its default DVC remote."""

    root: Path
    timings: dict[str, list[float]] = field(default_factory=dict)  # command name -> seconds of each call

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DVC_NO_ANALYTICS": "1",  # no usage report leaves the machine
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            # DVC keeps a per-repository index under /var/tmp/dvc by default: keep it inside the repository.
            "DVC_SITE_CACHE_DIR": str(self.root.resolve() / ".dvc" / "tmp" / "site-cache"),
            # Stage commands call `python -m mastery...`: the interpreter running this code comes first on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        })
        return env

    def _run(self, cmd: list[str], label: str, timeout: float) -> str:
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=self.root, env=self._env(), capture_output=True, text=True, timeout=timeout,
                             check=False)
        self.timings.setdefault(label, []).append(time.perf_counter() - start)
        text = out.stdout + out.stderr
        if out.returncode != 0:
            shown = " ".join(cmd[2:] if cmd[0] == sys.executable else cmd)
            raise VersioningError(f"`{shown}` failed (exit {out.returncode}): {text.strip()[-400:]}")
        return text

    def git(self, *args: str, timeout: float = 120) -> str:
        return self._run(["git", *args], f"git {args[0]}", timeout)

    def dvc(self, *args: str, timeout: float = 600) -> str:
        return self._run([sys.executable, "-m", "dvc", *args], f"dvc {args[0]}", timeout)

    @classmethod
    def create(cls, root: Path, remote: Path) -> DvcRepo:
        """`git init` + `dvc init` in an empty folder, a local identity, analytics off, `remote` as default."""
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise VersioningError(f"{root} is not empty: a new repository needs an empty folder")
        repo = cls(root)
        repo.git("init", "-q", "-b", "main")
        repo.git("config", "user.name", "mastery lab")
        repo.git("config", "user.email", "lab@mastery.invalid")
        repo.git("config", "commit.gpgsign", "false")
        repo.dvc("init", "-q")
        repo.dvc("config", "core.analytics", "false")
        remote.mkdir(parents=True, exist_ok=True)
        repo.dvc("remote", "add", "-d", "local", str(remote))
        repo.commit("dvc init, local remote", ".dvc", ".dvcignore")
        return repo

    def commit(self, message: str, *paths: str) -> str:
        """Stage the paths, commit, and return the commit's sha."""
        self.git("add", *paths)
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def add(self, path: str) -> str:
        """`dvc add path` and return the md5 DVC recorded in path.dvc."""
        self.dvc("add", "-q", path)
        return self.tracked_md5(path)

    def tracked_md5(self, path: str) -> str:
        import yaml

        meta = yaml.safe_load((self.root / f"{path}.dvc").read_text())
        return str(meta["outs"][0]["md5"])

    def switch(self, rev: str) -> float:
        """`git checkout rev` then `dvc checkout`: the data of that commit in the workspace. Seconds of the latter."""
        self.git("checkout", "-q", rev)
        start = time.perf_counter()
        self.dvc("checkout", "-q")
        return time.perf_counter() - start

    def status(self) -> dict[str, Any]:
        import json

        return json.loads(self.dvc("status", "--json") or "{}")

    def repro(self) -> Repro:
        start = time.perf_counter()
        out = self.dvc("repro")
        return Repro(tuple(_RAN.findall(out)), tuple(_SKIPPED.findall(out)), time.perf_counter() - start, out)

    def metrics(self) -> dict[str, float]:
        """`dvc metrics show --json`, flattened to {file:key: value} for the workspace."""
        import json

        shown = json.loads(self.dvc("metrics", "show", "--json"))
        flat: dict[str, float] = {}
        for rev in shown.values():
            for name, entry in (rev.get("data") or {}).items():
                for key, value in (entry.get("data") or {}).items():
                    flat[f"{name}:{key}"] = float(value)
        return flat

    def remote_objects(self, remote: Path) -> int:
        """Files in the remote's content-addressed store."""
        return sum(1 for p in remote.rglob("*") if p.is_file())


def rewrite_csv_column(src: Path, dst: Path, column: str, old: str, new: str) -> int:
    """Copy a CSV, replacing `old` by `new` in one column; return how many rows changed. Streams: any size."""
    changed = 0
    with src.open(newline="", encoding="utf-8") as fin, dst.open("w", newline="", encoding="utf-8") as fout:
        reader = csv.DictReader(fin)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise VersioningError(f"{src} has no column '{column}'")
        writer = csv.DictWriter(fout, fieldnames=reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        for row in reader:
            if old in row[column]:
                row[column] = row[column].replace(old, new)
                changed += 1
            writer.writerow(row)
    return changed
