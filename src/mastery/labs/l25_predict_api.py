"""L25 · FastAPI and serving: a prediction endpoint for the L2 Titanic model, with a validated schema,
a safely loaded artifact, structured logs, fuzzing from its OpenAPI schema and a latency measurement.

The lab trains and saves the model (skops + sidecar), attacks the artifact (tampered bytes, a foreign
type, a wrong pin), starts the real server as a separate process on 127.0.0.1, and talks to it only
over HTTP: good requests, one bad request per field, schemathesis fuzzing, sequential and concurrent load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.eval.predict_fixtures import BAD_REQUESTS, PASSENGERS

TRACE_ID = "l25-trace-0001"


REQUIRES: tuple[str, ...] = ("titanic",)  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    folds: Annotated[int, Interval(ge=2, le=50)] = 5  # cross-validation folds for the model's recorded metrics
    c: Annotated[float, Interval(gt=0, le=1e6)] = 1.0  # inverse L2 strength of the logistic regression
    # schemathesis cases per operation and mode (valid / invalid input)
    fuzz_examples: Annotated[int, Interval(ge=1, le=100_000)] = 300
    sequential_requests: Annotated[int, Interval(ge=1, le=1_000_000)] = 500
    concurrent_requests: Annotated[int, Interval(ge=1, le=100_000)] = 2000
    concurrency: Annotated[int, Interval(ge=1, le=256)] = 32
    # stop sending after this long, whatever the count
    load_max_seconds: Annotated[float, Interval(gt=0, le=3600)] = 120.0
    mlflow_round_trip: bool = True  # log the artifact to a throwaway MLflow store and serve-load it back
    min_cv_f1: Fraction = 0.7
    max_error_rate: Fraction = 0.0  # failed requests allowed under load
    # concurrent p99 bound: generous, this is a shared 2-core machine
    max_p99_ms: Annotated[float, Interval(gt=0, le=1e6)] = 1000.0
    register: bool = False  # save the served model to the model registry as titanic-logreg
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("fuzz_5xx", "bad_requests_rejected_naming_field", "cv_f1")

PRESETS = {
    "tiny": Config(folds=3, fuzz_examples=20, sequential_requests=40, concurrent_requests=120, concurrency=8,
                   load_max_seconds=30.0, mlflow_round_trip=False, max_p99_ms=5000.0),
    "full": Config(register=True),
}


def run(config: Config, progress: Progress) -> Report:
    # Load the native libraries first: threadpool_limits only reaches those already loaded.
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    import mastery.tabular.titanic  # noqa: F401

    with threadpool_limits(limits=1), tempfile.TemporaryDirectory(prefix="l25-") as tmp:
        return _run(config, progress, Path(tmp))


def _run(config: Config, progress: Progress, tmp: Path) -> Report:
    from mastery.core.runtime import best_of
    from mastery.serving.artifacts import load_artifact
    from mastery.serving.server import ServerProcess
    from mastery.serving.titanic_model import predict_proba, save_titanic, train_titanic

    report = new_report("l25", config)
    report.device = "cpu (scikit-learn logistic regression: no GPU path; server and client on 127.0.0.1)"
    progress.params({"folds": config.folds, "C": config.c, "fuzz_examples": config.fuzz_examples,
                     "concurrency": config.concurrency})

    progress.stage("train and save", None)
    start = time.perf_counter()
    trained = train_titanic(seed=config.seed, folds=config.folds, c=config.c)
    report.timing("train_seconds", time.perf_counter() - start)
    model_path = tmp / "titanic.skops"
    meta = save_titanic(trained, model_path)
    progress.artifact(str(model_path))
    for key in ("cv_f1", "cv_roc_auc", "cv_accuracy", "train_accuracy"):
        if key in trained.training:
            report.metric(key, float(trained.training[key]))
    report.check("cv_f1", report.metrics["cv_f1"] >= config.min_cv_f1,
                 f"served model's cross-validated F1 >= {config.min_cv_f1}", report.metrics["cv_f1"])
    start = time.perf_counter()
    loaded = load_artifact(model_path)
    report.timing("artifact_load_seconds", time.perf_counter() - start)
    bodies = list(PASSENGERS.values())
    local = predict_proba(trained.model, bodies)
    # What the server cannot go below: scoring one passenger in-process (pandas frame + pipeline).
    report.timing("model_predict_ms", 1000 * best_of(lambda: predict_proba(loaded.model, bodies[:1]), 50))
    report.metric("roundtrip_max_abs_diff", float(abs(predict_proba(loaded.model, bodies) - local).max()))
    report.check("artifact_round_trip", report.metrics["roundtrip_max_abs_diff"] == 0.0,
                 "the skops-loaded pipeline predicts exactly what the trained one does",
                 report.metrics["roundtrip_max_abs_diff"])
    _artifact_attacks(report, config, trained.model, model_path, tmp, progress)
    if config.register:
        _register(report, model_path, local)

    progress.stage("serve", None)
    log_path = tmp / "server.log"
    start = time.perf_counter()
    with _quiet("httpx", "httpcore"), ServerProcess(model_path, log_path) as server:
        report.timing("server_start_seconds", time.perf_counter() - start)
        _good_requests(report, server.url, meta, local)
        _bad_requests(report, server.url)
        fuzz = _fuzz(report, config, server.url, progress)
        sequential, concurrent = _latency(report, config, server.url, progress)
    _server_log(report, log_path)
    _figure(report, sequential, concurrent, fuzz)
    report.note(
        f"The model is L2's pipeline (title, family size and is-alone features, median/most-frequent imputation, "
        f"one-hot, scaling, logistic regression C={config.c:g}), cross-validated on {config.folds} stratified "
        f"folds (F1 {report.metrics['cv_f1']:.3f}, ROC-AUC {report.metrics['cv_roc_auc']:.3f}) and refitted on "
        f"all 891 passengers. It is saved with skops (no pickle) as version {meta['version']} (the sha256 prefix "
        "of the file) with a JSON sidecar holding the digest, the request schema, the CV metrics and the library "
        "versions. The server is `mastery predict serve --artifact ...` in its own process on 127.0.0.1, started "
        "and stopped by the lab; every exchange below went over HTTP."
    )
    # The results index lists the first few metrics: put the headline numbers first.
    headline = ("fuzz_5xx", "fuzz_cases", "bad_requests_rejected_naming_field", "artifact_attacks_refused", "cv_f1",
                "cv_roc_auc")
    report.metrics = {**{k: report.metrics[k] for k in headline}, **report.metrics}
    return report


def _register(report: Report, model_path: Path, local: Any) -> None:
    """The served artifact (skops file + sidecar, unchanged bytes) as the next titanic-logreg version."""
    from mastery.ops.registry_loaders import note_registered
    from mastery.serving.titanic_model import register_titanic

    ref = register_titanic(model_path, metrics={k: report.metrics[k] for k in ("cv_f1", "cv_roc_auc", "cv_accuracy")
                                                if k in report.metrics},
                           probe={"input": list(PASSENGERS.values()), "output": [float(p) for p in local]},
                           lab_config=report.config)
    note_registered(report, ref)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """httpx logs every request at INFO: thousands of lines under load. Raise those loggers to WARNING for a while."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _artifact_attacks(report: Report, config: Config, model: Any, model_path: Path, tmp: Path,
                      progress: Progress) -> None:
    import builtins

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from mastery.serving.artifacts import (
        ArtifactError,
        copy_artifact,
        load_artifact,
        load_from_mlflow,
        log_to_mlflow,
        save_artifact,
    )

    progress.stage("artifact attacks", None)
    tampered = copy_artifact(model_path, tmp / "tampered.skops")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the zip
    tampered.write_bytes(bytes(data))
    # A file that honestly records its own sha256 but asks skops to build builtins.eval: the sidecar
    # cannot help (an attacker writes both files); the code's allow-list refuses it.
    evil = make_pipeline(FunctionTransformer(func=builtins.eval), model)
    save_artifact(evil, tmp / "evil.skops", name="titanic-survival")
    attempts = [
        ("one byte flipped in the model file", lambda: load_artifact(tampered)),
        ("a builtins.eval step, sidecar consistent", lambda: load_artifact(tmp / "evil.skops")),
        ("the right file, pinned to another version", lambda: load_artifact(model_path, expected_sha256="0" * 12)),
        ("sidecar deleted", lambda: load_artifact(_without_sidecar(model_path, tmp))),
    ]
    rows, refused = [], 0
    for what, attempt in attempts:
        try:
            attempt()
            outcome = "LOADED"
        except ArtifactError as exc:
            outcome = str(exc)
            refused += 1
        rows.append({"artifact": what, "outcome": outcome})
    if config.mlflow_round_trip:
        start = time.perf_counter()
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        run_id = log_to_mlflow(model_path, uri, experiment="l25")
        back = load_from_mlflow(run_id, uri, tmp / "from-mlflow")
        same = back.meta["sha256"] == load_artifact(model_path).meta["sha256"]
        report.timing("mlflow_round_trip_seconds", time.perf_counter() - start)
        rows.append({"artifact": "logged to MLflow (sqlite store), downloaded, loaded",
                     "outcome": f"loaded, same sha256: {same}"})
        report.check("mlflow_round_trip", same, "the artifact downloaded from an MLflow run loads, same sha256",
                     str(same))
    report.table("Loading artifacts: what is refused", rows)
    report.metric("artifact_attacks_refused", refused)
    report.check("artifact_attacks_refused", refused == len(attempts),
                 "tampered, untrusted-type, wrongly pinned and sidecar-less artifacts are all refused",
                 f"{refused}/{len(attempts)}")


