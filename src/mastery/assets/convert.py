"""Turning upstream files into the registry's files, deterministically.

Several registered files are not the upstream download itself but a repacking of it: a gzip of a raw
CSV, a tar of a few repository files, a JSON list as JSON lines, the aclImdb folder tree as one CSV,
the MNIST idx files as one ``.npz``. Each conversion here is a pure function of the upstream bytes
(fixed mtimes, sorted members, fixed compression levels), so a machine that fetches the upstream files
rebuilds the registry's file and the store can check it against the catalog's sha256 before it is
moved into place.

Two outputs cannot always be rebuilt byte for byte, and the catalog says so with a second digest
over the content (``content_digest = "<method>:<sha256>"``, see :func:`content_digest`):

- GNU ``gzip -9 -n`` wrote some mirror files; its deflate differs from zlib's, so without a ``gzip``
  binary the file is written with zlib and checked by ``gunzip:`` (the digest of the uncompressed bytes).
- ``np.savez_compressed`` stamps each zip member with the time of writing, so the mirror's ``mnist.npz``
  has no reproducible bytes; :func:`write_npz` writes fixed dates, and ``npz:`` digests the arrays.

``jsonl:`` digests JSON records whatever the order of their keys (the ATT&CK bundle's objects against
the per-object files the mirror was built from).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mastery.core.errors import AssetError

log = logging.getLogger(__name__)

# Zip's earliest representable date: the fixed timestamp of every member :func:`write_npz` writes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# -- small deterministic writers -------------------------------------------------------------
def gzip_bytes_to(data_files: list[Path], out: Path, member_name: str) -> None:
    """zlib level 9, mtime 0, the original name ``member_name`` in the header (Python's gzip writer)."""
    with open(out, "wb") as raw, gzip.GzipFile(filename=member_name, mode="wb", compresslevel=9,
                                               fileobj=raw, mtime=0) as gz:
        for path in data_files:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, gz, 1 << 20)


def _gnu_gzip(src: Path, out: Path) -> bool:
    """``gzip -9 -n`` (no name, mtime 0) when the binary exists; False when it does not."""
    binary = shutil.which("gzip")
    if binary is None:
        return False
    with open(src, "rb") as fh, open(out, "wb") as dst:
        subprocess.run([binary, "-9", "-n", "-c"], stdin=fh, stdout=dst, check=True)
    return True


