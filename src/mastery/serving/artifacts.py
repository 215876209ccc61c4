"""Model artifacts that are safe to load: skops files, a JSON sidecar, a sha256 and a type allow-list.

A pickle (and joblib, and ``mlflow.sklearn.load_model``) runs whatever code the file names while
loading, so a swapped model file is remote code execution. skops stores the object tree as JSON
plus NumPy arrays and only constructs types it is told to trust. Loading here therefore:

1. reads the sidecar ``<file>.json`` (name, version, sha256, feature schema, training metrics,
   library versions) and compares the file's sha256 with it, or with a pinned ``expected_sha256``;
2. lists the types the file needs beyond skops' built-in safe set and refuses any that are not in
   an allow-list written in code (:data:`TRUSTED_TYPES`), never one read from the file or sidecar;
3. only then calls ``skops.io.load(file, trusted=<that allow-list>)``.

The sha256 guards integrity (a truncated copy, an edited file); the allow-list is the security
boundary (someone who can rewrite both the file and the sidecar still cannot smuggle in a callable).

Values that change the answers without changing the estimator (the decision ``threshold``, the labels)
are saved *inside* the skops file, next to the estimator (``{"model": ..., "serving": {...}}``), so the
sha256 and any pinned version cover them; the sidecar holds a copy for readers, and a copy that differs
from the file's is refused at load. Files saved before this hold the bare estimator: their sidecar's
values are not covered, and :attr:`LoadedArtifact.covered` is empty so a server can refuse or ignore them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError, require

log = logging.getLogger(__name__)

FORMAT = "skops"
# Types skops does not trust by default that the Titanic pipeline (mastery.tabular.titanic) needs, each
# checked by hand: the three are this project's own pure functions inside FunctionTransformers (they add
# columns, cast dtypes, name features), and numpy.dtype is a data-type descriptor, not a callable.
TRUSTED_TYPES: tuple[str, ...] = (
    "mastery.tabular.titanic._added_names",
    "mastery.tabular.titanic._as_object",
    "mastery.tabular.titanic.add_features",
    "numpy.dtype",
)


class ArtifactError(MasteryError):
    """A model artifact is missing, corrupt, tampered with, or needs types that are not trusted."""


@dataclass(frozen=True)
class LoadedArtifact:
    model: Any
    meta: dict[str, Any]
    path: Path
    covered: tuple[str, ...] = ()  # meta keys whose values came from inside the hashed file

    @property
    def version(self) -> str:
        return str(self.meta["version"])


def sidecar_path(path: str | Path) -> Path:
    """``model.skops`` -> ``model.skops.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {"python": platform.python_version()}
    for name in ("scikit-learn", "skops", "numpy", "pandas"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            continue
    return versions


def save_artifact(model: Any, path: str | Path, *, name: str, feature_schema: dict[str, Any] | None = None,
                  training: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                  serving: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` to ``path`` with skops and its sidecar next to it; return the sidecar's content.

    ``serving`` holds the values that change answers (e.g. ``threshold``): they go inside the skops file,
    covered by its sha256, and are copied into the sidecar. ``extra`` is descriptive and sidecar-only.
    The version is the first 12 hex digits of the file's sha256: it names exactly these bytes (skops
    files embed object ids, so saving the same model twice gives two versions).
    """
    sio = require("skops.io", "serve")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump({"model": model, "serving": dict(serving)} if serving else model, path)
    digest = sha256_file(path)
    meta = {
        "name": name,
        "version": digest[:12],
        "sha256": digest,
        "format": FORMAT,
        "file": path.name,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "estimator": type(model).__name__ if not hasattr(model, "steps") else type(model.steps[-1][1]).__name__,
        "feature_schema": feature_schema or {},
        "training": training or {},
        "libraries": _library_versions(),
        "untrusted_types_needed": sorted(sio.get_untrusted_types(file=path)),
        **(extra or {}),
        **(serving or {}),
        "in_artifact": sorted(serving or {}),
    }
    sidecar_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True))
    log.info("saved %s version %s to %s", name, meta["version"], path)
    return meta


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise ArtifactError(f"no sidecar {side.name} next to {Path(path).name}: it records the sha256 to check")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"sidecar {side} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"sidecar {side} is not a JSON object")
    missing = [k for k in ("name", "version", "sha256", "format") if k not in meta]
    if missing:
        raise ArtifactError(f"sidecar {side} lacks {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise ArtifactError(f"sidecar {side} says format {meta['format']!r}; only {FORMAT!r} files are loaded")
    return meta


def load_artifact(path: str | Path, *, trusted: tuple[str, ...] = TRUSTED_TYPES,
                  expected_sha256: str | None = None) -> LoadedArtifact:
    """Verify and load a skops artifact (see the module docstring for the order of checks).

    ``expected_sha256`` pins a version (a full digest or a prefix, e.g. the 12-digit version) on top of
    the sidecar's digest. Raises :class:`ArtifactError` with a one-line reason on any failure.
    """
    sio = require("skops.io", "serve")
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    meta = read_sidecar(path)
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        raise ArtifactError(f"{path.name}: sha256 {digest[:12]}... does not match the sidecar's "
                            f"{str(meta['sha256'])[:12]}...: the file was modified or is corrupt; refusing to load")
    if expected_sha256 is not None and not digest.startswith(expected_sha256.lower()):
        raise ArtifactError(f"{path.name}: sha256 {digest[:12]}... is not the pinned {expected_sha256[:12]}...")
    try:
        needed = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # a zip that is not a skops file: corrupt in a way the sidecar could not see
        raise ArtifactError(f"{path.name} is not a readable skops file: {exc}") from exc
    refused = sorted(needed - set(trusted))
    if refused:
        raise ArtifactError(f"{path.name} needs types outside the allow-list, refusing to load: {', '.join(refused)}")
    try:
        model = sio.load(path, trusted=list(trusted))
    except Exception as exc:
        raise ArtifactError(f"{path.name} could not be loaded by skops: {exc}") from exc
    covered: tuple[str, ...] = ()
    if isinstance(model, dict) and set(model) == {"model", "serving"} and isinstance(model["serving"], dict):
        serving, model = model["serving"], model["model"]
        for key, value in sorted(serving.items()):
            # compared as JSON: the sidecar's form of the value (and NaN equals NaN there)
            if key in meta and json.dumps(meta[key], sort_keys=True) != json.dumps(value, sort_keys=True):
                raise ArtifactError(f"{path.name}: the sidecar's {key} {meta[key]!r} differs from the {value!r} "
                                    "inside the hashed file: the sidecar was edited; refusing to load")
        meta = {**meta, **serving}
        covered = tuple(sorted(serving))
    saved_sklearn = meta.get("libraries", {}).get("scikit-learn")
    now_sklearn = _library_versions().get("scikit-learn")
    if saved_sklearn and saved_sklearn != now_sklearn:
        log.warning("%s was saved with scikit-learn %s, running %s: retrain if predictions look off",
                    path.name, saved_sklearn, now_sklearn)
    log.info("loaded %s version %s from %s", meta["name"], meta["version"], path)
    return LoadedArtifact(model=model, meta=meta, path=path, covered=covered)


# -- MLflow: the run stores the two files; loading downloads them and goes through load_artifact ----------
MLFLOW_ARTIFACT_DIR = "model"


def log_to_mlflow(path: str | Path, tracking_uri: str, experiment: str = "serving",
                  run_name: str | None = None) -> str:
    """Log the skops file and its sidecar as artifacts of a new MLflow run (plus its metrics); return the run id."""
    require("mlflow", "ops")
    from mlflow.tracking import MlflowClient

    path = Path(path)
    meta = read_sidecar(path)
    client = MlflowClient(tracking_uri=tracking_uri)
    existing = client.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        location = None
        if tracking_uri.startswith("sqlite:///"):  # artifacts next to the database, as mastery.ops.tracking does
            location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    run = client.create_run(experiment_id, run_name=run_name or meta["name"],
                            tags={"model_name": meta["name"], "model_version": meta["version"]})
    run_id = run.info.run_id
    for key, value in meta.get("training", {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            client.log_metric(run_id, key, float(value))
    client.log_artifact(run_id, str(path), artifact_path=MLFLOW_ARTIFACT_DIR)
    client.log_artifact(run_id, str(sidecar_path(path)), artifact_path=MLFLOW_ARTIFACT_DIR)
    client.set_terminated(run_id)
    log.info("logged %s version %s to MLflow run %s", meta["name"], meta["version"], run_id)
    return run_id


def load_from_mlflow(run_id: str, tracking_uri: str, dst_dir: str | Path, *,
                     trusted: tuple[str, ...] = TRUSTED_TYPES, expected_sha256: str | None = None) -> LoadedArtifact:
    """Download a run's model files into ``dst_dir`` and load them with :func:`load_artifact` (never unpickled)."""
    require("mlflow", "ops")
    import mlflow.artifacts

    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MLFLOW_ARTIFACT_DIR,
                                                         tracking_uri=tracking_uri, dst_path=str(dst_dir)))
    except Exception as exc:  # unknown run id, missing artifacts, unreachable store
        raise ArtifactError(f"could not download the model of MLflow run {run_id!r}: {exc}".splitlines()[0]) from exc
    files = sorted(p for p in local.glob("*") if p.is_file() and not p.name.endswith(".json"))
    if len(files) != 1:
        raise ArtifactError(f"MLflow run {run_id} should hold one model file under '{MLFLOW_ARTIFACT_DIR}/', "
                            f"found {[p.name for p in files]}")
    return load_artifact(files[0], trusted=trusted, expected_sha256=expected_sha256)


def copy_artifact(src: str | Path, dst: str | Path) -> Path:
    """Copy a model file and its sidecar (e.g. to tamper with a copy in a demonstration)."""
    src, dst = Path(src), Path(dst)
    shutil.copyfile(src, dst)
    shutil.copyfile(sidecar_path(src), sidecar_path(dst))
    return dst
