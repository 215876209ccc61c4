"""Per-user private folders: CrewAI's storage is never a fixed name in a shared /tmp, and a folder someone
else could have prepared (another owner, loose permissions, a symlink) is refused with one line."""

import os
import stat
import sys
import types

import pytest

from mastery.agents.crew.llm import OFFLINE_ENV, crewai_offline
from mastery.core.errors import ConfigError
from mastery.core.paths import private_folder


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_folder_is_created_user_only_even_with_an_open_umask(tmp_path):
    old = os.umask(0)
    try:
        made = private_folder(tmp_path / "a" / "crew")
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "crew" and _mode(made) == 0o700 and os.lstat(made).st_uid == os.getuid()
    assert private_folder(made) == made  # ours and private: reused


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701, 0o777])
def test_a_folder_open_to_others_is_refused(tmp_path, mode):
    folder = tmp_path / "crew"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(ConfigError, match=r"open to other users .*chmod 700") as info:
        private_folder(folder)
    assert "\n" not in str(info.value)


def test_a_folder_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "crew"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.lstat(folder).st_uid + 4242)  # we are now another user
    with pytest.raises(ConfigError, match=r"belongs to uid \d+, not to this user"):
        private_folder(folder)


def test_a_symlink_or_a_file_is_refused(tmp_path):
    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ConfigError, match="is not a folder"):
        private_folder(tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        private_folder(tmp_path / "file")


@pytest.fixture
def fake_crewai(monkeypatch):
    """No real CrewAI import (seconds); the environment it writes is restored afterwards."""
    monkeypatch.setitem(sys.modules, "crewai", types.ModuleType("crewai"))
    for key in (*OFFLINE_ENV, "CREWAI_STORAGE_DIR"):
        monkeypatch.setenv(key, "")
    monkeypatch.delenv("MASTERY_CREWAI_DIR", raising=False)


def test_crewai_storage_defaults_to_a_private_folder_in_the_users_cache(tmp_path, monkeypatch, fake_crewai):
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    crewai_offline()
    folder = tmp_path / "cache" / "crewai"
    assert os.environ["CREWAI_STORAGE_DIR"] == str(folder) and _mode(folder) == 0o700


def test_crewai_refuses_a_shared_storage_folder(tmp_path, monkeypatch, fake_crewai):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("MASTERY_CREWAI_DIR", str(shared))
    with pytest.raises(ConfigError, match="open to other users"):
        crewai_offline()
    assert os.environ["CREWAI_STORAGE_DIR"] == ""  # never pointed at it
