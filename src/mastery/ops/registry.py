"""The trained-model registry: every model a lab trains, saved as ``name@version`` with its provenance.

A registered model is a folder ``<store>/<name>/<version>/`` holding its files and ``manifest.json``:

* ``files``: every file's sha256 and size (the weights are safetensors, skops or GGUF: never pickle);
* ``config``: what rebuilds the model (for torch, the architecture: see
  :mod:`mastery.ops.registry_loaders`), ``metrics``: what it scored when it was trained;
* ``data_assets``: asset name -> sha256 of the data (and base weights) it was trained on, from
  :mod:`mastery.assets.catalog`;
* ``code``: the git commit (and whether the checkout had uncommitted changes) or the package version.

Versions count 1, 2, ... per name. A save is written into a temporary folder next to the store and
renamed into place: ``rename(2)`` of a folder onto an existing non-empty one fails, so two processes
saving the same name at once get two different versions, never a mixed folder, and no lock is needed.

Loading re-hashes every file and checks that each data asset still has the digest the catalog gives
it today; any difference is a one-line :class:`~mastery.core.errors.ModelIntegrityError` naming the
file or the asset, expected vs found.

Two backends share staging and verification: :class:`ModelRegistry`, a local folder (the settings'
``model_store``, the default), and :class:`~mastery.ops.registry_mlflow.MlflowModelRegistry`, MLflow's
model registry (``MASTERY_MODEL_REGISTRY_URI``), which keeps the same files and manifest as run
artifacts and verifies its downloads the same way.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastery.assets.store import sha256_file  # one streaming digest for assets and trained models
from mastery.core.errors import ModelIntegrityError, RegistryError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
KINDS = ("torch", "hf", "skops", "gguf")
# What a kind's folder must hold: the weights in the one safe format that kind loads.
_REQUIRED_SUFFIX = {"torch": ".safetensors", "hf": ".safetensors", "skops": ".skops", "gguf": ".gguf"}
# Formats that unpickle (and so run code) when loaded: refused whatever the kind.
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


@dataclass(frozen=True, order=True)
class ModelRef:
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> tuple[str, int | None]:
        """``"name"`` -> (name, None) (the latest); ``"name@3"`` -> (name, 3)."""
        name, sep, version = text.strip().partition("@")
        _check_name(name)
        if not sep:
            return name, None
        if not version.isdigit() or int(version) < 1:
            raise RegistryError(f"model reference {text!r}: the version after '@' must be a whole number >= 1")
        return name, int(version)


@dataclass(frozen=True)
class LoadedModel:
    """A verified registered model: ``path`` is its folder, every file there matches the manifest."""

    ref: ModelRef
    path: Path
    manifest: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RegistryError(f"model name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
                            "(no '@', at most 100 characters)")


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One sha256 for the whole model: over ``path<TAB>sha256`` lines, sorted (as the asset store does)."""
    lines = "".join(f"{rel}\t{files[rel]['sha256']}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def default_root() -> Path:
    """The settings' ``model_store`` (``MASTERY_MODEL_STORE``, default ``<MASTERY_CACHE>/models``)."""
    from mastery.core.settings import get_settings

    return Path(get_settings().model_store)


def code_version() -> dict[str, Any]:
    """``{"git_commit", "dirty"}`` when the package runs from a git checkout, else ``{"package_version"}``."""
    src = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                                capture_output=True, text=True, timeout=30, check=True).stdout
        return {"git_commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return {"package_version": importlib.metadata.version("mastery")}
    except importlib.metadata.PackageNotFoundError:
        return {"package_version": "unknown"}


def _library_versions() -> dict[str, str]:
    versions = {}
    for lib in ("torch", "safetensors", "transformers", "sentence-transformers", "scikit-learn", "skops", "numpy"):
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def data_asset_digests(names: Iterable[str]) -> dict[str, str]:
    """asset name -> the catalog's sha256 (what the model was trained on)."""
    from mastery.assets.catalog import get_asset

    return {name: get_asset(name).sha256 for name in sorted(set(names))}


def _refuse_pickle(path: Path, rel: str) -> None:
    low = rel.lower()
    if low.endswith(_PICKLE_SUFFIXES):
        raise RegistryError(f"{rel}: pickle-based formats ({', '.join(_PICKLE_SUFFIXES)}) are refused; save "
                            "torch weights as safetensors, scikit-learn models with skops")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # A raw pickle starts with the PROTO opcode; torch.save writes a zip holding data.pkl.
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise RegistryError(f"{rel} is a pickle stream; refused (use safetensors, skops or GGUF)")
    if head == b"PK\x03\x04" and not low.endswith(".skops"):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith(".pkl") for n in zf.namelist()):
                raise RegistryError(f"{rel} is a torch.save zip (pickled data.pkl); refused: use safetensors")


