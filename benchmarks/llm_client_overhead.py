"""LLM client overhead: tokens/s through mastery's client vs raw HTTP to the same llama.cpp server, same run.

For each thread count, starts the embedded server (the registry GGUF), then alternates identical streamed
requests through ``LLMClient.stream`` and through plain ``httpx`` (the runtime's own HTTP API, no SDK),
with the prompt cache off and ``ignore_eos`` so every call processes the same prompt and generates
exactly ``--max-tokens`` tokens. Speeds as the caller sees them:

- prompt processing: prompt tokens / time to first token;
- generation: (completion tokens - 1) / (latency - time to first token);

plus llama.cpp's own timings for the same calls. Prints one JSON object; the overhead is
(direct - client) / direct of the medians [goal: < 10%]. On a shared CPU separate calls differ by more
than that, so each call is also compared with llama.cpp's timing of itself ("paired": how much speed
the client loses beyond what raw HTTP loses).
Usage: flock /tmp/mastery-cpu.lock python benchmarks/llm_client_overhead.py [--threads 1,2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import httpx

from mastery.llm.client import LLMClient
from mastery.llm.server import EmbeddedServer
from mastery.llm.settings import EMBEDDED_MODEL, load_settings

PROMPT = ("Summarise the following notes in one sentence.\n" + " ".join(
    f"Note {i}: the service on host-{i} restarted after a configuration change and recovered." for i in range(12)))


def direct_stream(root_url: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One streamed chat completion over raw HTTP (server-sent events), timed like the client times it."""
    start = time.perf_counter()
    first = None
    pieces = 0
    usage = timings = None
    with httpx.stream("POST", f"{root_url}/v1/chat/completions", json=payload, timeout=timeout) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                if first is None:
                    first = time.perf_counter() - start
                pieces += 1
    latency = time.perf_counter() - start
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "ttft": first, "latency": latency, "timings": timings}


def via_client(client: LLMClient, messages: list[dict[str, str]], max_tokens: int, extra: dict[str, Any]) -> dict:
    stream = client.stream(messages, max_tokens=max_tokens, extra_body=extra)
    c = stream.read()
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "ttft": c.time_to_first_token_s, "latency": c.latency_s, "timings": c.server_timings}


def speeds(run: dict[str, Any]) -> dict[str, float]:
    t = run["timings"] or {}
    return {"prompt_tps": run["prompt_tokens"] / run["ttft"],
            "gen_tps": (run["completion_tokens"] - 1) / (run["latency"] - run["ttft"]),
            "server_prompt_tps": t.get("prompt_per_second", float("nan")),
            "server_gen_tps": t.get("predicted_per_second", float("nan")), "latency_s": run["latency"]}


def median_speeds(runs: list[dict[str, Any]]) -> dict[str, float]:
    rows = [speeds(r) for r in runs]
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    # Per call, the speed the caller saw vs llama.cpp's own timing of that same call: robust to the
    # machine getting faster or slower between calls (a shared CPU), unlike comparing separate calls.
    out["prompt_loss_vs_server_pct"] = statistics.median(100 * (1 - r["prompt_tps"] / r["server_prompt_tps"])
                                                         for r in rows)
    out["gen_loss_vs_server_pct"] = statistics.median(100 * (1 - r["gen_tps"] / r["server_gen_tps"]) for r in rows)
    return out


def bench_threads(threads: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": PROMPT}]
    # cache_prompt off: every call processes the whole prompt; ignore_eos: every call generates max_tokens
    extra = {"cache_prompt": False, "ignore_eos": True}
    payload = {"model": EMBEDDED_MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
               "seed": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    with EmbeddedServer(threads=threads, ctx=2048) as server:
        client = LLMClient(load_settings({}, base_url=server.url, timeout_s=300))
        client.check_model()
        via_client(client, messages, 8, extra)  # warm-up: first-call allocations, page cache
        client_runs, direct_runs = [], []
        for i in range(rounds):
            order = ("client", "direct") if i % 2 == 0 else ("direct", "client")  # no position bias
            for path in order:
                if path == "client":
                    client_runs.append(via_client(client, messages, max_tokens, extra))
                else:
                    direct_runs.append(direct_stream(server.root_url, payload, 300))
        mine, raw = median_speeds(client_runs), median_speeds(direct_runs)
        return {
            "threads": threads, "device": server.device, "rounds": rounds,
            "prompt_tokens": client_runs[0]["prompt_tokens"], "completion_tokens": client_runs[0]["completion_tokens"],
            "client": mine, "direct": raw,
            "overhead_prompt_pct": 100 * (raw["prompt_tps"] - mine["prompt_tps"]) / raw["prompt_tps"],
            "overhead_generation_pct": 100 * (raw["gen_tps"] - mine["gen_tps"]) / raw["gen_tps"],
            # the client's own cost: its loss against the server's timing minus raw HTTP's loss
            "paired_overhead_prompt_pct": mine["prompt_loss_vs_server_pct"] - raw["prompt_loss_vs_server_pct"],
            "paired_overhead_generation_pct": mine["gen_loss_vs_server_pct"] - raw["gen_loss_vs_server_pct"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated llama.cpp thread counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    results = [bench_threads(int(t), args.rounds, args.max_tokens) for t in args.threads.split(",")]
    worst = max(max(r["overhead_prompt_pct"], r["overhead_generation_pct"]) for r in results)
    print(json.dumps({"benchmark": "llm_client_overhead", "model": EMBEDDED_MODEL, "machine": platform.machine(),
                      "results": results, "worst_overhead_pct": worst, "goal": "overhead < 10%",
                      "goal_met": worst < 10.0}, indent=2))


if __name__ == "__main__":
    main()
