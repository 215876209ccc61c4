"""``mastery predict train|serve`` (the Titanic model over HTTP) and ``mastery agent serve`` (the agent API).

:func:`register` only builds parsers; FastAPI, uvicorn, skops and scikit-learn load when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _default_tracking_uri() -> str:
    from mastery.ops.tracking import DEFAULT_TRACKING_DIR, tracking_uri_for

    DEFAULT_TRACKING_DIR.mkdir(parents=True, exist_ok=True)
    return tracking_uri_for(DEFAULT_TRACKING_DIR)


def cmd_train(args: argparse.Namespace) -> int:
    from mastery.serving.artifacts import log_to_mlflow, sidecar_path
    from mastery.serving.titanic_model import save_titanic, train_titanic

    trained = train_titanic(seed=args.seed, folds=args.folds)
    meta = save_titanic(trained, Path(args.artifact))
    _out(f"{meta['name']} version {meta['version']}: CV F1 {meta['training']['cv_f1']:.3f}, ROC-AUC "
         f"{meta['training']['cv_roc_auc']:.3f} -> {args.artifact} (+ {sidecar_path(args.artifact).name})")
    if args.track:
        uri = args.tracking_uri or _default_tracking_uri()
        run_id = log_to_mlflow(Path(args.artifact), uri)
        _out(f"logged to MLflow run {run_id} ({uri}); serve it with: mastery predict serve --artifact runs:/{run_id}")
    return 0


def _load(args: argparse.Namespace, tmp: str) -> Any:
    """--model NAME[@VERSION] from the model registry, or --artifact PATH / runs:/<run id>."""
    from mastery.serving.artifacts import load_artifact, load_from_mlflow

    if args.model:
        from mastery.serving.titanic_model import load_registered

        loaded = load_registered(args.model)
        if args.sha256 and not loaded.meta["sha256"].startswith(args.sha256.lower()):
            raise MasteryError(f"--model {args.model}: sha256 {loaded.meta['sha256'][:12]}... is not the pinned "
                               f"{args.sha256[:12]}...")
        return loaded
    if args.artifact.startswith("runs:/"):
        run_id = args.artifact.removeprefix("runs:/").strip("/").split("/")[0]
        if not run_id:
            raise MasteryError(f"--artifact {args.artifact!r}: expected runs:/<run id>")
        return load_from_mlflow(run_id, args.tracking_uri or _default_tracking_uri(), tmp, expected_sha256=args.sha256)
    return load_artifact(Path(args.artifact), expected_sha256=args.sha256)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler: unwinds the stack like KeyboardInterrupt, so every ``with`` and
    ``finally`` on the way (the temporary folder) runs before the process exits."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` while the block runs (main thread only).

    uvicorn catches SIGTERM, shuts down gracefully, restores the handler it found and raises the signal
    again; with Python's default handler that kills the process on the spot, skipping the cleanup of
    everything around ``uvicorn.run``. With this handler the re-raised signal unwinds instead. A SIGTERM
    before uvicorn starts (while the model loads) unwinds the same way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_predict(args: argparse.Namespace) -> int:
    import uvicorn

    from mastery.serving.logs import use_json_logs
    from mastery.serving.predict_api import create_app

    use_json_logs(logging.getLogger().level or logging.INFO)  # every line on stderr is one JSON object
    log = logging.getLogger(__name__)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the API has no authentication", args.host)
    try:
        with _sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="mastery-serve-") as tmp:
            loaded = _load(args, tmp)
            # Built in this process even with workers: a model or engine that cannot serve fails here, once,
            # with one line and exit code 2, before any worker starts.
            app = create_app(loaded, scoring_threads=args.scoring_threads, engine=args.engine or "auto")
            if args.workers == 1:
                # log_config=None keeps the JSON handlers; the middleware writes the access log.
                uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=5)
            else:
                _serve_workers(args, loaded, app.state.engine)
                log.info("stopped; temporary files removed")
    except _Terminated:
        log.info("stopped by SIGTERM; temporary files removed")
    return 0


def _serve_workers(args: argparse.Namespace, loaded: Any, engine: str) -> None:
    """``args.workers`` uvicorn processes sharing one listening socket, each with its own copy of the model.

    uvicorn starts workers with multiprocessing's spawn and pickles its Config into each; the app factory
    travels there as ``functools.partial(worker_app, source)``, so every worker loads the same verified
    bytes (pinned by sha256) with no environment variable in between. uvicorn's supervisor takes over
    SIGTERM and SIGINT: it stops the workers and returns, and the ``with`` around this call cleans up.
    """
    import functools

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from mastery.serving.predict_api import worker_app

    source = {"sha256": loaded.meta["sha256"], "engine": engine, "scoring_threads": args.scoring_threads,
              "log_level": logging.getLogger().level or logging.INFO}
    if loaded.meta.get("registry_ref"):
        source["model"] = loaded.meta["registry_ref"]  # name@version: the exact registered model
    else:
        source["artifact"] = str(Path(loaded.path).resolve())
    config = uvicorn.Config(functools.partial(worker_app, source), factory=True, host=args.host, port=args.port,
                            workers=args.workers, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    logging.getLogger(__name__).info("starting %d worker processes (%s engine) on %s:%d", args.workers, engine,
                                     args.host, args.port)
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def cmd_agent(args: argparse.Namespace) -> int:
    import uvicorn

    from mastery.agents.resilience import load_price_table
    from mastery.llm.client import embedded_alias, server_healthy
    from mastery.llm.settings import load_settings
    from mastery.serving.agent_api import create_app, default_settings
    from mastery.serving.auth import KeyStore, trusted_hosts
    from mastery.serving.logs import use_json_logs

    use_json_logs(logging.getLogger().level or logging.INFO)
    log = logging.getLogger(__name__)
    keys = KeyStore(args.keys_file) if args.keys_file else KeyStore.from_settings()
    if not keys.active_owners():  # refuse rather than serve an API nobody can use (or one left open)
        raise MasteryError(f"no API key in {keys.path}: create one with 'mastery keys create --owner NAME"
                           + (f" --keys-file {args.keys_file}'" if args.keys_file else "'"))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: API keys travel in clear text (no TLS); put a TLS proxy in front", args.host)
    llm = load_settings(backend=args.backend, base_url=args.llm_url, model=args.model, threads=args.threads,
                        ctx=args.ctx)
    primary_url = llm.url
    if llm.backend == "embedded" and not llm.base_url and not server_healthy(primary_url):
        raise MasteryError(f"no LLM server at {primary_url}: start one with 'mastery llm serve' (or pass --llm-url)")
    model = embedded_alias(llm) if llm.backend == "embedded" else llm.model_name
    settings = default_settings(args.db, primary_url, model, fallback_url=args.fallback_url,
                                fallback_model=args.fallback_model, prices=load_price_table(args.price_table),
                                llm_timeout_s=args.timeout if args.timeout is not None else 60.0,
                                workers=args.workers, queue_limit=args.queue, agent_mode=args.mode,
                                allow_python=args.allow_python, keys=keys,
                                allowed_hosts=trusted_hosts(args.host, args.allowed_host))
    app = create_app(settings)
    log.info("agent API keys: %s (owners: %s); clients send 'Authorization: Bearer <token>' (new key: mastery keys "
             "create --owner NAME); Host must be one of %s; tools: %s", keys.path, ", ".join(keys.active_owners()),
             ", ".join(settings.allowed_hosts), ", ".join(t.name for t in settings.runner.tools))
    log.info("agent API: primary %s (%s), fallback %s, runs in %s", primary_url, model, args.fallback_url or "none",
             args.db)
    try:
        with _sigterm_unwinds():  # without it uvicorn's re-raised SIGTERM skips close() (runs left mid-state)
            uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                        timeout_graceful_shutdown=5)
    except _Terminated:
        log.info("stopped by SIGTERM; runs database closed")
    finally:
        app.state.close()
    return 0


def _add_server_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help="port (default %(default)s)")


def add_model_source(p: argparse.ArgumentParser) -> None:
    """The options :func:`_load` reads: ``--model`` (registry name) or ``--artifact`` (file or runs:/), with
    ``--sha256`` and ``--tracking-uri``; every command that loads the Titanic model takes the same ones."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a trained model's registry name, NAME or NAME@VERSION (e.g. titanic-logreg; "
                                       "see 'mastery models list')")
    which.add_argument("--artifact", help="a .skops file with its .skops.json sidecar, or runs:/<run id> of an "
                                          "MLflow run that logged one")
    p.add_argument("--sha256", default=None, help="refuse the model unless the file's sha256 starts with this "
                                                  "(e.g. the 12-digit version)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for runs:/ (default sqlite:///runs/mlflow.db)")


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``mastery predict train|serve``; ``mastery agent serve`` is added by :func:`add_agent_serve`."""
    predict = subparsers.add_parser("predict", help="the Titanic prediction API: train a model, serve POST /predict")
    sub = predict.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("serve", help="serve POST /predict for a trained Titanic model (docs at /docs)")
    add_model_source(p)
    _add_server_options(p, 8000)
    p.add_argument("--scoring-threads", type=int, default=1, choices=range(1, 65), metavar="N",
                   help="sklearn engine: requests scored at once (default 1: scoring holds the GIL, more threads "
                        "only contend)")
    p.add_argument("--engine", choices=("onnx", "sklearn"), default=None,
                   help="scoring engine (default: onnx when the pipeline converts to ONNX and matches it, else "
                        "sklearn; the choice is logged); onnx refuses to start without it")
    p.add_argument("--workers", type=int, default=1, choices=range(1, 65), metavar="N",
                   help="server processes sharing the port, each with its own copy of the model (default 1); "
                        "about one per core")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train the Titanic pipeline and save it as a skops artifact")
    p.add_argument("--artifact", required=True, help="file to write, e.g. models/titanic.skops (sidecar: +.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the recorded metrics")
    p.add_argument("--track", action="store_true", help="also log the artifact to an MLflow run")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default sqlite:///runs/mlflow.db)")
    p.set_defaults(func=cmd_train)

    from mastery.ops.cli import add_batch_score_command  # the scoring itself: mastery.ops.batch_score

    add_batch_score_command(sub)


def add_agent_serve(sub: Any) -> None:
    """``mastery agent serve``: the agent API (the ``agent`` noun lives in :mod:`mastery.agents.cli`)."""
    from mastery.llm.cli import _add_llm_options

    p = sub.add_parser("serve", help="serve the ReAct agent: POST /runs, GET /runs/{id}, SSE at /runs/{id}/events")
    _add_server_options(p, 8010)
    p.add_argument("--db", default="runs/agent-api.db", help="SQLite file holding every run (default %(default)s)")
    _add_llm_options(p)
    p.add_argument("--fallback-url", default=None, help="a second OpenAI-compatible URL used when the primary fails")
    p.add_argument("--fallback-model", default=None, help="the fallback's model name (default: the primary's)")
    p.add_argument("--price-table", default=None, help="JSON/TOML prices per 1M tokens (default: "
                                                       "MASTERY_PRICE_TABLE, else every model costs 0)")
    p.add_argument("--workers", type=int, default=2, choices=range(1, 65), metavar="N", help="runs at once")
    p.add_argument("--mode", choices=("text", "native", "auto"), default="text",
                   help="text ReAct (default; best on small local models) or OpenAI function calling")
    p.add_argument("--queue", type=int, default=16, choices=range(0, 1001), metavar="N",
                   help="runs waiting for a worker before POST /runs answers 429")
    p.add_argument("--keys-file", default=None, help="API key file (default MASTERY_API_KEYS_FILE, else "
                                                     "<cache>/api-keys.json); see 'mastery keys create'")
    p.add_argument("--allow-python", action="store_true",
                   help="offer the python tool (runs client-sent code in the sandbox); off by default, and no "
                        "request can turn it on")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host name to answer to (repeatable; default: 127.0.0.1, localhost, ::1 and --host)")
    p.set_defaults(func=cmd_agent)
