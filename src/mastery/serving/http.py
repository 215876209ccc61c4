"""What every HTTP service here shares: a request id on every response and log line, a body-size limit,
JSON bodies only (without duplicate keys), and errors as one ``ErrorResponse`` shape whose ``error`` line
names the offending fields.

    app.add_middleware(RequestContextMiddleware, max_body_bytes=...)
    install_error_handlers(app, log)      # 422 naming fields, 4xx with the detail, 500 with the request id

Every response, errors included, carries ``X-Request-ID``: the middleware adds it to whatever the app
sends, answers its own refusals (400, 411, 413, 415, 422) itself, and turns an exception that escapes the
app into a 500 (Starlette's own 500 is sent outside every user middleware, so it would lack the header).
"""

# No `from __future__ import annotations`: FastAPI reads the handler signatures at runtime.
import json
import logging
import time
from typing import Any

from mastery.serving.logs import ACCESS_LOGGER, request_id_from
from mastery.serving.schemas import ErrorResponse, FieldError

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_LOCATIONS = ("body", "header", "path", "query")  # where FastAPI says a bad value was; the field name follows


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_strict(data: str | bytes) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` on a key repeated inside one object (plain
    ``json.loads`` keeps the last one, so ``{"age": 1, "age": 2}`` would mean whatever a reader picks)."""
    return json.loads(data, object_pairs_hook=_no_duplicates)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, body-size limit, JSON-only bodies without duplicate keys, a 500
    with the request id for any exception, and one JSON access-log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: it adds no extra task per request and sees the
    status of every response, including the ones it sends itself. A request body is read here once
    (it is at most ``max_body_bytes``), checked, and handed to the app unchanged.
    """

    def __init__(self, app: Any, max_body_bytes: int, raw_body_paths: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # path -> byte limit: bodies of any type (file uploads), streamed to the app unread
        self.raw_body_paths = dict(raw_body_paths or {})

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
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            raw_limit = self.raw_body_paths.get(scope["path"])
            refusal: tuple[Any, ...] | None = self._refuse_body(scope["method"], headers, raw_limit)
            if refusal is None and raw_limit is None and scope["method"] in _BODY_METHODS \
                    and int(headers["content-length"]) > 0:
                body = await _read_body(receive, self.max_body_bytes)
                if body is None:  # the client went away, or sent more than it announced
                    refusal = 413, f"body larger than the limit of {self.max_body_bytes} bytes"
                else:
                    refusal = _duplicate_key_refusal(body)
                    receive = _replay(body, receive)
            if refusal is not None:
                await _send_error(send_with_id, *refusal, request_id=request_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            if started:  # too late for a status: let the server close the connection
                raise
            # The traceback goes to the log under the request id, never to the client.
            log.exception("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id)
            await _send_error(send_with_id, 500, f"internal error; the server log has request id {request_id}",
                              request_id=request_id)
        finally:
            fields = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                      "duration_ms": round((time.perf_counter() - start) * 1000, 3)}
            fields.update(state.get("log_fields", {}))
            access_log.info("request", extra={"fields": fields})

    def _refuse_body(self, method: str, headers: dict[str, str], raw_limit: int | None = None
                     ) -> tuple[int, str] | None:
        if method not in _BODY_METHODS:
            return None
        length = headers.get("content-length")
        if length is None:
            return 411, "a Content-Length header is required (chunked bodies are not accepted)"
        if not (length.isascii() and length.isdigit()):
            return 400, f"invalid Content-Length header {length[:20]!r}"
        limit = raw_limit if raw_limit is not None else self.max_body_bytes
        if int(length) > limit:
            return 413, f"body of {int(length)} bytes is larger than the limit of {limit}"
        if raw_limit is None and int(length) > 0 and not _is_json(headers.get("content-type")):
            shown = (headers.get("content-type") or "none")[:60]
            return 415, f"Content-Type {shown!r} is not accepted: send the body as application/json"
        return None


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then the real channel (for disconnects)."""
    pending = True

    async def replay() -> dict:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _duplicate_key_refusal(body: bytes) -> tuple[int, str, list[FieldError]] | None:
    try:
        loads_strict(body)
    except DuplicateKeyError as exc:
        fields = [FieldError(field=exc.key[:100], message="duplicate key in the JSON body", type="duplicate_key")]
        return 422, error_line(fields), fields
    except RecursionError:
        fields = [FieldError(field="body", message="JSON nested too deeply", type="json_invalid")]
        return 422, error_line(fields), fields
    except ValueError:  # not JSON or not UTF-8: the app's own parser refuses it with its usual 4xx
        return None
    return None


async def _send_error(send: Any, status: int, message: str, detail: list[FieldError] | None = None, *,
                      request_id: str) -> None:
    body = ErrorResponse(error=message, detail=detail or [], request_id=request_id).model_dump_json().encode()
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
        # Reached only by apps without RequestContextMiddleware (which answers these itself): Starlette
        # sends this response outside every middleware, so the id header is set here.
        rid = request_id(request)
        log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
        return error_response(request, 500, f"internal error; the server log has request id {rid}",
                              {"X-Request-ID": rid})