def _collect(source: Path | Mapping[str, Path] | Iterable[Path]) -> dict[str, Path]:
    """relative name -> file: a folder (recursively), a {name: path} mapping, or a list of files."""
    if isinstance(source, str | Path):
        root = Path(source)
        if root.is_dir():
            return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        if root.is_file():
            return {root.name: root}
        raise RegistryError(f"nothing to register at {root}: no such file or folder")
    if isinstance(source, Mapping):
        return {str(k): Path(v) for k, v in source.items()}
    return {Path(p).name: Path(p) for p in source}


def _jsonable(value: Any) -> Any:
    """Config/metric values as plain JSON (tuples -> lists, numpy scalars -> floats, paths -> str)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def stage_model(name: str, files_or_folder: Path | Mapping[str, Path] | Iterable[Path], *, kind: str,
                into: Path, config: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
                data_assets: Iterable[str] | Mapping[str, str] = (), description: str = "",
                probe: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check the files (names, kind, no pickle), copy them into the empty folder ``into`` and return their
    manifest with ``version`` still None: the one staging step both registry backends share."""
    _check_name(name)
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; choose from {', '.join(KINDS)}")
    files = _collect(files_or_folder)
    if not files:
        raise RegistryError(f"{name}: no files to register")
    for rel, path in files.items():
        if not path.is_file():
            raise RegistryError(f"{name}: {path} is not a file")
        if rel == MANIFEST or rel.startswith("/") or ".." in Path(rel).parts:
            raise RegistryError(f"{name}: file name {rel!r} is not allowed")
        _refuse_pickle(path, rel)
    suffix = _REQUIRED_SUFFIX[kind]
    if not any(rel.endswith(suffix) for rel in files):
        raise RegistryError(f"{name}: a {kind} model needs a {suffix} file; got {', '.join(sorted(files))}")
    if kind == "hf" and "config.json" not in files:
        raise RegistryError(f"{name}: a Hugging Face folder needs config.json at its top level")
    assets = dict(data_assets) if isinstance(data_assets, Mapping) else data_asset_digests(data_assets)
    records = {}
    for rel, path in sorted(files.items()):
        dst = into / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
        records[rel] = {"sha256": sha256_file(dst), "size": dst.stat().st_size}
    return {
        "schema": MANIFEST_SCHEMA, "name": name, "version": None, "kind": kind,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": description, "sha256": files_digest(records), "files": records,
        "config": _jsonable(dict(config or {})), "metrics": _jsonable(dict(metrics or {})),
        "data_assets": assets, "code": code_version(), "libraries": _library_versions(),
        "probe": _jsonable(dict(probe)) if probe else None, **_jsonable(dict(extra or {})),
    }