def _without_sidecar(model_path: Path, tmp: Path) -> Path:
    lonely = tmp / "lonely.skops"
    lonely.write_bytes(model_path.read_bytes())
    return lonely


def _good_requests(report: Report, url: str, meta: dict[str, Any], local: Any) -> None:
    import httpx

    with httpx.Client(base_url=url, trust_env=False, timeout=10.0) as client:
        health, info = client.get("/health").json(), client.get("/model").json()
        version_ok = health["model_version"] == info["version"] == meta["version"]
        report.check("served_version", version_ok, "/health and /model report the saved artifact's version",
                     info["version"])
        rows, diffs = [], []
        for (name, body), p_local in zip(PASSENGERS.items(), local, strict=True):
            answer = client.post("/predict", json=body).json()
            diffs.append(abs(answer["probability"] - float(p_local)))
            rows.append({"passenger": name, "prediction": answer["label"], "P(survived)": answer["probability"],
                         "confidence": answer["confidence"], "model_version": answer["model_version"]})
        batch = client.post("/predict/batch", json={"passengers": list(PASSENGERS.values())}).json()
        diffs += [abs(b["probability"] - float(p)) for b, p in zip(batch["predictions"], local, strict=True)]
        traced = client.post("/predict", json=PASSENGERS["required fields only"], headers={"X-Request-ID": TRACE_ID})
    report.table("Predictions over HTTP", rows)
    report.metric("served_max_abs_diff", max(diffs))
    report.check("served_matches_local", max(diffs) < 1e-12,
                 "/predict and /predict/batch return the in-process model's probabilities", max(diffs))
    echoed = traced.headers.get("x-request-id") == TRACE_ID == traced.json()["request_id"]
    report.check("request_id_echoed", echoed, "an incoming X-Request-ID comes back in the header and the body",
                 traced.headers.get("x-request-id", ""))


