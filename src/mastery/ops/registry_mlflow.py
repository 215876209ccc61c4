"""MLflow's model registry as the second trained-model backend (``MASTERY_MODEL_REGISTRY_URI``).

A version here is the same thing the folder registry keeps, stored the MLflow way:

* an MLflow run in the experiment ``mastery-models`` holds the files and ``manifest.json`` as
  artifacts under ``model/``, and the model's metrics (numbers only) as run metrics, so the MLflow UI
  shows them;
* a registered model of the same name gets a version whose source is that folder; the version's tags
  carry the kind and the whole-model sha256.

MLflow numbers the versions itself (1, 2, ... per name, atomically in its database), so the stored
manifest's ``version`` is left empty and filled from MLflow when read. Loading downloads a version
once into a local cache folder (written beside and renamed into place) and verifies it exactly as
the folder registry does: every file's sha256, nothing missing or added, no pickle, the data digests.
A cached copy that fails is downloaded again once; a fresh download that still fails names the file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mastery.core.errors import ModelIntegrityError, RegistryError, require
from mastery.ops.registry import (
    MANIFEST,
    LoadedModel,
    ModelRef,
    RegistryBase,
    check_data_digests,
    parse_manifest,
    stage_model,
    verify_folder,
)

log = logging.getLogger(__name__)

EXPERIMENT = "mastery-models"
ARTIFACT_PATH = "model"
TAG_KIND = "mastery.kind"
TAG_SHA = "mastery.sha256"
T = TypeVar("T")


def _mlflow_errors(method: Callable[..., T]) -> Callable[..., T]:
    """MLflow's own failures (a URI it cannot use, a server that does not answer) as one line naming the URI."""

    @functools.wraps(method)
    def wrapper(self: MlflowModelRegistry, *args: Any, **kwargs: Any) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return method(self, *args, **kwargs)
        except MlflowException as exc:
            first = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0][:300]
            raise RegistryError(f"MLflow model registry at {self.uri}: {first}") from exc

    return wrapper


