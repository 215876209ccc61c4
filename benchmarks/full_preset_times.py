"""Wall time of each recorded full-preset run (docs/results/<lab>.json), as JSON.

The runs themselves are made with `mastery labs run <lab> --preset full --publish`; this
script collects what they recorded so the numbers can be compared across machines.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def main() -> None:
    rows = []
    for path in sorted(RESULTS.glob("l[0-9][0-9].json")):
        data = json.loads(path.read_text())
        rows.append({
            "lab": data["lab"], "preset": data["preset"], "wall_time_s": data["wall_time_s"],
            "device": data.get("device", ""), "checks_passed": all(c["passed"] for c in data["checks"]),
            "created": data.get("created", ""),
        })
    total = sum(r["wall_time_s"] for r in rows)
    print(json.dumps({"benchmark": "full_preset_wall_times", "labs": rows, "total_s": total}, indent=2))


if __name__ == "__main__":
    main()