def _bad_requests(report: Report, url: str) -> None:
    import httpx

    rows, good = [], 0
    with httpx.Client(base_url=url, trust_env=False, timeout=10.0) as client:
        for what, path, body, status, field in BAD_REQUESTS:
            if isinstance(body, bytes):
                response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            else:
                response = client.post(path, json=body)
            error = response.json().get("error", "")
            fields = [d["field"] for d in response.json().get("detail", [])]
            ok = response.status_code == status and (field is None or (field in fields and field in error))
            good += ok
            rows.append({"request": what, "status": response.status_code, "error": error[:140], "ok": ok})
    report.table("Bad requests: status and the error line", rows)
    report.metric("bad_requests", len(BAD_REQUESTS))
    report.metric("bad_requests_rejected_naming_field", good)
    report.check("bad_requests_rejected", good == len(BAD_REQUESTS),
                 "every bad request gets the expected 4xx and its error names the bad field", f"{good}/{len(rows)}")


def _fuzz(report: Report, config: Config, url: str, progress: Progress) -> Any:
    from mastery.serving.fuzz import CHECKS, fuzz_api

    progress.stage("schemathesis fuzzing", None)
    start = time.perf_counter()
    result = fuzz_api(url, max_examples=config.fuzz_examples, seed=config.seed)
    report.timing("fuzz_seconds", time.perf_counter() - start)
    positive, negative = result.statuses("positive"), result.statuses("negative")
    failures = result.failures()
    report.metric("fuzz_cases", result.cases)
    report.metric("fuzz_5xx", result.server_errors)
    report.metric("fuzz_check_failures", sum(failures.values()))
    report.metric("fuzz_positive_2xx_rate", sum(n for s, n in positive.items() if 200 <= s < 300)
                  / max(1, sum(positive.values())))
    report.metric("fuzz_negative_4xx_rate", sum(n for s, n in negative.items() if 400 <= s < 500)
                  / max(1, sum(negative.values())))
    report.check("fuzz_no_5xx", result.server_errors == 0, f"zero 5xx in {result.cases} schemathesis cases",
                 result.server_errors)
    report.check("fuzz_conforms", not failures, "no case fails a schemathesis check (" + ", ".join(CHECKS) + ")",
                 json.dumps(dict(failures)) if failures else "none")
    report.table("Schemathesis cases by operation", [
        {"operation": o.operation, "input": o.mode, "cases": o.cases,
         "statuses": ", ".join(f"{s}: {n}" for s, n in sorted(o.statuses.items())),
         "check failures": ", ".join(f"{k}: {v}" for k, v in o.failures.items()) or "none",
         "example failure": o.examples[0] if o.examples else ""}
        for o in result.operations])
    report.note(
        f"Fuzzing: schemathesis read /openapi.json from the live server and generated up to {config.fuzz_examples} "
        "requests per operation that fit the schema and as many that break it (wrong types, out-of-range numbers, "
        "missing or extra fields, non-JSON bodies), from a fixed seed (the counts repeat; a few generated "
        "invalid bodies can differ between processes). It found two real mismatches "
        "while this lab was built: JSON Schema's `integer` accepts 3.0 but strict pydantic did not (fixed: whole "
        "floats are accepted), and non-UTF-8 bodies got an undocumented 400 (now documented). "
        + (f"In this run none of the {result.cases} cases produced a 5xx: bad input is refused by the schema "
           "before it reaches the model, and the numeric bounds keep every accepted value finite."
           if result.server_errors == 0 else
           f"In this run {result.server_errors} cases produced a 5xx: a bug, see the table for a reproduction.")
    )
    return result


