"""The prediction API: ``create_app(artifact)`` builds a FastAPI app around one verified model artifact.

Endpoints: ``POST /predict`` (one passenger), ``POST /predict/batch`` (1 to 100), ``GET /health``,
``GET /model`` (version and metadata), and FastAPI's ``/docs`` and ``/openapi.json``.

Scoring has two engines: ``onnx`` (the default when the pipeline converts: :mod:`mastery.serving.compiled`,
tens of microseconds a passenger, scored on the event loop) and ``sklearn`` (the pipeline itself, about
6 ms a passenger, scored in a worker thread). Both give the same probabilities to 1e-6; the one in use is
logged at start-up and in every access-log line. :func:`worker_app` builds the app inside each process
of ``mastery predict serve --workers N``.

Every response carries an ``X-Request-ID`` (the caller's, when it is a safe token) and every request
produces one JSON access-log line with that id. Bad input is always a 4xx with an ``ErrorResponse``
body whose ``error`` line names the fields: 422 for schema violations, malformed JSON and repeated keys,
411/413 for a missing or oversized body, 415 for a body that is not JSON, 404/405 for unknown routes.
A 500 means a bug in this code; it carries the request id too.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at runtime, and the
# endpoints are defined inside create_app so that fastapi is imported only when an app is built.
import logging
import os
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

ENGINES = ("auto", "onnx", "sklearn")  # auto: onnx when the pipeline converts and matches, else sklearn

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


def _compile(loaded: LoadedArtifact, engine: str) -> Any:
    """The ONNX scorer for ``engine`` onnx or auto (None for sklearn, or auto when conversion fails)."""
    if engine == "sklearn":
        log.info("scoring engine: sklearn (as asked)")
        return None
    from mastery.serving.compiled import PROBES, CompileError, compile_titanic

    try:
        compiled = compile_titanic(loaded.model, PROBES)
    except CompileError as exc:
        if engine == "onnx":
            raise ArtifactError(f"{loaded.path.name}: --engine onnx: {exc}") from exc
        log.warning("scoring engine: sklearn, because the ONNX path is unavailable: %s", exc)
        return None
    log.info("scoring engine: onnx (onnxruntime; equal to the pipeline on %d probe passengers)", len(PROBES))
    return compiled


def create_app(artifact: str | Path | LoadedArtifact | None = None, *, model: str | None = None,
               expected_sha256: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               scoring_threads: int = 1, engine: str = "auto") -> Any:
    """A FastAPI app serving one model: ``model`` is a registry name (``titanic-logreg`` or
    ``titanic-logreg@2``, verified by :func:`mastery.serving.titanic_model.load_registered`), or
    ``artifact`` a skops file (verified and loaded through :func:`mastery.serving.artifacts.load_artifact`)
    or an already loaded artifact.

    ``engine``: ``onnx`` (refuse to start unless the pipeline converts and matches), ``sklearn``, or
    ``auto`` (onnx, else sklearn with a warning). ONNX scoring takes tens of microseconds and runs on the
    event loop: a hop to a thread would cost more than the scoring. scikit-learn scoring (milliseconds)
    runs in a worker thread, so the event loop stays free to parse requests and answer /health, at most
    ``scoring_threads`` at a time, queued first come first served. Scoring holds the GIL, so more threads
    than one only make them preempt each other: with FastAPI's default pool of 40, a load of 32
    concurrent requests gave a p99 several times the median.
    """
    require("fastapi", "serve")
    import anyio
    from fastapi import FastAPI, Request, Response

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
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
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
    compiled = _compile(loaded, engine)
    app.state.engine = served = "onnx" if compiled is not None else "sklearn"
    proba = compiled.predict_proba if compiled is not None else lambda rows: predict_proba(loaded.model, rows)

    def score(passengers: list[Passenger]) -> list[dict[str, Any]]:
        # mode="json" turns the enums into their string values, as in the training data
        probs = proba([p.model_dump(mode="json") for p in passengers])
        items = []
        for p in probs:
            label = int(p >= threshold)
            items.append({"prediction": label, "label": LABELS[label], "probability": float(p),
                          "confidence": float(p if label else 1.0 - p)})
        return items

    # Score the documented example once: a model that cannot serve the API's own schema fails here, at
    # start-up, not on the first request (and the first real request does not pay for warm-up).
    try:
        score([Passenger.model_validate(EXAMPLE_PASSENGER)])
    except Exception as exc:
        raise ArtifactError(f"{loaded.path.name} cannot score the API's example passenger: {exc}") from exc

    async def score_in_thread(passengers: list[Passenger]) -> list[dict[str, Any]]:
        if compiled is not None:  # microseconds: cheaper than the hop to a thread and back
            return score(passengers)
        if "limiter" not in limiter:
            limiter["limiter"] = anyio.CapacityLimiter(scoring_threads)  # FIFO: waiters are served in order
        return await anyio.to_thread.run_sync(score, passengers, limiter=limiter["limiter"])

    @app.post("/predict", response_model=Prediction, responses=ERROR_RESPONSES, summary="predict one passenger")
    async def predict(passenger: Passenger, request: Request) -> Response:
        item = (await score_in_thread([passenger]))[0]
        request.state.log_fields = {"model_version": version, "engine": served, "n": 1,
                                    "prediction": item["prediction"], "probability": round(item["probability"], 4)}
        # Validated and serialized by pydantic's core in one step; returning the model would have FastAPI
        # validate it a second time and encode it through jsonable_encoder (a third of the route's time).
        body = Prediction(**item, model_version=version, request_id=request_id(request)).model_dump_json()
        return Response(body, media_type="application/json")

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERROR_RESPONSES,
              summary=f"predict 1 to {MAX_BATCH} passengers")
    async def predict_batch(batch: BatchRequest, request: Request) -> Response:
        items = await score_in_thread(batch.passengers)
        request.state.log_fields = {"model_version": version, "engine": served, "n": len(items)}
        body = BatchPrediction(predictions=[PredictionItem(**i) for i in items], model_version=version,
                               request_id=request_id(request)).model_dump_json()
        return Response(body, media_type="application/json")

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


def worker_app(source: dict[str, Any]) -> Any:
    """The app inside one process of ``mastery predict serve --workers N`` (uvicorn's app factory).

    ``source`` comes from the parent, which has already verified and served-tested the model: ``model``
    (a registry ``name@version``) or ``artifact`` (a file path), its full ``sha256`` (the worker loads
    exactly those bytes or refuses), the resolved ``engine``, ``scoring_threads``, ``max_body_bytes`` and
    ``log_level``. A failure exits with uvicorn's start-up failure code, so the parent stops instead of
    restarting the worker forever.
    """
    from uvicorn.main import STARTUP_FAILURE

    from mastery.serving.logs import use_json_logs

    use_json_logs(source.get("log_level", logging.INFO))  # a spawned worker starts with no handlers
    try:
        if source.get("model"):
            from mastery.serving.titanic_model import load_registered

            loaded = load_registered(source["model"])
            if loaded.meta["sha256"] != source["sha256"]:
                raise ArtifactError(f"{source['model']}: sha256 {loaded.meta['sha256'][:12]}... is not the "
                                    f"{source['sha256'][:12]}... the parent process loaded")
        else:
            loaded = load_artifact(source["artifact"], expected_sha256=source["sha256"])
        app = create_app(loaded, engine=source.get("engine", "auto"),
                         scoring_threads=source.get("scoring_threads", 1),
                         max_body_bytes=source.get("max_body_bytes", MAX_BODY_BYTES))
    except Exception:
        log.exception("worker %d could not build the prediction app; stopping", os.getpid())
        raise SystemExit(STARTUP_FAILURE) from None
    log.info("worker %d ready (%s engine)", os.getpid(), app.state.engine)
    return app