def tar_gz(files: list[tuple[str, Path]], out: Path) -> None:
    """A tar.gz of ``(member name, file)`` pairs: sorted by name, regular files only, mode 0644,
    owner 0/0 without names, mtime 0; gzip as :func:`gzip_bytes_to` with the tar's name in the header."""
    member_name = out.name.removesuffix(".gz")
    with open(out, "wb") as raw, \
            gzip.GzipFile(filename=member_name, mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> None:
    """Like ``np.savez_compressed``, but every member carries the same fixed date, so equal arrays
    give equal bytes."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)


# -- content digests -------------------------------------------------------------------------
def npz_digest(path: Path) -> str:
    """sha256 over the arrays of an ``.npz``: for each name in sorted order, the name, dtype, shape and
    the C-order bytes. Independent of zip timestamps and compression."""
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as d:
        for name in sorted(d.files):
            a = np.ascontiguousarray(d[name])
            h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def gunzip_digest(path: Path) -> str:
    """sha256 of a gzip file's uncompressed bytes."""
    h = hashlib.sha256()
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def jsonl_digest(path: Path) -> str:
    """sha256 over a gzipped JSON-lines file's records in canonical form (sorted keys, compact), in file
    order: the same records with their keys in another order give the same digest."""
    h = hashlib.sha256()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                h.update(json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
                h.update(b"\n")
    return h.hexdigest()


_DIGESTS: dict[str, Callable[[Path], str]] = {"gunzip": gunzip_digest, "npz": npz_digest, "jsonl": jsonl_digest}


def content_digest(path: Path, spec: str) -> str:
    """The ``<method>`` digest of ``path`` named by a catalog ``content_digest`` spec ``<method>:<sha256>``."""
    method = spec.partition(":")[0]
    if method not in _DIGESTS:
        raise AssetError(f"unknown content digest method '{method}' (known: {', '.join(_DIGESTS)})")
    try:
        return _DIGESTS[method](path)
    except (OSError, ValueError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise AssetError(f"cannot read {path} to digest its content: {exc}") from exc


# -- the conversions -------------------------------------------------------------------------
def _files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


def _single(src: Path) -> Path:
    files = _files(src)
    if len(files) != 1:
        raise AssetError(f"expected one upstream file, found {len(files)} in {src}")
    return files[0]


def to_gzip(src: Path, out: Path) -> None:
    """One upstream file, gzipped as ``gzip -9 -n`` does (zlib's deflate without the binary)."""
    path = _single(src)
    if not _gnu_gzip(path, out):
        log.info("no gzip binary: writing %s with zlib (checked by its content digest)", out.name)
        with open(path, "rb") as fh, open(out, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
            shutil.copyfileobj(fh, gz, 1 << 20)


# Repository metadata, not data: left out of the tar of a repository's files.
_REPO_METADATA = (".git", ".github", ".gitignore", ".gitattributes")


def to_tar(src: Path, out: Path) -> None:
    """Every upstream file under its path relative to ``src`` (the first folder names the archive's top
    folder), repository metadata left out."""
    files = [(p.relative_to(src).as_posix(), p) for p in _files(src)
             if not any(part in _REPO_METADATA for part in p.relative_to(src).parts)]
    if not files:
        raise AssetError(f"no upstream files to pack in {src}")
    tar_gz(files, out)


def to_jsonl(src: Path, out: Path) -> None:
    """A JSON list of records as JSON lines (``json.dumps`` defaults, ``ensure_ascii=False``, order kept)."""
    records = _read_json(_single(src))
    if not isinstance(records, list):
        raise AssetError("expected a JSON list of records")
    _write_jsonl_gz((json.dumps(r, ensure_ascii=False) for r in records), out, out.name.removesuffix(".gz"))


def stix_to_jsonl(src: Path, out: Path) -> None:
    """An ATT&CK STIX bundle as one compact JSON object per line, in the order of the per-object folders
    of mitre/cti (type, then id); the bundle's own collection object is not one of those files."""
    bundle = _read_json(_single(src))
    objects = [o for o in bundle.get("objects", []) if o.get("type") != "x-mitre-collection"]
    if not objects:
        raise AssetError("the STIX bundle holds no objects")
    objects.sort(key=lambda o: (o["type"], o["id"]))
    lines = (json.dumps(o, ensure_ascii=False, separators=(",", ":")) for o in objects)
    _write_jsonl_gz(lines, out, "enterprise_attack.jsonl")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AssetError(f"{path.name} is not valid JSON: {exc}") from exc


def _write_jsonl_gz(lines: Iterator[str], out: Path, member_name: str) -> None:
    with open(out, "wb") as raw, gzip.GzipFile(filename=member_name, mode="wb", compresslevel=9,
                                               fileobj=raw, mtime=0) as gz:
        for line in lines:
            gz.write(line.encode("utf-8") + b"\n")


def aclimdb_to_csv(src: Path, out: Path) -> None:
    """aclImdb v1 (the official tar.gz) as one CSV: split, label (0 neg, 1 pos), id and rating from the
    file name ``<id>_<rating>.txt``, and the review text unchanged; train first, then by label and id."""
    import pandas as pd

    rows = []
    with tarfile.open(_single(src), "r:*") as tar:
        for member in tar:
            parts = member.name.split("/")  # aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt
            if not (member.isfile() and len(parts) == 4 and parts[1] in ("train", "test")
                    and parts[2] in ("pos", "neg") and parts[3].endswith(".txt")):
                continue
            review_id, _, rating = parts[3].removesuffix(".txt").partition("_")
            text = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            rows.append((parts[1], int(parts[2] == "pos"), int(review_id), int(rating), text))
    if not rows:
        raise AssetError("the archive holds no aclImdb/{train,test}/{pos,neg}/*.txt reviews")
    df = pd.DataFrame(rows, columns=["split", "label", "id", "rating", "text"])
    df = df.assign(_test=df["split"] == "test").sort_values(["_test", "label", "id"]).drop(columns="_test")
    # pandas' own gzip writer (it feeds zlib in its chunks) reproduces the registry's bytes; the header
    # names the file it was written as.
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        written = Path(tmp) / "imdb.csv.gz"
        df.to_csv(written, index=False, lineterminator="\n",
                  compression={"method": "gzip", "compresslevel": 9, "mtime": 0})
        os.replace(written, out)


_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped or not): magic 0x0000<dtype><ndim>, big-endian dims, then the data."""
    with open(path, "rb") as fh:
        opener = gzip.open if fh.read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise AssetError(f"{path.name} is not an unsigned-byte idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise AssetError(f"{path.name}: header says {shape}, found {data.size} values")
    return data.reshape(shape)


MNIST_FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
               "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


def mnist_to_npz(src: Path, out: Path) -> None:
    """The four official idx files as ``x_train`` (60000, 28, 28), ``y_train``, ``x_test``, ``y_test``."""
    missing = [f for f in MNIST_FILES.values() if not (src / f).is_file()]
    if missing:
        raise AssetError(f"MNIST files missing: {', '.join(missing)}")
    write_npz({key: read_idx(src / name) for key, name in MNIST_FILES.items()}, out)


CONVERTERS: dict[str, Callable[[Path, Path], None]] = {
    "gzip": to_gzip,
    "tar": to_tar,
    "jsonl": to_jsonl,
    "stix_jsonl": stix_to_jsonl,
    "aclimdb_csv": aclimdb_to_csv,
    "mnist_npz": mnist_to_npz,
}


def convert(name: str, src: Path, out: Path) -> None:
    """Build ``out`` from the upstream files under the folder ``src`` with the named conversion."""
    if name not in CONVERTERS:
        raise AssetError(f"unknown conversion '{name}' (known: {', '.join(CONVERTERS)})")
    CONVERTERS[name](src, out)


def unpack_archive(archive: Path, dest: Path) -> None:
    """Unpack a GitHub archive tarball into ``dest`` without its single top folder (``<repo>-<commit>/``).
    Extraction uses tarfile's ``data`` filter: no absolute paths, links out of the folder or devices."""
    with tarfile.open(archive, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1:
            raise AssetError(f"{archive.name}: expected one top folder, found {len(tops)}")
        top = tops.pop() + "/"
        kept = []
        for m in members:
            if m.isfile() and m.name.startswith(top):
                m.name = m.name[len(top):]
                kept.append(m)
        tar.extractall(dest, members=kept, filter="data")


__all__ = ["CONVERTERS", "content_digest", "convert", "gunzip_digest", "npz_digest", "read_idx", "tar_gz",
           "unpack_archive", "write_npz"]

