"""The prediction API: ``create_app(artifact)`` builds a FastAPI app around one verified model artifact.

Endpoints: ``POST /predict`` (one passenger), ``POST /predict/batch`` (1 to 100), ``GET /health``,
``GET /model`` (version and metadata), and FastAPI's ``/docs`` and ``/openapi.json``.

Every response carries an ``X-Request-ID`` (the caller's, when it is a safe token) and every request
produces one JSON access-log line with that id. Bad input is always a 4xx with an ``ErrorResponse``
body whose ``error`` line names the fields: 422 for schema violations, malformed JSON and repeated keys,
411/413 for a missing or oversized body, 415 for a body that is not JSON, 404/405 for unknown routes.
A 500 means a bug in this code; it carries the request id too.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at runtime, and the
# endpoints are defined inside create_app so that fastapi is imported only when an app is built.
import logging
from pathlib import Path
from typing import Any

from mastery.core.errors import require
from mastery.serving.artifacts import ArtifactError, LoadedArtifact, load_artifact
from mastery.serving.http import RequestContextMiddleware, install_error_handlers, request_id
from mastery.serving.schemas import (
    EXAMPLE_PASSENGER,
    LABELS,
    MAX_BATCH,
    BatchPrediction,
    BatchRequest,
    ErrorResponse,
    Health,
    ModelInfo,
    Passenger,
    Prediction,
    PredictionItem,
)
from mastery.serving.titanic_model import THRESHOLD, predict_proba

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024  # 100 passengers with every string at its maximum length stay well below this
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body could not be read (not UTF-8) or a bad Content-Length"},
    411: {"model": ErrorResponse, "description": "no Content-Length header"},
    413: {"model": ErrorResponse, "description": f"body larger than {MAX_BODY_BYTES} bytes"},
    415: {"model": ErrorResponse, "description": "a Content-Type other than application/json"},
    422: {"model": ErrorResponse, "description": "the body is not valid JSON, repeats a key or breaks the schema; "
                                                 "`error` and `detail` name the fields"},
}


def _threshold(loaded: LoadedArtifact) -> float:
    """The decision threshold, only from inside the hashed file; refused at start-up, never at request time.

    An artifact saved before the threshold lived inside the skops file holds the bare estimator: its
    sidecar's threshold is covered by no hash, so it is accepted only when it is the default.
    """
    name = loaded.path.name
    if "threshold" not in loaded.covered:
        if "threshold" in loaded.meta and loaded.meta["threshold"] != THRESHOLD:
            raise ArtifactError(f"{name}: the sidecar's threshold {loaded.meta['threshold']!r} is not covered by the "
                                f"file's sha256 (an artifact from before thresholds were saved inside it); re-save "
                                f"it with 'mastery predict train' or restore the default {THRESHOLD}")
        return THRESHOLD
    value = loaded.meta["threshold"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ArtifactError(f"{name}: threshold {value!r} is not a number strictly between 0 and 1")
    return float(value)


def create_app(artifact: str | Path | LoadedArtifact | None = None, *, model: str | None = None,
               expected_sha256: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               scoring_threads: int = 1) -> Any:
    """A FastAPI app serving one model: ``model`` is a registry name (``titanic-logreg`` or
    ``titanic-logreg@2``, verified by :func:`mastery.serving.titanic_model.load_registered`), or
    ``artifact`` a skops file (verified and loaded through :func:`mastery.serving.artifacts.load_artifact`)
    or an already loaded artifact.

    Scoring runs in a worker thread (the event loop stays free to parse requests and answer /health),
    at most ``scoring_threads`` at a time, queued first come first served. Scoring holds the GIL, so more
    threads than one only make them preempt each other: with FastAPI's default pool of 40, a load of 32
    concurrent requests gave a p99 several times the median.
    """
    require("fastapi", "serve")
    import anyio
    from fastapi import FastAPI, Request

    if (model is None) == (artifact is None):
        raise ValueError("pass exactly one of model (a registry name) and artifact (a file or loaded artifact)")
    if model is not None:
        from mastery.serving.titanic_model import load_registered

        loaded = load_registered(model)
    elif isinstance(artifact, LoadedArtifact):
        loaded = artifact
    else:
        loaded = load_artifact(artifact, expected_sha256=expected_sha256)
    if scoring_threads < 1:
        raise ValueError("scoring_threads must be >= 1")
    meta, version = loaded.meta, loaded.version
    limiter: dict[str, Any] = {}  # created on first use, inside the server's event loop
    threshold = _threshold(loaded)
    app = FastAPI(
        title="mastery prediction API",
        version=version,
        description=f"Titanic survival from the `{meta['name']}` model (version `{version}`, a sha256 prefix of "
                    "the served file). Bad input is refused with a 4xx whose `error` names the fields.",
    )
    app.state.artifact = loaded
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)

    def score(passengers: list[Passenger]) -> list[PredictionItem]:
        # mode="json" turns the enums into their string values, as in the training data
        probs = predict_proba(loaded.model, [p.model_dump(mode="json") for p in passengers])
        items = []
        for p in probs:
            label = int(p >= threshold)
            items.append(PredictionItem(prediction=label, label=LABELS[label], probability=float(p),
                                        confidence=float(p if label else 1.0 - p)))
        return items

    # Score the documented example once: a model that cannot serve the API's own schema fails here, at
    # start-up, not on the first request (and the first real request does not pay for warm-up).
    try:
        score([Passenger.model_validate(EXAMPLE_PASSENGER)])
    except Exception as exc:
        raise ArtifactError(f"{loaded.path.name} cannot score the API's example passenger: {exc}") from exc

    async def score_in_thread(passengers: list[Passenger]) -> list[PredictionItem]:
        if "limiter" not in limiter:
            limiter["limiter"] = anyio.CapacityLimiter(scoring_threads)  # FIFO: waiters are served in order
        return await anyio.to_thread.run_sync(score, passengers, limiter=limiter["limiter"])

    @app.post("/predict", response_model=Prediction, responses=ERROR_RESPONSES, summary="predict one passenger")
    async def predict(passenger: Passenger, request: Request) -> Prediction:
        item = (await score_in_thread([passenger]))[0]
        request.state.log_fields = {"model_version": version, "n": 1, "prediction": item.prediction,
                                    "probability": round(item.probability, 4)}
        return Prediction(**item.model_dump(), model_version=version, request_id=request_id(request))

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERROR_RESPONSES,
              summary=f"predict 1 to {MAX_BATCH} passengers")
    async def predict_batch(batch: BatchRequest, request: Request) -> BatchPrediction:
        items = await score_in_thread(batch.passengers)
        request.state.log_fields = {"model_version": version, "n": len(items)}
        return BatchPrediction(predictions=items, model_version=version, request_id=request_id(request))

    @app.get("/health", response_model=Health, summary="liveness and the served version")
    async def health() -> Health:
        return Health(status="ok", model_version=version)

    @app.get("/model", response_model=ModelInfo, summary="the served model's version and metadata")
    async def model_info() -> ModelInfo:
        return ModelInfo(name=meta["name"], version=version, sha256=meta["sha256"], created=meta.get("created", ""),
                         estimator=meta.get("estimator", ""), threshold=threshold,
                         labels={str(k): v for k, v in LABELS.items()}, training=meta.get("training", {}),
                         libraries=meta.get("libraries", {}), feature_schema=meta.get("feature_schema", {}))

    from mastery.serving.kb_routes import mount_kb_routes

    mount_kb_routes(app)  # POST /kb/query, only when MASTERY_KB_COLLECTION names a collection
    install_error_handlers(app, log)
    return app
