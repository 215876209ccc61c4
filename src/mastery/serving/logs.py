"""Structured logs: one JSON object per line, with the request id of the request being served."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid

ACCESS_LOGGER = "mastery.serving.access"
# What an incoming X-Request-ID may look like: it ends up in logs and headers, so no spaces, quotes or
# newlines (log injection) and a bounded length; anything else is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is a safe token, else a new random one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}``; fields come from ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def use_json_logs(level: int = logging.INFO) -> None:
    """Make every handler of the root logger write JSON lines (installs one on stderr if there is none)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(level)