def _latency(report: Report, config: Config, url: str, progress: Progress) -> tuple[Any, Any]:
    from mastery.serving.load import concurrent_load, sequential_latency

    progress.stage("latency", None)
    payloads = list(PASSENGERS.values())
    seq = sequential_latency(url + "/predict", payloads, config.sequential_requests)
    conc = concurrent_load(url + "/predict", payloads, config.concurrent_requests, config.concurrency,
                           max_seconds=config.load_max_seconds)
    for prefix, res in (("sequential", seq), ("concurrent", conc)):
        summary = res.summary()
        for key in ("p50_ms", "p99_ms", "mean_ms", "requests_per_s", "error_rate"):
            report.timing(f"{prefix}_{key}", float(summary[key]))
    report.table("Latency of POST /predict (client-side, ms)", [
        {"load": "sequential (1 client)" if r is seq else f"concurrent ({r.concurrency} workers)",
         **{k: v for k, v in r.summary().items() if k not in ("concurrency", "stopped_early")}}
        for r in (seq, conc)])
    errors = max(seq.error_rate, conc.error_rate)
    report.check("load_error_rate", errors <= config.max_error_rate and not conc.stopped_early,
                 f"error rate <= {config.max_error_rate:g} and all {config.concurrent_requests} concurrent requests "
                 f"sent within {config.load_max_seconds:g} s", errors)
    report.check("load_p99", conc.percentile(99) <= config.max_p99_ms,
                 f"concurrent p99 <= {config.max_p99_ms:g} ms", conc.percentile(99))
    report.note(
        f"Latency: {seq.n_sent} sequential requests over one keep-alive connection (p50 "
        f"{seq.percentile(50):.1f} ms, p99 {seq.percentile(99):.1f} ms), of which scoring itself takes "
        f"{report.timings['model_predict_ms']:.1f} ms in-process (a one-row pandas frame through the scikit-learn "
        "pipeline's column transformers: fixed overhead, not arithmetic); the rest is HTTP, JSON and validation. "
        f"Then {conc.n_sent} requests from {conc.concurrency} concurrent "
        f"workers (p50 {conc.percentile(50):.1f} ms, p99 {conc.percentile(99):.1f} ms, "
        f"{conc.requests_per_second:.0f} requests/s against {seq.requests_per_second:.0f}/s one at a time). Under "
        "concurrency a request mostly waits its turn: one uvicorn process serves one request's scoring at a time "
        "(the GIL), so latency is roughly the queue length times the service time. Throughput does not rise with "
        "concurrency and may fall: the client's event loop, the server's thread pool and every other process on "
        f"this {_cores()}-core machine compete for the same cores. More uvicorn worker processes (on more cores) or "
        "sending passengers in batches (/predict/batch scores up to 100 in one pipeline call) is how to raise it. "
        "These are wall-clock numbers (timings), not metrics."
    )
    return seq, conc


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _server_log(report: Report, log_path: Path) -> None:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            parsed.append(None)
    records = [p for p in parsed if isinstance(p, dict)]
    traced = [r for r in records if r.get("request_id") == TRACE_ID]
    all_json = len(records) == len(lines) and bool(lines)
    report.check("logs_structured", all_json and len(traced) == 1 and traced[0].get("status") == 200,
                 f"every server log line is JSON; the request sent with X-Request-ID {TRACE_ID} is logged once",
                 f"{len(records)}/{len(lines)} JSON lines, {len(traced)} with the id")
    if traced:
        report.table("The access-log line of the traced request", [{k: str(v) for k, v in traced[0].items()}])
    report.timing("server_log_lines", len(lines))


