"""What every HTTP service here shares: a request id on every response and log line, a body-size limit, and
errors as one ``ErrorResponse`` shape whose ``error`` line names the offending fields.

    app.add_middleware(RequestContextMiddleware, max_body_bytes=...)
    install_error_handlers(app, log)      # 422 naming fields, 4xx with the detail, 500 with the request id
"""

# No `from __future__ import annotations`: FastAPI reads the handler signatures at runtime.
import logging
import time
from typing import Any

from mastery.serving.logs import ACCESS_LOGGER, request_id_from
from mastery.serving.schemas import ErrorResponse, FieldError

access_log = logging.getLogger(ACCESS_LOGGER)

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_LOCATIONS = ("body", "header", "path", "query")  # where FastAPI says a bad value was; the field name follows


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, body-size limit, one JSON access-log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: it adds no extra task per request and sees the
    status of every response, including the ones it sends itself.
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
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


def field_errors(errors: list[dict[str, Any]]) -> list[FieldError]:
    """pydantic/FastAPI errors as ``FieldError``s named as a client knows them: ``Pclass``, ``tools.0``,
    ``Idempotency-Key`` (not ``body.Pclass`` or ``header.idempotency-key``)."""
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        where = loc[0] if loc and loc[0] in _LOCATIONS else None
        if where is not None:
            loc = loc[1:]
        if where == "header" and loc:  # FastAPI lower-cases header names
            loc[0] = "-".join(part.capitalize() for part in str(loc[0]).split("-"))
        field = "body" if err.get("type") == "json_invalid" or not loc else ".".join(str(p) for p in loc)
        out.append(FieldError(field=field, message=str(err.get("msg", "invalid")), type=str(err.get("type", ""))))
    return out


def error_line(fields: list[FieldError], limit: int = 5) -> str:
    parts = [f"{f.field}: {f.message}" for f in fields[:limit]]
    more = f" (and {len(fields) - limit} more)" if len(fields) > limit else ""
    return "invalid request: " + "; ".join(parts) + more


def request_id(request: Any) -> str:
    """The id RequestContextMiddleware gave this request (a fresh one if it did not run)."""
    return str(getattr(request.state, "request_id", "") or request_id_from(None))


def error_response(request: Any, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(ErrorResponse(error=message, request_id=request_id(request)).model_dump(),
                        status_code=status, headers=headers)


def install_error_handlers(app: Any, log: logging.Logger) -> None:
    """Schema violations -> 422 naming the fields; HTTP errors -> their status with the detail; anything else
    -> 500 with the request id (the traceback goes to ``log``, never to the client)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = field_errors(list(exc.errors()))
        body = ErrorResponse(error=error_line(fields), detail=fields, request_id=request_id(request))
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, request_id(request))
        return error_response(request, 500, f"internal error; the server log has request id {request_id(request)}")
