"""Folders the project creates in shared places: private to the current user, or refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mastery.core.errors import ConfigError


def private_folder(path: str | Path) -> Path:
    """``path`` as a folder only the current user can enter, or a one-line ``ConfigError``.

    A missing folder is created with one ``mkdir(mode=0o700)`` (atomic: nobody can slip a symlink or their
    own folder in between a check and the creation). An existing one must be a real folder (not a
    symlink), owned by this uid, with no permissions for group or others: a fixed name in a shared place
    such as ``/tmp`` could otherwise be created first by another user, who would then read or plant files.
    """
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)  # the umask can only remove bits
        return path
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} exists and is not a folder (a symlink or a file): refusing to use it")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {info.st_uid}, not to this user ({os.getuid()}): refusing to use "
                          "it; point the setting at a folder of your own")
    if info.st_mode & 0o077:
        raise ConfigError(f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}): run "
                          f"'chmod 700 {path}' or choose another folder")
    return path