class MlflowModelRegistry(RegistryBase):
    """Trained models in the MLflow model registry at ``uri``; downloads are verified in ``cache``."""

    def __init__(self, uri: str, *, cache: str | Path) -> None:
        require("mlflow", "ops")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.location = f"MLflow {uri}"
        self.cache = Path(cache).expanduser()
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        except MlflowException as exc:  # e.g. a scheme MLflow has no store for
            raise RegistryError(f"MASTERY_MODEL_REGISTRY_URI / --registry-uri {uri!r}: MLflow cannot use it "
                                "(give sqlite:///path.db or http://host:port)") from exc

    # -- writing -------------------------------------------------------------------------------
    @_mlflow_errors
    def save(self, name: str, files_or_folder: Path | Mapping[str, Path] | Iterable[Path], *, kind: str,
             config: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
             data_assets: Iterable[str] | Mapping[str, str] = (), description: str = "",
             probe: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> ModelRef:
        """Log the files and manifest as a run's artifacts and register them as ``name``'s next version."""
        from mastery.ops.tracking import ensure_experiment

        with tempfile.TemporaryDirectory(prefix=f"mastery-{name}-") as tmp:
            staged = Path(tmp) / ARTIFACT_PATH
            staged.mkdir()
            manifest = stage_model(name, files_or_folder, kind=kind, into=staged, config=config, metrics=metrics,
                                   data_assets=data_assets, description=description, probe=probe, extra=extra)
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            experiment_id = ensure_experiment(self.client, EXPERIMENT, self.uri)
            run = self.client.create_run(experiment_id, run_name=name,
                                         tags={TAG_KIND: kind, TAG_SHA: manifest["sha256"], "mastery.model": name})
            run_id = run.info.run_id
            try:
                for key, value in manifest["metrics"].items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        self.client.log_metric(run_id, key, float(value))
                self.client.log_artifacts(run_id, str(staged), artifact_path=ARTIFACT_PATH)
                self._ensure_registered_model(name, kind)
                version = self.client.create_model_version(
                    name, source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run_id,
                    tags={TAG_KIND: kind, TAG_SHA: manifest["sha256"]}, description=description or None)
            except Exception:
                self.client.set_terminated(run_id, status="FAILED")
                raise
            self.client.set_terminated(run_id)
        ref = ModelRef(name, int(version.version))
        log.info("registered %s (%s, sha256 %s) in %s", ref, kind, manifest["sha256"][:12], self.location)
        return ref

    def _ensure_registered_model(self, name: str, kind: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={TAG_KIND: kind})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    # -- reading -------------------------------------------------------------------------------
    def _mastery_versions(self, name: str) -> dict[int, Any]:
        """version -> MLflow ModelVersion, only versions this registry wrote (they carry the sha256 tag)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{name}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {int(v.version): v for v in found if TAG_SHA in (v.tags or {})}

    @_mlflow_errors
    def versions(self, name: str) -> list[int]:
        return sorted(self._mastery_versions(name))

    @_mlflow_errors
    def names(self) -> list[str]:
        models = self.client.search_registered_models()
        return sorted(m.name for m in models if TAG_KIND in (m.tags or {}) and self.versions(m.name))

    def _model_version(self, ref: ModelRef) -> Any:
        return self._mastery_versions(ref.name)[ref.version]

    @_mlflow_errors
    def manifest(self, name: str) -> dict[str, Any]:
        """The manifest of ``name`` (latest) or ``name@version`` as stored in MLflow, unverified."""
        return self._manifest(self.resolve(name))

    def _manifest(self, ref: ModelRef) -> dict[str, Any]:
        """``ref``'s manifest: the cached copy when there is one, else downloaded alone."""
        cached = self.cache / ref.name / str(ref.version) / MANIFEST
        if cached.is_file():
            text = cached.read_text()
        else:
            version = self._model_version(ref)
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(version.run_id, f"{ARTIFACT_PATH}/{MANIFEST}", tmp)
                text = Path(path).read_text()
        manifest = parse_manifest(ref, text)
        manifest["version"] = ref.version  # MLflow assigned it after the manifest was written
        return manifest

    @_mlflow_errors
    def load(self, name: str, *, check_data: bool = True) -> LoadedModel:
        """Download ``name`` (latest) or ``name@version`` into the cache once, then verify it."""
        ref = self.resolve(name)
        folder = self.cache / ref.name / str(ref.version)
        fresh = not folder.is_dir()
        if fresh:
            self._download(ref, folder)
        # The trust anchor is the whole-model sha256 in MLflow's database (a version tag): a cached manifest
        # edited together with the files it lists still fails against it.
        expected = self._model_version(ref).tags[TAG_SHA]
        try:
            manifest = self._verified(ref, folder, expected)
        except ModelIntegrityError as exc:
            if fresh:
                raise ModelIntegrityError(f"{exc} (in MLflow {self.uri})") from exc
            log.warning("cached copy of %s failed verification (%s): downloading it again", ref, exc)
            shutil.rmtree(folder)
            self._download(ref, folder)
            manifest = self._verified(ref, folder, expected)
        if check_data:
            check_data_digests(ref, manifest.get("data_assets", {}))
        return LoadedModel(ref=ref, path=folder, manifest=manifest)

    def _verified(self, ref: ModelRef, folder: Path, expected_sha256: str) -> dict[str, Any]:
        """The folder's manifest once it and every file match what MLflow recorded at registration."""
        manifest = self._manifest(ref)
        if manifest.get("sha256") != expected_sha256:
            raise ModelIntegrityError(f"{ref}: the manifest's sha256 {str(manifest.get('sha256'))[:16]}... is not the "
                                      f"{expected_sha256[:16]}... MLflow recorded for this version")
        verify_folder(ref, folder, manifest, check_data=False)
        return manifest

    def _download(self, ref: ModelRef, folder: Path) -> None:
        """``ref``'s ``model/`` artifacts into ``folder``, written beside it and renamed into place."""
        version = self._model_version(ref)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{ref.version}-", dir=folder.parent))
        try:
            path = Path(self.client.download_artifacts(version.run_id, ARTIFACT_PATH, str(tmp)))
            try:
                os.rename(path, folder)
            except OSError:  # another process cached it first: keep theirs (it is verified the same way)
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