def parse_manifest(ref: ModelRef, text: str) -> dict[str, Any]:
    """A manifest's JSON, checked to be this schema's; a one-line error naming ``ref`` otherwise."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ModelIntegrityError(f"{ref}: {MANIFEST} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ModelIntegrityError(f"{ref}: {MANIFEST} is not a schema-{MANIFEST_SCHEMA} model manifest")
    return manifest


def verify_folder(ref: ModelRef, folder: Path, manifest: Mapping[str, Any], *, check_data: bool = True) -> None:
    """Every file in ``folder`` has its manifest sha256, none is missing or added, none is a pickle, and
    (with ``check_data``) every data asset still has the recorded digest in the catalog."""
    files = manifest.get("files", {})
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    for rel in sorted(set(files) - on_disk):
        raise ModelIntegrityError(f"{ref}: file {rel} listed in the manifest is missing")
    for rel in sorted(on_disk - set(files)):
        raise ModelIntegrityError(f"{ref}: file {rel} is not in the manifest (added after registration)")
    for rel in sorted(files):
        _refuse_pickle(folder / rel, rel)
        found = sha256_file(folder / rel)
        if found != files[rel]["sha256"]:
            raise ModelIntegrityError(f"{ref}: file {rel} has sha256 {found[:16]}..., the manifest expects "
                                      f"{files[rel]['sha256'][:16]}...: modified or corrupt; refusing to load")
    if files_digest(files) != manifest.get("sha256"):
        raise ModelIntegrityError(f"{ref}: the manifest's sha256 does not match its file list")
    if check_data:
        check_data_digests(ref, manifest.get("data_assets", {}))


def check_data_digests(ref: ModelRef, recorded: Mapping[str, str]) -> None:
    from mastery.assets.catalog import ASSETS

    for asset, expected in sorted(recorded.items()):
        if asset not in ASSETS:
            raise ModelIntegrityError(f"{ref}: data asset {asset} it was trained on is no longer in the catalog")
        now = ASSETS[asset].sha256
        if now != expected:
            raise ModelIntegrityError(f"{ref}: data asset {asset} was {expected[:16]}... at training time, the "
                                      f"catalog now says {now[:16]}...: the model was trained on other data "
                                      "(retrain it, or load with check_data=False)")


class RegistryBase:
    """What every registry backend offers; subclasses store versions (a folder, MLflow's model registry)."""

    location: str = ""  # where the models are, for messages and listings

    def save(self, name: str, files_or_folder: Path | Mapping[str, Path] | Iterable[Path], *, kind: str,
             **fields: Any) -> ModelRef:  # pragma: no cover - abstract
        raise NotImplementedError

    def versions(self, name: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def manifest(self, name: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, name: str, *, check_data: bool = True) -> LoadedModel:  # pragma: no cover - abstract
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        """True when ``name`` (any version) or ``name@version`` is registered."""
        base, version = ModelRef.parse(name)
        found = self.versions(base)
        return bool(found) and (version is None or version in found)

    def resolve(self, name: str) -> ModelRef:
        base, version = ModelRef.parse(name)
        found = self.versions(base)
        if not found:
            known = ", ".join(self.names()) or "none yet"
            raise RegistryError(f"no trained model named {base!r} in {self.location} (registered: {known})")
        if version is None:
            return ModelRef(base, found[-1])
        if version not in found:
            raise RegistryError(f"{base}@{version} is not registered; versions: {', '.join(map(str, found))}")
        return ModelRef(base, version)

    def list(self) -> list[dict[str, Any]]:
        """Every version of every model: its manifest (unverified), oldest version first."""
        return [self.manifest(f"{name}@{v}") for name in self.names() for v in self.versions(name)]

    def copy_from(self, other: RegistryBase, name: str) -> ModelRef:
        """Register a verified model of ``other`` here as this registry's next version of its name; the
        manifest keeps its config, metrics, data digests and records where it came from."""
        loaded = other.load(name)
        m = loaded.manifest
        files = {rel: loaded.path / rel for rel in m["files"]}
        return self.save(loaded.ref.name, files, kind=m["kind"], config=m.get("config"), metrics=m.get("metrics"),
                         data_assets=m.get("data_assets", {}), description=m.get("description", ""),
                         probe=m.get("probe"), extra={"copied_from": {"ref": str(loaded.ref), "location":
                                                                      other.location, "created": m["created"],
                                                                      "code": m.get("code")}})


class ModelRegistry(RegistryBase):
    """A folder of registered models (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.location = str(self.root)

    # -- writing -------------------------------------------------------------------------------
    def save(self, name: str, files_or_folder: Path | Mapping[str, Path] | Iterable[Path], *, kind: str,
             config: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
             data_assets: Iterable[str] | Mapping[str, str] = (), description: str = "",
             probe: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> ModelRef:
        """Register the files as the next version of ``name``; returns ``name@version``.

        ``data_assets``: asset names (their catalog sha256 is recorded) or an explicit name -> sha256.
        ``probe``: a fixed input and the outputs the model gave for it at training time, so a reload
        can be checked to behave the same (see :func:`mastery.ops.registry_loaders.torch_probe`).
        """
        _check_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            manifest = stage_model(name, files_or_folder, kind=kind, into=tmp, config=config, metrics=metrics,
                                   data_assets=data_assets, description=description, probe=probe, extra=extra)
            return self._publish(name, tmp, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _publish(self, name: str, tmp: Path, manifest: dict[str, Any]) -> ModelRef:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            version = max(self.versions(name), default=0) + 1
            manifest["version"] = version
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            try:
                os.rename(tmp, self.root / name / str(version))
            except OSError as exc:  # another process took this version first: try the next one
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            ref = ModelRef(name, version)
            log.info("registered %s (%s, sha256 %s) in %s", ref, manifest["kind"], manifest["sha256"][:12], self.root)
            return ref
        raise RegistryError(f"{name}: could not claim a new version in {self.root}")  # pragma: no cover

    # -- reading -------------------------------------------------------------------------------
    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and self.versions(p.name))

    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest of ``name`` (latest) or ``name@version``, unverified (for listing)."""
        ref = self.resolve(name)
        path = self.root / ref.name / str(ref.version) / MANIFEST
        try:
            text = path.read_text()
        except OSError as exc:
            raise ModelIntegrityError(f"{ref}: {MANIFEST} is unreadable: {exc}") from exc
        return parse_manifest(ref, text)

    def load(self, name: str, *, check_data: bool = True) -> LoadedModel:
        """Verify and return ``name`` (latest) or ``name@version`` (see :func:`verify_folder`)."""
        ref = self.resolve(name)
        folder = self.root / ref.name / str(ref.version)
        manifest = self.manifest(str(ref))
        verify_folder(ref, folder, manifest, check_data=check_data)
        return LoadedModel(ref=ref, path=folder, manifest=manifest)


def open_registry(root: str | Path | None = None, uri: str | None = None) -> RegistryBase:
    """MLflow's model registry at ``uri``, else the folder ``root``, else the settings' choice: MLflow at
    ``MASTERY_MODEL_REGISTRY_URI`` when that is set, otherwise the folder ``model_store``. MLflow downloads
    are verified in ``<model_store>/.mlflow-cache``."""
    from mastery.core.settings import get_settings

    uri = uri or (None if root is not None else get_settings().model_registry_uri)
    if uri:
        from mastery.ops.registry_mlflow import MlflowModelRegistry

        return MlflowModelRegistry(uri, cache=default_root() / ".mlflow-cache")
    return ModelRegistry(root if root is not None else default_root())
