"""A client's side of the agent API: an authenticated ``httpx.Client`` and the run streams read to their end.

    with api_client(url, token) as client:                    # sends Authorization: Bearer <token>
        run_id = client.post("/runs", json={"question": "What is 6 * 7?"}).json()["id"]
        steps, result = wait_result(client, run_id)           # every step event, then the final result
        again, _ = wait_result(client, run_id, after=1)        # resume after event 1 (Last-Event-ID)
"""

from __future__ import annotations

import json
from typing import Any


def auth_headers(token: str) -> dict[str, str]:
    """The header an API key travels in (``mastery keys create`` prints the token)."""
    return {"Authorization": f"Bearer {token}"}


def api_client(base_url: str, token: str | None, timeout: float = 60.0, **kwargs: Any) -> Any:
    """An ``httpx.Client`` on the API's base URL that sends the key with every request (None: no key, for
    probing the 401s). ``trust_env=False``: a proxy from the environment must never see a 127.0.0.1 token."""
    import httpx

    headers = {**(auth_headers(token) if token else {}), **kwargs.pop("headers", {})}
    return httpx.Client(base_url=base_url, trust_env=False, timeout=timeout, headers=headers, **kwargs)


def wait_result(client: Any, run_id: str, after: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the run's event stream until it ends: the ``step`` events' data and the ``result`` event's data.

    ``client`` is an ``httpx.Client`` on the API's base URL (with the key, see :func:`api_client`);
    ``after`` resumes after that event id."""
    steps, result = [], {}
    headers = {"Last-Event-ID": str(after)} if after else {}
    with client.stream("GET", f"/runs/{run_id}/events", headers=headers) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("step", "result"):
                data = json.loads(line.split(":", 1)[1])
                if event == "step":
                    steps.append(data)
                else:
                    result = data
    return steps, result