def _figure(report: Report, seq: Any, conc: Any, fuzz: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    nice = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000]
    for ax, res, title in ((axes[0], seq, "sequential: 1 request at a time"),
                           (axes[1], conc, f"concurrent: {conc.concurrency} workers")):
        lat = res.latencies_ms
        lo, hi = max(lat.min(), 0.1) * 0.9, lat.max() * 1.1
        ax.hist(lat, bins=np.logspace(np.log10(lo), np.log10(hi), 40), color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator([t for t in nice if lo <= t <= hi] or [round(lo, 1)]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        for q, style in ((50, "-"), (99, "--")):
            value = res.percentile(q)
            ax.axvline(value, color="tab:red", linestyle=style, label=f"p{q} {value:.1f} ms")
        ax.set(xlabel="latency (ms, log scale)", ylabel="requests",
               title=f"POST /predict, {title}\n{res.n_sent} requests, {res.requests_per_second:.0f}/s, "
                     f"{res.n_errors} errors")
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    # Fuzzing outcome: status codes of the valid (positive) and invalid (negative) generated requests.
    ax = axes[2]
    codes = sorted(set(fuzz.statuses()))
    x = np.arange(len(codes))
    for offset, mode, color in ((-0.2, "positive", "tab:green"), (0.2, "negative", "tab:orange")):
        counts = fuzz.statuses(mode)
        ax.bar(x + offset, [counts.get(c, 0) for c in codes], width=0.4, color=color,
               label=f"{mode} ({'fits' if mode == 'positive' else 'breaks'} the schema)")
    ax.set_xticks(x, [str(c) for c in codes])
    ax.set(xlabel="HTTP status", ylabel="schemathesis cases",
           title=f"Fuzzing: {fuzz.cases} cases, {fuzz.server_errors} server errors (5xx)")
    ax.set_ylim(0, max(fuzz.statuses().values()) * 1.3)  # room for the legend above the bars
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    report.figure("latency_histogram", fig)
