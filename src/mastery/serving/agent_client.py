"""A client's side of the agent API's run streams: read ``GET /runs/{id}/events`` (server-sent events) to its end.

    with httpx.Client(base_url=url) as client:
        run_id = client.post("/runs", json={"question": "What is 6 * 7?"}).json()["id"]
        steps, result = wait_result(client, run_id)           # every step event, then the final result
        again, _ = wait_result(client, run_id, after=1)        # resume after event 1 (Last-Event-ID)
"""

from __future__ import annotations

import json
from typing import Any


def wait_result(client: Any, run_id: str, after: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the run's event stream until it ends: the ``step`` events' data and the ``result`` event's data.

    ``client`` is an ``httpx.Client`` on the API's base URL; ``after`` resumes after that event id."""
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
