"""L24 · Production agent API: the L21 ReAct agent behind FastAPI, with SSE, resilience, cost and fuzzing.

The lab starts two scripted OpenAI-compatible LLM servers (primary and fallback, with faults injected on
demand) and the agent API, each under uvicorn on 127.0.0.1, and talks to the API only over HTTP: normal
runs, a primary that times out (the fallback answers), a flaky 503 primary (retries succeed), a dropped
connection, a tool that always fails, a run past its deadline, idempotent retries of a POST, SSE streams
checked against the stored steps, a restart on the same SQLite file, and schemathesis fuzzing. Every
request carries an API key (a key file made in the lab's temp folder); the security probes check that a
missing or revoked key gets 401, another owner's run 404, a reused Idempotency-Key a 409 that leaks nothing,
a request for the python tool 422, and a foreign Host header 400. The full preset adds runs on the embedded
LLM (Qwen2.5-Coder-0.5B under llama.cpp) and more fuzz cases.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.eval.agent_api_fixtures import (
    EMBEDDED_QUESTIONS,
    EXAMPLE_PRICES,
    FALLBACK_MODEL,
    PRIMARY_MODEL,
    demo_keys,
    demo_script,
    demo_tools,
)
from mastery.serving.agent_client import api_client, wait_result

TRACE_ID = "l24-trace-0001"


REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # per LLM call; the "timeout" fault answers after timeout_delay_s
    llm_timeout_s: Annotated[float, Interval(gt=0, le=600)] = 0.5
    timeout_delay_s: Annotated[float, Interval(gt=0, le=600)] = 1.0
    # every call of the per-run-timeout scenario takes this long (no client timeout)
    slow_delay_s: Annotated[float, Interval(gt=0, le=600)] = 0.3
    run_timeout_s: Annotated[float, Interval(ge=1, le=3600)] = 1.0  # that scenario's deadline
    llm_attempts: Annotated[int, Interval(ge=1, le=100)] = 3
    backoff_base_s: Annotated[float, Interval(ge=0, le=60)] = 0.05
    backoff_max_s: Annotated[float, Interval(ge=0, le=600)] = 0.4
    fuzz_examples: Annotated[int, Interval(ge=1, le=1000)] = 25  # schemathesis cases per operation and mode
    # runs posted at once against 2 workers + queue: all must finish
    burst_runs: Annotated[int, Interval(ge=1, le=200)] = 12
    embedded_runs: bool = False  # full: also run real questions on the embedded LLM
    embedded_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 120.0
    min_embedded_answered: Fraction = 0.25  # the 0.5B model's quality is L21's subject; here: the service works
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if not 0 < self.llm_timeout_s < self.timeout_delay_s:
            raise ConfigError("need 0 < llm_timeout_s < timeout_delay_s (the timeout fault must outlast the client)")
        if not 0 < self.slow_delay_s < self.llm_timeout_s or self.run_timeout_s < 1.0:
            raise ConfigError("need 0 < slow_delay_s < llm_timeout_s and run_timeout_s >= 1")
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("need backoff_base_s <= backoff_max_s")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("fuzz_5xx", "scenarios_as_expected", "runs_lost")

PRESETS = {"tiny": Config(fuzz_examples=8, burst_runs=6),
           "full": Config(fuzz_examples=100, burst_runs=40, embedded_runs=True)}

# Scenarios: (name, question, faults on the primary (kind, first/every), run options, expected status)
SCENARIOS: list[tuple[str, str, list[tuple[str, dict[str, Any]]], dict[str, Any], str]] = [
    ("normal", "What is 17 * 23?", [], {}, "answered"),
    ("primary times out", "What is 17 * 23? [timeout]", [("delay", {})], {}, "answered"),
    ("primary 503 twice", "What is 17 * 23? [flaky]", [("http_503", {"first": 2})], {}, "answered"),
    ("connection dropped", "What is 17 * 23? [drop]", [("drop", {"first": 1})], {}, "answered"),
    ("failing tool", "Look up the ATT&CK ID of phishing [lookup]", [], {}, "answered"),
    ("run deadline", "Count upwards with the calculator [slow]", [("slow", {})], {"max_steps": 12}, "timed_out"),
]


def run(config: Config, progress: Progress) -> Report:
    with tempfile.TemporaryDirectory(prefix="l24-") as tmp:
        return _run(config, progress, Path(tmp))


def _run(config: Config, progress: Progress, tmp: Path) -> Report:
    from mastery.agents.resilience import parse_price_table
    from mastery.llm.scripted import ScriptedLLM, create_scripted_app
    from mastery.serving.server import ServerThread

    report = new_report("l24", config)
    report.device = "cpu: the agent API and scripted LLMs are I/O-bound HTTP services (no GPU path)"
    progress.params({"fuzz_examples": config.fuzz_examples, "llm_attempts": config.llm_attempts,
                     "burst_runs": config.burst_runs})
    prices = parse_price_table(EXAMPLE_PRICES, "example prices (lab)")
    primary, fallback = ScriptedLLM(demo_script(), model=PRIMARY_MODEL), ScriptedLLM(demo_script(),
                                                                                     model=FALLBACK_MODEL)
    db = tmp / "runs.db"
    keys, tokens = demo_keys(tmp)  # the key file lives and dies with the lab's temp folder
    token = tokens["l24"]
    with _quiet(), ServerThread(create_scripted_app(primary)) as p_srv, \
            ServerThread(create_scripted_app(fallback)) as f_srv:
        backends = _backends(config, p_srv.url, f_srv.url)
        app = _api(config, db, backends, prices, keys)
        with ServerThread(app) as api:
            rows = _scenarios(report, config, api.url, token, primary, progress)
            _idempotency(report, api.url, token)
            _burst(report, config, api.url, token, primary)
            _errors_and_logs(report, api.url, token)
            _security(report, api.url, keys, tokens)
            fuzz = _fuzz(report, config, api.url, token, progress)
        app.state.close()
        _restart(report, config, db, backends, prices, keys, token, {r["id"]: r["status"] for r in rows})
    if config.embedded_runs:
        _embedded(report, config, tmp, prices, keys, token, progress)
    _figure(report, rows)
    report.note(
        "Resilience: the API's LLM is FallbackChat([RetryingChat(primary), RetryingChat(fallback)]). A call that "
        f"times out ({config.llm_timeout_s:g} s), gets a 5xx/429 or loses its connection is retried up to "
        f"{config.llm_attempts} attempts with exponential backoff and full jitter (base {config.backoff_base_s:g} s, "
        f"cap {config.backoff_max_s:g} s); then the fallback answers, and it keeps answering for the rest of that run "
        "(sticky), so a dead primary costs its retries once per run, not on every step. Idempotent tools are retried "
        "once; a tool that still fails becomes an `Error: ...` observation the model answers from. Every run has a "
        "deadline that the agent checks before each step and the retry loop before each backoff.")
    report.note(
        f"Cost: tokens are counted per backend and priced from a price table (here {EXAMPLE_PRICES['note']}: "
        f"the scripted primary is priced as {PRIMARY_MODEL}, the local fallback model at 0). Scripted token counts "
        "are characters/4, so the dollar figures show the bookkeeping, not a real bill.")
    if fuzz is not None:
        report.metrics = {k: report.metrics[k] for k in ("fuzz_5xx", "scenarios_as_expected", "runs_lost")
                          if k in report.metrics} | report.metrics
    return report


def _backends(config: Config, primary_url: str, fallback_url: str) -> list[Any]:
    from mastery.serving.agent_runs import BackendSpec

    return [BackendSpec("primary", primary_url + "/v1", PRIMARY_MODEL, timeout_s=config.llm_timeout_s),
            BackendSpec("fallback", fallback_url + "/v1", FALLBACK_MODEL, timeout_s=config.llm_timeout_s)]


def _api(config: Config, db: Path, backends: list[Any], prices: Any, keys: Any, workers: int = 2,
         queue_limit: int = 64, agent_mode: str = "native") -> Any:
    """The API app. Scripted LLMs answer with native tool calls turn by turn, hence "native"; the embedded
    model runs in the service's default text mode."""
    from mastery.agents.resilience import RetryPolicy
    from mastery.serving.agent_api import AgentAPISettings, create_app
    from mastery.serving.agent_runs import RunnerSettings

    policy = RetryPolicy(attempts=config.llm_attempts, base_s=config.backoff_base_s, max_s=config.backoff_max_s)
    tool_policy = RetryPolicy(attempts=2, base_s=config.backoff_base_s, max_s=config.backoff_max_s)
    runner = RunnerSettings(backends=backends, tools=demo_tools(), prices=prices, workers=workers,
                            queue_limit=queue_limit, llm_retry=policy, tool_retry=tool_policy, agent_mode=agent_mode)
    return create_app(AgentAPISettings(db_path=db, runner=runner, default_timeout_s=30.0, keys=keys))


