"""API keys and a trusted-host check: the auth layer every HTTP service here shares.

A key is a bearer token (``Authorization: Bearer mst_...``) that belongs to one *owner*. The token is shown
once, when ``mastery keys create --owner alice`` makes it; the key file keeps only its sha256, so a copy of the
file opens nothing. A 256-bit random token needs no slow password hash: sha256 of it cannot be searched back.
Comparisons run in constant time over every stored key, and a revoked key is refused on the next request
(the file is read again whenever it changes).

The key file is JSON (``MASTERY_API_KEYS_FILE``, default ``<cache>/api-keys.json``), written atomically
with mode 0600. Using the layer in a FastAPI app (the agent API does exactly this)::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from mastery.serving.auth import KeyStore, TrustedHosts, owner_dependency, trusted_hosts

    keys = KeyStore.from_settings()                   # or KeyStore(path)
    require_owner = owner_dependency(keys)            # 401 + WWW-Authenticate: Bearer, else the owner's name
    app = FastAPI()
    app.add_middleware(TrustedHosts, allowed=trusted_hosts(bound_host))   # add BEFORE RequestContextMiddleware

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str, owner: Annotated[str, Depends(require_owner)]): ...
        # look the thing up WHERE owner = owner, and answer 404 when another owner has it

Rules the services keep: ``/health`` needs no key; everything that reads or starts user data does; a
resource of another owner answers exactly as a missing one (404), so ids cannot be probed. The host check
refuses a request whose ``Host`` header is not one of the allowed names (400): a web page that re-points its
own DNS name at 127.0.0.1 (DNS rebinding) still sends its own name, so it never reaches the API.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's signature at runtime.
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from mastery.core.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "mst_"
TOKEN_BYTES = 32  # 256 bits from secrets.token_urlsafe
MAX_TOKEN_CHARS = 200  # longer Authorization values are refused before hashing
OWNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
FILE_FORMAT = "mastery-api-keys"
FILE_VERSION = 1
DEFAULT_FILE_NAME = "api-keys.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")  # binding these does not name a host a client would send


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One stored key: never the token, only its sha256 and the first characters (to tell keys apart)."""

    id: str
    owner: str
    sha256: str
    prefix: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def default_keys_file() -> Path:
    """``MASTERY_API_KEYS_FILE``, else ``<MASTERY_CACHE>/api-keys.json``."""
    from mastery.core.settings import get_settings

    settings = get_settings()
    return settings.api_keys_file or settings.cache / DEFAULT_FILE_NAME


