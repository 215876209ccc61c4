"""The prediction API: ``create_app(artifact)`` builds a FastAPI app around one verified model artifact.

Endpoints: ``POST /predict`` (one passenger), ``POST /predict/batch`` (1 to 100), ``GET /health``,
``GET /model`` (version and metadata), and FastAPI's ``/docs`` and ``/openapi.json``.

Every response carries an ``X-Request-ID`` (the caller's, when it is a safe token) and every request
produces one JSON access-log line with that id. Bad input is always a 4xx with an ``ErrorResponse``
body whose ``error`` line names the fields: 422 for schema violations and malformed JSON, 411/413 for
a missing or oversized body, 404/405 for unknown routes. A 500 means a bug in this code.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at runtime, and the
# endpoints are defined inside create_app so that fastapi is imported only when an app is built.
import logging
import time
from pathlib import Path
from typing import Any

from mastery.core.errors import require
from mastery.serving.artifacts import ArtifactError, LoadedArtifact, load_artifact
from mastery.serving.logs import ACCESS_LOGGER, request_id_from
from mastery.serving.schemas import (
    EXAMPLE_PASSENGER,
    LABELS,
    MAX_BATCH,
    BatchPrediction,
    BatchRequest,
    ErrorResponse,
    FieldError,
    Health,
    ModelInfo,
    Passenger,
    Prediction,
    PredictionItem,
)
from mastery.serving.titanic_model import THRESHOLD, predict_proba

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

MAX_BODY_BYTES = 512 * 1024  # 100 passengers with every string at its maximum length stay well below this
_BODY_METHODS = {"POST", "PUT", "PATCH"}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body could not be read (not UTF-8) or a bad Content-Length"},
    411: {"model": ErrorResponse, "description": "no Content-Length header"},
    413: {"model": ErrorResponse, "description": f"body larger than {MAX_BODY_BYTES} bytes"},
    422: {"model": ErrorResponse, "description": "the body is not valid JSON or breaks the schema; "
                                                 "`error` and `detail` name the fields"},
}


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, body-size limit, one JSON access-log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: it adds no extra task per request and sees the
    status of every response, including the ones it sends itself.
    """

    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = request_id_from(headers.get("x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            refusal = self._refuse_body(scope["method"], headers)
            if refusal is not None:
                await _send_error(send_with_id, refusal[0], refusal[1], request_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            fields = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                      "duration_ms": round((time.perf_counter() - start) * 1000, 3)}
            fields.update(state.get("log_fields", {}))
            access_log.info("request", extra={"fields": fields})

    def _refuse_body(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        if method not in _BODY_METHODS:
            return None
        length = headers.get("content-length")
        if length is None:
            return 411, "a Content-Length header is required (chunked bodies are not accepted)"
        if not length.isdigit():
            return 400, f"invalid Content-Length header {length[:20]!r}"
        if int(length) > self.max_body_bytes:
            return 413, f"body of {int(length)} bytes is larger than the limit of {self.max_body_bytes}"
        return None


async def _send_error(send: Any, status: int, message: str, request_id: str) -> None:
    body = ErrorResponse(error=message, request_id=request_id).model_dump_json().encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _field_errors(errors: list[dict[str, Any]]) -> list[FieldError]:
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        field = "body" if err.get("type") == "json_invalid" or not loc else ".".join(str(p) for p in loc)
        out.append(FieldError(field=field, message=str(err.get("msg", "invalid")), type=str(err.get("type", ""))))
    return out


def _error_line(fields: list[FieldError], limit: int = 5) -> str:
    parts = [f"{f.field}: {f.message}" for f in fields[:limit]]
    more = f" (and {len(fields) - limit} more)" if len(fields) > limit else ""
    return "invalid request: " + "; ".join(parts) + more


def create_app(artifact: str | Path | LoadedArtifact, *, expected_sha256: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, scoring_threads: int = 1) -> Any:
    """A FastAPI app serving one model. ``artifact`` is a skops file (verified and loaded through
    :func:`mastery.serving.artifacts.load_artifact`) or an already loaded artifact.

    Scoring runs in a worker thread (the event loop stays free to parse requests and answer /health),
    at most ``scoring_threads`` at a time, queued first come first served. Scoring holds the GIL, so more
    threads than one only make them preempt each other: with FastAPI's default pool of 40, a load of 32
    concurrent requests gave a p99 several times the median.
    """
    require("fastapi", "serve")
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    loaded = artifact if isinstance(artifact, LoadedArtifact) else load_artifact(artifact,
                                                                                 expected_sha256=expected_sha256)
    if scoring_threads < 1:
        raise ValueError("scoring_threads must be >= 1")
    meta, version = loaded.meta, loaded.version
    limiter: dict[str, Any] = {}  # created on first use, inside the server's event loop
    threshold = float(meta.get("threshold", THRESHOLD))
    app = FastAPI(
        title="mastery prediction API",
        version=version,
        description=f"Titanic survival from the `{meta['name']}` model (version `{version}`, a sha256 prefix of "
                    "the served file). Bad input is refused with a 4xx whose `error` names the fields.",
    )
    app.state.artifact = loaded
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes)

    def rid(request: Request) -> str:
        return str(getattr(request.state, "request_id", "") or request_id_from(None))

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
        return Prediction(**item.model_dump(), model_version=version, request_id=rid(request))

    @app.post("/predict/batch", response_model=BatchPrediction, responses=ERROR_RESPONSES,
              summary=f"predict 1 to {MAX_BATCH} passengers")
    async def predict_batch(batch: BatchRequest, request: Request) -> BatchPrediction:
        items = await score_in_thread(batch.passengers)
        request.state.log_fields = {"model_version": version, "n": len(items)}
        return BatchPrediction(predictions=items, model_version=version, request_id=rid(request))

    @app.get("/health", response_model=Health, summary="liveness and the served version")
    async def health() -> Health:
        return Health(status="ok", model_version=version)

    @app.get("/model", response_model=ModelInfo, summary="the served model's version and metadata")
    async def model_info() -> ModelInfo:
        return ModelInfo(name=meta["name"], version=version, sha256=meta["sha256"], created=meta.get("created", ""),
                         estimator=meta.get("estimator", ""), threshold=threshold,
                         labels={str(k): v for k, v in LABELS.items()}, training=meta.get("training", {}),
                         libraries=meta.get("libraries", {}), feature_schema=meta.get("feature_schema", {}))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(list(exc.errors()))
        body = ErrorResponse(error=_error_line(fields), detail=fields, request_id=rid(request))
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorResponse(error=str(exc.detail), request_id=rid(request))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid(request))
        body = ErrorResponse(error=f"internal error; the server log has request id {rid(request)}",
                             request_id=rid(request))
        return JSONResponse(body.model_dump(), status_code=500)

    return app