def _faults(config: Config, spec: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    from mastery.llm.scripted import Fault

    out = []
    for kind, when in spec:
        if kind == "slow":
            out.append(Fault("delay", delay_s=config.slow_delay_s, **when))
        elif kind == "delay":
            out.append(Fault("delay", delay_s=config.timeout_delay_s, **when))
        else:
            out.append(Fault(kind, **when))  # type: ignore[arg-type]
    return out


def _scenarios(report: Report, config: Config, url: str, token: str, primary: Any,
               progress: Progress) -> list[dict[str, Any]]:
    progress.stage("scenarios", len(SCENARIOS))
    rows, good, sse_ok = [], 0, 0
    with api_client(url, token, timeout=60.0) as client:
        # one unreported warm-up run: the first run in a process pays for lazy imports in the OpenAI SDK
        wait_result(client, client.post("/runs", json={"question": "What is 6 * 7? [warm-up]"}).json()["id"])
        for name, question, faults, options, expected in SCENARIOS:
            primary.set_faults(_faults(config, faults))
            body = {"question": question, **options}
            if name == "run deadline":
                body["timeout_s"] = config.run_timeout_s
            start = time.perf_counter()
            created = client.post("/runs", json=body).json()
            events, result = wait_result(client, created["id"])
            latency = time.perf_counter() - start
            stored = client.get(f"/runs/{created['id']}").json()
            same = events == stored["steps"] and result == stored
            resumed, _ = wait_result(client, created["id"], after=1)
            same = same and resumed == stored["steps"][1:]
            ok = stored["status"] == expected
            good += ok
            sse_ok += same
            report.timing(f"latency_s_{name.replace(' ', '_')}", latency)
            rows.append({"scenario": name, "id": created["id"], "status": stored["status"], "expected": expected,
                         "answer": (stored["answer"] or "")[:60], "steps": len(stored["steps"]),
                         "backend": stored["backend"], "llm_retries": stored["llm_retries"],
                         "fallbacks": stored["fallbacks"], "tool_retries": stored["tool_retries"],
                         "tokens": stored["cost"]["total_tokens"], "usd": stored["cost"]["usd"],
                         "latency_s": round(latency, 3), "sse_matches": same})
            progress.step()
    by = {r["scenario"]: r for r in rows}
    report.table("Scenarios (each run over HTTP; its SSE stream compared with GET /runs/{id})",
                 [{k: v for k, v in r.items() if k != "id"} for r in rows])
    report.metric("scenarios_as_expected", good)
    report.metric("sse_streams_match", sse_ok)
    for r in rows:
        key = r["scenario"].replace(" ", "_")
        # the deadline run's step count depends on the clock: a timing, not a metric
        record = report.timing if r["scenario"] == "run deadline" else report.metric
        for field in ("llm_retries", "fallbacks", "tool_retries", "tokens", "steps", "usd"):
            record(f"{key}_{field}", r[field])
    report.check("scenarios", good == len(rows), "every scenario ends with its expected status", f"{good}/{len(rows)}")
    report.check("sse_matches_store", sse_ok == len(rows), "each SSE stream (and a resume after event 1) equals the "
                 "stored steps and result", f"{sse_ok}/{len(rows)}")
    report.check("fallback_answers", by["primary times out"]["backend"] == "fallback"
                 and by["primary times out"]["fallbacks"] >= 1, "a primary that times out: the fallback answers",
                 by["primary times out"]["backend"])
    report.check("retries_recover", by["primary 503 twice"]["llm_retries"] == 2
                 and by["primary 503 twice"]["backend"] == "primary"
                 and by["connection dropped"]["llm_retries"] == 1,
                 "two 503s cost 2 retries and a dropped connection 1; the primary still answers",
                 f"{by['primary 503 twice']['llm_retries']}, {by['connection dropped']['llm_retries']}")
    report.check("failing_tool_survived", by["failing tool"]["status"] == "answered"
                 and by["failing tool"]["tool_retries"] == 1, "a tool that always fails is retried once, then the "
                 "agent answers from the error", by["failing tool"]["status"])
    report.check("cost_tracked", by["normal"]["usd"] > 0 and by["primary times out"]["usd"] < by["normal"]["usd"],
                 f"runs on the primary are priced ({PRIMARY_MODEL}), tokens the local fallback answered cost 0",
                 f"{by['normal']['usd']:.8f} vs {by['primary times out']['usd']:.8f}")
    primary.set_faults([])
    return rows


def _idempotency(report: Report, url: str, token: str) -> None:
    body = {"question": "What is 17 * 23? [idempotent]", "max_steps": 3}
    with api_client(url, token, timeout=30.0) as client:
        first = client.post("/runs", json=body, headers={"Idempotency-Key": "l24-key-1"})
        again = client.post("/runs", json=body, headers={"Idempotency-Key": "l24-key-1"})
        other = client.post("/runs", json={**body, "max_steps": 4}, headers={"Idempotency-Key": "l24-key-1"})
        wait_result(client, first.json()["id"])
    same = first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    report.metric("idempotent_replay_same_run", int(same))
    report.check("idempotency", same and other.status_code == 409,
                 "same Idempotency-Key and body -> the same run (200); same key, other body -> 409",
                 f"{first.status_code}, {again.status_code}, {other.status_code}")


def _burst(report: Report, config: Config, url: str, token: str, primary: Any) -> None:
    """``burst_runs`` runs posted at once (2 workers) with a primary that fails every third call: none is lost."""
    from mastery.llm.scripted import Fault

    primary.set_faults([Fault("http_503", every=3)])
    with api_client(url, token, timeout=60.0) as client:
        ids = [client.post("/runs", json={"question": f"What is 17 * 23? [burst {i}]"}).json()["id"]
               for i in range(config.burst_runs)]
        finals = [wait_result(client, i)[1] for i in ids]
    primary.set_faults([])
    answered = sum(f.get("status") == "answered" and f.get("answer") == "391" for f in finals)
    report.metric("burst_runs", config.burst_runs)
    report.metric("burst_answered", answered)
    report.metric("runs_lost", config.burst_runs - sum(bool(f.get("status")) for f in finals))
    report.check("burst_no_run_lost", answered == config.burst_runs,
                 f"{config.burst_runs} runs posted at once, primary failing every 3rd call: all answered 391",
                 f"{answered}/{config.burst_runs}")


def _errors_and_logs(report: Report, url: str, token: str) -> None:
    bad = [({"question": ""}, "question"), ({"question": "hi", "max_steps": 99}, "max_steps"),
           ({"question": "hi", "tools": ["rm -rf"]}, "tools.0"), ({"question": "hi", "timeout_s": 0.1}, "timeout_s"),
           ({"question": "hi", "extra": 1}, "extra")]
    named = 0
    with api_client(url, token, timeout=30.0) as client:
        for body, field in bad:
            r = client.post("/runs", json=body)
            named += r.status_code == 422 and field in r.json()["error"]
        missing = client.get("/runs/" + "0" * 32).status_code
        traced = client.get("/health", headers={"X-Request-ID": TRACE_ID})
    report.metric("bad_requests_rejected_naming_field", named)
    report.check("bad_requests", named == len(bad) and missing == 404,
                 "bad bodies -> 422 naming the field; an unknown run -> 404", f"{named}/{len(bad)}, {missing}")
    report.check("request_id_echoed", traced.headers.get("x-request-id") == TRACE_ID,
                 "an incoming X-Request-ID comes back (and is in the JSON access log line)",
                 traced.headers.get("x-request-id", ""))


def _security(report: Report, url: str, keys: Any, tokens: dict[str, str]) -> None:
    """The attacks the service must refuse, each sent over HTTP; ``security_probes_refused`` counts the refusals."""
    port = url.rsplit(":", 1)[1]
    with api_client(url, tokens["l24"], timeout=30.0) as mine, api_client(url, tokens["intruder"]) as intruder, \
            api_client(url, None) as anonymous, api_client(url, "mst_" + "0" * 43) as forged:
        secret = {"question": "What is 17 * 23? [private]", "max_steps": 3}
        run = mine.post("/runs", json=secret, headers={"Idempotency-Key": "l24-private"}).json()["id"]
        wait_result(mine, run)
        reuse = intruder.post("/runs", json={**secret, "max_steps": 4}, headers={"Idempotency-Key": "l24-private"})
        if reuse.status_code == 202:  # scoped per owner: the intruder's own key, so its own new run
            wait_result(intruder, reuse.json()["id"])
        conflict = mine.post("/runs", json={**secret, "max_steps": 4}, headers={"Idempotency-Key": "l24-private"})
        revoked_key, revoked_token = keys.create("l24-revoked")
        keys.revoke(revoked_key.id)
        with api_client(url, revoked_token) as revoked:
            probes = [
                ("no API key: POST /runs", anonymous.post("/runs", json=secret), 401),
                ("no API key: GET /runs/{id}", anonymous.get(f"/runs/{run}"), 401),
                ("forged API key", forged.get(f"/runs/{run}"), 401),
                ("revoked API key", revoked.get(f"/runs/{run}"), 401),
                ("another owner: GET /runs/{id}", intruder.get(f"/runs/{run}"), 404),
                ("another owner: GET /runs/{id}/events", intruder.get(f"/runs/{run}/events"), 404),
                ("another owner's Idempotency-Key", reuse, 202),
                ("reused Idempotency-Key, other body", conflict, 409),
                ("python tool asked by request", mine.post("/runs", json={**secret, "tools": ["python"]}), 422),
                ("Host: attacker.example (DNS rebinding)",
                 mine.get(f"/runs/{run}", headers={"Host": f"attacker.example:{port}"}), 400)]
    rows, refused = [], 0
    for name, response, expected in probes:
        # a leak: the private question, or (in the 409) the run id; a 404 may echo the id the caller sent
        leaked = "[private]" in response.text or (expected == 409 and run in response.text)
        ok = response.status_code == expected and not leaked
        refused += ok
        rows.append({"probe": name, "status": response.status_code, "expected": expected,
                     "www_authenticate": response.headers.get("www-authenticate", ""),
                     "leaks_the_run": leaked, "ok": ok})
    report.table("Security probes (each over HTTP against the running API)", rows)
    report.metric("security_probes", len(probes))
    report.metric("security_probes_refused", refused)
    report.check("security_probes", refused == len(probes), "no key, a forged or revoked key -> 401; another owner's "
                 "run -> 404; an Idempotency-Key is the owner's own and a conflicting reuse is 409 naming nothing; "
                 "the python tool by request -> 422; a foreign Host -> 400", f"{refused}/{len(probes)}")


def _fuzz(report: Report, config: Config, url: str, token: str, progress: Progress) -> Any:
    from mastery.serving.fuzz import fuzz_api

    progress.stage("schemathesis fuzzing", None)
    start = time.perf_counter()
    # with the API key, so the cases reach the inputs behind authentication (the probes cover the 401s)
    result = fuzz_api(url, max_examples=config.fuzz_examples, seed=config.seed,
                      headers={"Authorization": f"Bearer {token}"})
    report.timing("fuzz_seconds", time.perf_counter() - start)
    failures = result.failures()
    report.metric("fuzz_cases", result.cases)
    report.metric("fuzz_5xx", result.server_errors)
    report.metric("fuzz_check_failures", sum(failures.values()))
    report.check("fuzz_no_5xx", result.server_errors == 0, f"zero 5xx in {result.cases} schemathesis cases",
                 result.server_errors)
    report.check("fuzz_conforms", not failures, "no case fails a schemathesis check",
                 json.dumps(dict(failures)) if failures else "none")
    report.table("Schemathesis cases by operation", [
        {"operation": o.operation, "input": o.mode, "cases": o.cases,
         "statuses": ", ".join(f"{s}: {n}" for s, n in sorted(o.statuses.items())),
         "check failures": ", ".join(f"{k}: {v}" for k, v in o.failures.items()) or "none",
         "example failure": o.examples[0] if o.examples else ""} for o in result.operations])
    report.note(
        f"Fuzzing: schemathesis read /openapi.json from the live API and sent up to {config.fuzz_examples} requests "
        "per operation that fit the schema and as many that break it. Valid POST /runs bodies start real runs "
        "(the scripted LLM answers unknown questions directly), so 409s (a generated Idempotency-Key reused with "
        "another body) and 429s (the queue filled) are expected answers, both documented. While this lab was built "
        "the fuzzer found two mismatches between schema and validator: `max_steps`'s bounds reached the schema as "
        "unknown `ge`/`le` keys, so 237 was sent as valid and refused (fixed: the bounds now sit inside the "
        "Annotated type); and regex patterns (`^...$`, `\\S`) mean slightly different things to Python's `re` (the "
        "fuzzer) and Rust's regex (pydantic-core), so they now use explicit character classes or length limits. "
        + (f"This run: {result.server_errors} 5xx in {result.cases} cases." if result.server_errors else
           f"This run: no 5xx and no failed check in {result.cases} cases."))
    return result


def _restart(report: Report, config: Config, db: Path, backends: list[Any], prices: Any, keys: Any, token: str,
             before: dict[str, str]) -> None:
    """A new app on the same SQLite file: old runs read back unchanged; one left 'queued' reads 'interrupted'."""
    from mastery.serving.agent_runs import RunStore
    from mastery.serving.server import ServerThread

    store = RunStore(db)  # a run accepted but never executed: what a crash between POST and the worker leaves
    orphan, _ = store.create("a question the crashed server never ran", {"max_steps": 3, "timeout_s": 30.0,
                                                                          "tools": ["calculator"]}, "", None, "x",
                            owner="l24")
    store.close()
    app = _api(config, db, backends, prices, keys)
    with ServerThread(app) as api, api_client(api.url, token, timeout=30.0) as client:
        after = {i: client.get(f"/runs/{i}").json()["status"] for i in before}
        orphan_status = client.get(f"/runs/{orphan}").json()["status"]
    app.state.close()
    kept = sum(after[i] == s for i, s in before.items())
    report.metric("runs_kept_after_restart", kept)
    report.check("restart_keeps_runs", kept == len(before) and orphan_status == "interrupted",
                 "after a restart every finished run reads the same; an in-flight one reads interrupted",
                 f"{kept}/{len(before)}, orphan {orphan_status}")


def _embedded(report: Report, config: Config, tmp: Path, prices: Any, keys: Any, token: str,
              progress: Progress) -> None:
    """Real runs: the API over the embedded LLM (a running `mastery llm serve`, else one started here)."""
    from mastery.llm.client import open_client
    from mastery.llm.settings import load_settings
    from mastery.serving.agent_runs import BackendSpec
    from mastery.serving.server import ServerThread

    progress.stage("embedded LLM runs", len(EMBEDDED_QUESTIONS))
    # open_client: the configured backend, a running `mastery llm serve`, else an embedded server for this block;
    # the API gets its URL and model name and talks to it through its own clients
    with open_client(load_settings()) as llm:
        where = llm.device
        backends = [BackendSpec("embedded", llm.base_url, llm.model, timeout_s=config.embedded_timeout_s)]
        app = _api(config, tmp / "embedded.db", backends, prices, keys, agent_mode="text")
        rows, answered, correct = [], 0, 0
        with _quiet(), ServerThread(app) as api, api_client(api.url, token, timeout=600.0) as client:
            ids = [client.post("/runs", json={"question": q, "tools": ["calculator"], "max_steps": 4,
                                              "timeout_s": 300}).json()["id"] for q, _ in EMBEDDED_QUESTIONS]
            for i, (run_id, (question, expected)) in enumerate(zip(ids, EMBEDDED_QUESTIONS, strict=True)):
                _, final = wait_result(client, run_id)
                ok = final["status"] == "answered" and expected in (final["answer"] or "").replace(",", "")
                answered += final["status"] == "answered"
                correct += ok
                rows.append({"question": question, "status": final["status"], "answer": (final["answer"] or "")[:80],
                             "correct": ok, "steps": len(final["steps"]),
                             "tools": ", ".join(s["action"] for s in final["steps"] if s["action"]),
                             "tokens": final["cost"]["total_tokens"], "wall_s": round(final["wall_s"] or 0, 2)})
                report.timing(f"embedded_run_s_{i}", final["wall_s"] or 0.0)
                progress.step()
        app.state.close()
    n = len(EMBEDDED_QUESTIONS)
    report.device += f"; embedded LLM: {where}"
    report.table(f"Embedded LLM runs through the API ({where})", rows)
    report.metric("embedded_answered_rate", answered / n)
    report.metric("embedded_correct_rate", correct / n)
    report.metric("embedded_tokens", sum(r["tokens"] for r in rows))
    ended = sum(r["status"] in ("answered", "max_steps", "gave_up") for r in rows)
    report.check("embedded_runs_complete", ended == n, "every real run ends with the agent's own verdict "
                 "(answered, max_steps or gave_up), none failed, timed out or lost in the service", f"{ended}/{n}")
    report.check("embedded_runs", answered / n >= config.min_embedded_answered,
                 f"at least {config.min_embedded_answered:.0%} of the real runs answer", f"{answered}/{n}")
    report.note(f"Embedded runs: {n} arithmetic questions posted at once to the API backed by Qwen2.5-Coder-0.5B "
                f"(Q4_K_M, llama.cpp) on {where}; {answered} answered, {correct} with the right number. These go "
                "through the same retries, deadline, SSE and SQLite store as the scripted runs; the model, not the "
                "service, decides how good the answers are (see L21): its usual failure is to call the calculator "
                "again on its own result until the agent stops the loop (gave_up), or to name the expression as the "
                "tool. The count varies between recordings (1 to 2 of 4 answered so far): the runs are posted at once "
                "to a llama.cpp server shared with other work, and batched evaluation is not bit-identical across "
                "batch compositions, so these numbers are not fixed by the seed the way the scripted ones are.")


def _figure(report: Report, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["scenario"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax1.barh(names, [r["latency_s"] for r in rows], color=["C0" if r["status"] == "answered" else "C3" for r in rows])
    ax1.set_xlabel("run latency, POST to final SSE event (s)")
    ax1.invert_yaxis()
    ax1.set_title("Run latency by scenario (red: timed out, as intended)")
    y = np.arange(len(rows))
    for k, (field, label) in enumerate([("llm_retries", "LLM retries"), ("fallbacks", "fallback calls"),
                                        ("tool_retries", "tool retries")]):
        ax2.barh(y + (k - 1) * 0.27, [r[field] for r in rows], height=0.27, label=label)
    ax2.set_yticks(y, names)
    ax2.invert_yaxis()
    ax2.set_xlabel("count")
    ax2.set_title("Retries and fallbacks per run")
    ax2.legend()
    fig.tight_layout()
    report.figure("scenarios", fig)
    plt.close(fig)


class _quiet:
    """httpx logs every request and uvicorn a traceback per dropped connection: keep them out of the lab log."""

    names = ("httpx", "httpcore", "uvicorn.error", "mastery.llm.client", "mastery.agents.resilience",
             "mastery.serving.access", "mastery.serving.agent", "mastery.agents.react", "mastery.serving.auth")

    def __enter__(self) -> None:
        self.levels = [(lg, lg.level) for lg in map(logging.getLogger, self.names)]
        for lg, _ in self.levels:
            lg.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        for lg, level in self.levels:
            lg.setLevel(level)