class KeyStore:
    """The key file: create, list and revoke keys; ``owner_of(token)`` checks a presented token."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the file last read
        self._keys: list[ApiKey] = []

    @classmethod
    def from_settings(cls) -> "KeyStore":
        return cls(default_keys_file())

    # -- reading ----------------------------------------------------------------------------------
    def list_keys(self) -> list[ApiKey]:
        """Every key in the file (revoked ones too), read again if the file changed since the last read."""
        with self._lock:
            self._refresh()
            return list(self._keys)

    def active_owners(self) -> list[str]:
        return sorted({k.owner for k in self.list_keys() if k.active})

    def owner_of(self, token: str | None) -> str | None:
        """The owner of an active key whose token this is, else None (constant time in the token)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        found = None
        for key in self.list_keys():
            # compare against every key, never stopping early, so timing does not tell how far a guess got
            if hmac.compare_digest(digest, key.sha256) and key.active:
                found = key.owner
        return found

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys = None, []
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("API key file %s is readable by other users (mode %o); chmod 600 it",
                        self.path, stat.S_IMODE(st.st_mode))
        self._keys = _parse(self.path)
        self._stamp = stamp

    # -- writing ----------------------------------------------------------------------------------
    def create(self, owner: str) -> tuple[ApiKey, str]:
        """A new key for ``owner``: the stored record and the token (shown once, never stored)."""
        if not OWNER_PATTERN.fullmatch(owner or ""):
            raise ConfigError(f"owner {owner!r} must be 1-64 letters, digits or . _ @ - (starting with a letter "
                              "or digit)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        with self._locked():
            keys = self.list_keys()
            ids = {k.id for k in keys}
            key_id = secrets.token_hex(4)
            while key_id in ids:
                key_id = secrets.token_hex(4)
            key = ApiKey(id=key_id, owner=owner, sha256=hash_token(token), prefix=token[:8],
                         created_at=round(time.time(), 3))
            self._write([*keys, key])
        log.info("created API key %s for %s in %s", key.id, owner, self.path)
        return key, token

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept in the file, so ``keys list`` still shows who had it)."""
        with self._locked():
            keys = self.list_keys()
            match = [k for k in keys if k.id == key_id]
            if not match:
                raise ConfigError(f"no API key {key_id!r} in {self.path} (see 'mastery keys list')")
            if not match[0].active:
                return match[0]
            revoked = ApiKey(**{**asdict(match[0]), "revoked_at": round(time.time(), 3)})
            self._write([revoked if k.id == key_id else k for k in keys])
        log.info("revoked API key %s (%s) in %s", key_id, revoked.owner, self.path)
        return revoked

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on ``<file>.lock``, so two ``keys create`` at once cannot lose a key."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, keys: list[ApiKey]) -> None:
        """Atomically: a 0600 temp file in the same folder, fsync, rename over the old file."""
        data = {"format": FILE_FORMAT, "version": FILE_VERSION, "keys": [asdict(k) for k in keys]}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with self._lock:
            self._stamp = None  # read back on the next use


def _parse(path: Path) -> list[ApiKey]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"API key file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT or data.get("version") != FILE_VERSION:
        raise ConfigError(f"API key file {path} is not a {FILE_FORMAT} v{FILE_VERSION} file")
    try:
        return [ApiKey(**k) for k in data.get("keys", [])]
    except TypeError as exc:
        raise ConfigError(f"API key file {path} has a malformed key: {exc}") from None


# -- FastAPI ------------------------------------------------------------------------------------------
UNAUTHORIZED = {401: {"description": "no valid API key: send `Authorization: Bearer <token>` "
                                     "(create one with `mastery keys create --owner NAME`)"}}


def owner_dependency(keys: KeyStore) -> Callable[..., Any]:
    """A FastAPI dependency that returns the caller's owner name, or answers 401 with ``WWW-Authenticate``.

    Built on FastAPI's ``HTTPBearer`` so the OpenAPI schema declares the scheme (``/docs`` gets an Authorize
    button, a fuzzer knows where the token goes)."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                        description="an API key from `mastery keys create --owner NAME`")

    async def require_owner(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        if credentials is None:
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        owner = keys.owner_of(credentials.credentials)
        if owner is None:
            raise HTTPException(401, "invalid or revoked API key",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return owner

    return require_owner


def trusted_hosts(bound_host: str | None = None, extra: Iterable[str] = ()) -> list[str]:
    """The Host names to accept: 127.0.0.1, localhost, ::1, the bound host (unless a wildcard) and ``extra``."""
    hosts = [*LOCAL_HOSTS]
    if bound_host and bound_host not in WILDCARD_BINDS:
        hosts.append(bound_host)
    hosts.extend(extra)
    return list(dict.fromkeys(h.strip().lower().strip("[]") for h in hosts if h.strip()))


def host_name(header: str) -> str:
    """``Host`` without its port: ``127.0.0.1:8010`` -> ``127.0.0.1``, ``[::1]:8010`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class TrustedHosts:
    """Pure ASGI middleware: 400 unless the ``Host`` header names an allowed host (``*.example.org`` allowed).

    Starlette's ``TrustedHostMiddleware`` does the same check, but it answers in plain text and reads
    ``[::1]:8010`` as host ``[``; this one answers in the services' error shape (``ErrorResponse`` JSON, and
    the ``X-Request-ID`` that ``RequestContextMiddleware`` adds when it wraps this one)."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = [h.lower() for h in allowed]
        if not self.allowed:
            raise ConfigError("the trusted-host list is empty: no request could be answered")
        if "*" in self.allowed:
            log.warning("trusted hosts include '*': the Host header is not checked (DNS rebinding is possible)")

    def is_allowed(self, header: str | None) -> bool:
        if "*" in self.allowed:
            return True
        host = host_name(header or "")
        return bool(host) and any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in self.allowed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
        if self.is_allowed(header):
            await self.app(scope, receive, send)
            return
        from mastery.serving.logs import request_id_from
        from mastery.serving.schemas import ErrorResponse

        request_id = scope.get("state", {}).get("request_id") or request_id_from(None)
        shown = (header or "")[:60]
        # the allowed names stay in the server's log, not in the answer: a rebinding page can read this one
        log.warning("refused Host %r (allowed: %s)", shown, ", ".join(self.allowed),
                    extra={"fields": {"event": "host_refused", "request_id": request_id}})
        body = ErrorResponse(error=f"Host: {shown!r} is not a host this server answers to",
                             request_id=request_id).model_dump_json().encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["UNAUTHORIZED", "ApiKey", "KeyStore", "TrustedHosts", "default_keys_file", "hash_token", "host_name",
           "owner_dependency", "trusted_hosts"]
