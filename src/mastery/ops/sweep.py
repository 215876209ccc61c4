"""Grid sweeps over a lab's config: every combination runs the lab and is logged to MLflow.

A sweep is a grid of ``--set`` overrides (``--param lr=1e-3,1e-2 --param epochs=1,2`` is four trials).
Every combination is built and validated through the lab's ``Config`` exactly as ``--set`` is, before
anything runs, so a bad value costs one line and no compute. Each trial then runs the lab with
:func:`mastery.core.labs.run_lab` and logs to MLflow through the same :class:`MlflowProgress` as
``labs run --track`` (params, per-epoch metrics, final metrics, report.json), tagged with the sweep's id.

Two engines run the same trial function:

- ``local``: one trial after another in this process;
- ``ray``: Ray Tune, a function trainable over ``tune.grid_search`` values, 1 CPU per trial, as many at
  once as the cluster has CPUs. The trial logs to MLflow itself (not Tune's MLflow callback), so both
  engines write identical runs, and Tune's own result files are turned off.

The best trial is the one with the best ``metric`` (default: the lab's first HEADLINE number) among the
trials that finished; ``mode`` max or min (default: min for names that read as a loss or an error).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mastery.core.errors import ConfigError

log = logging.getLogger(__name__)

MAX_TRIALS = 256  # a grid beyond this is a typo more often than a plan
ENGINES = ("local", "ray")
_LOWER_IS_BETTER = re.compile(r"loss|rmse|mse|mae|error|perplexity|latency|_ms$|_s$")


@dataclass(frozen=True)
class Trial:
    params: dict[str, str]  # the swept values, as given on the command line
    metrics: dict[str, float] = field(default_factory=dict)
    passed: bool = False  # every check of the lab passed
    run_id: str = ""  # the MLflow run
    wall_time_s: float = 0.0
    error: str = ""  # set when the trial raised


@dataclass(frozen=True)
class SweepResult:
    lab: str
    preset: str
    engine: str
    metric: str
    mode: str
    sweep_id: str
    experiment: str
    tracking_uri: str
    trials: list[Trial]
    best: Trial | None
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_params(specs: list[str]) -> dict[str, list[str]]:
    """``["lr=1e-3,1e-2", "hidden=256,128;512"]`` -> ``{"lr": ["1e-3", "1e-2"], "hidden": ["256,128", "512"]}``.

    Values are split on ``,``; a value list holding ``;`` is split on ``;`` instead, so tuple fields
    (themselves comma-separated) can be swept.
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {spec!r}: expected KEY=VALUE1,VALUE2,...")
        if key in grid:
            raise ConfigError(f"--param {key} is given twice; list all its values in one --param")
        values = [v.strip() for v in raw.split(";" if ";" in raw else ",")]
        if not all(values):
            raise ConfigError(f"--param {spec!r}: an empty value; expected KEY=VALUE1,VALUE2,...")
        if len(set(values)) != len(values):
            raise ConfigError(f"--param {spec!r}: a value is repeated")
        grid[key] = values
    if not grid:
        raise ConfigError("a sweep needs at least one --param KEY=VALUE1,VALUE2,...")
    return grid


def expand_grid(lab: Any, preset: str, grid: dict[str, list[str]],
                base: list[str] | None = None) -> list[dict[str, str]]:
    """Every combination of ``grid``, each validated as ``lab.config(preset, base + overrides)``."""
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_TRIALS:
        raise ConfigError(f"the grid has {size} combinations; at most {MAX_TRIALS} run in one sweep")
    clash = sorted(set(grid) & {s.partition("=")[0].strip() for s in base or []})
    if clash:
        raise ConfigError(f"{', '.join(clash)} is both swept (--param) and fixed (--set)")
    lab.config(preset, base or [])  # the preset and the fixed values alone, named as --set
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for combo in combos:
        try:
            lab.config(preset, [*(base or []), *overrides(combo)])
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("--set ", "--param ", 1)) from None
    return combos


def overrides(params: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in params.items()]


def default_mode(metric: str) -> str:
    return "min" if _LOWER_IS_BETTER.search(metric) else "max"


def run_trial(lab_id: str, preset: str, params: dict[str, str], base: list[str], tracking_uri: str,
              experiment: str, sweep_id: str) -> Trial:
    """Run one combination and log it to MLflow; a trial that raises is recorded (and its run FAILED)."""
    from mastery.core.labs import load_lab, run_lab
    from mastery.ops.tracking import MlflowProgress

    start = time.perf_counter()
    lab = load_lab(lab_id)
    config = lab.config(preset, [*base, *overrides(params)])
    name = "-".join(f"{k}={v}" for k, v in params.items())[:200]
    progress = MlflowProgress(experiment, tracking_uri, run_name=name,
                              tags={"mastery.sweep": sweep_id, "mastery.lab": lab.lesson.id})
    # The swept values, as the config holds them (the lab may log the same keys; equal values are allowed).
    progress.params({k: getattr(config, k) for k in params})
    try:
        report = run_lab(lab, config, preset, progress)
    except Exception as exc:  # one trial's failure is a result of the sweep, not the end of it
        log.warning("trial %s failed: %s", name, exc)
        return Trial(params=params, run_id=progress.run_id, wall_time_s=round(time.perf_counter() - start, 3),
                     error=f"{type(exc).__name__}: {exc}"[:500])
    metrics = {k: float(v) for k, v in report.metrics.items()}
    return Trial(params=params, metrics=metrics, passed=report.passed, run_id=progress.run_id,
                 wall_time_s=round(time.perf_counter() - start, 3))


def _tune_trainable(config: dict[str, Any]) -> None:
    """Ray Tune's function trainable: one trial, reported once (its fields travel as the result)."""
    from ray import tune

    ctx = config["_sweep"]
    params = {k: str(v) for k, v in config.items() if k != "_sweep"}
    trial = run_trial(ctx["lab"], ctx["preset"], params, ctx["base"], ctx["tracking_uri"], ctx["experiment"],
                      ctx["sweep_id"])
    tune.report({"trial": asdict(trial), "done": True})


def _run_ray(lab_id: str, preset: str, grid: dict[str, list[str]], base: list[str], tracking_uri: str,
             experiment: str, sweep_id: str, storage: Path, workers: int | None,
             address: str | None) -> list[Trial]:
    from mastery.ops.ray_runtime import ray_session

    with ray_session(num_cpus=workers, address=address):
        from ray import tune

        space: dict[str, Any] = {k: tune.grid_search(v) for k, v in grid.items()}
        space["_sweep"] = {"lab": lab_id, "preset": preset, "base": base, "tracking_uri": tracking_uri,
                           "experiment": experiment, "sweep_id": sweep_id}
        tuner = tune.Tuner(
            tune.with_resources(_tune_trainable, {"cpu": 1}),
            param_space=space,
            run_config=tune.RunConfig(name=sweep_id, storage_path=str(storage.resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        grid_result = tuner.fit()
        trials = []
        for result in grid_result:
            if result.error is not None or "trial" not in (result.metrics or {}):
                params = {k: str(v) for k, v in (result.config or {}).items() if k != "_sweep"}
                trials.append(Trial(params=params, error=f"ray trial failed: {result.error}"[:500]))
                continue
            trials.append(Trial(**result.metrics["trial"]))
    return trials


def best_trial(trials: list[Trial], metric: str, mode: str) -> Trial | None:
    scored = [t for t in trials if not t.error and metric in t.metrics and math.isfinite(t.metrics[metric])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda t: t.metrics[metric])


def sweep(lab_id: str, grid: dict[str, list[str]], *, preset: str = "tiny", base: list[str] | None = None,
          engine: str = "local", metric: str | None = None, mode: str | None = None,
          tracking_uri: str | None = None, out: str | Path = "runs", workers: int | None = None,
          address: str | None = None) -> SweepResult:
    """Validate the whole grid, run every trial with ``engine`` and return the trials and the best one."""
    from mlflow.tracking import MlflowClient

    from mastery.core.labs import load_lab
    from mastery.ops.tracking import ensure_experiment, tracking_uri_for

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose from {', '.join(ENGINES)}")
    if mode is not None and mode not in ("max", "min"):
        raise ConfigError(f"--mode {mode!r}: choose max or min")
    if engine == "local" and (workers is not None or address is not None):
        raise ConfigError("--workers and --ray-address apply to --engine ray")
    base = list(base or [])
    lab = load_lab(lab_id)
    combos = expand_grid(lab, preset, grid, base)  # every ConfigError before anything runs
    if address is not None:
        from mastery.ops.ray_runtime import check_address

        check_address(address)
    metric = metric or lab.module.HEADLINE[0]
    mode = mode or default_mode(metric)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or tracking_uri_for(out)
    sweep_id = f"{lab.lesson.id}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    experiment = f"mastery-{lab.lesson.id}"
    # Create the store and the experiment here, once: trials in several processes would otherwise race
    # to run the SQLite schema migrations and to create the same experiment.
    ensure_experiment(MlflowClient(tracking_uri=tracking_uri), experiment, tracking_uri)
    log.info("sweep %s: %d trial(s) of %s [%s] on %s, best by %s (%s)", sweep_id, len(combos), lab.lesson.id,
             preset, engine, metric, mode)
    start = time.perf_counter()
    if engine == "local":
        trials = [run_trial(lab.lesson.id, preset, c, base, tracking_uri, experiment, sweep_id) for c in combos]
    else:
        trials = _run_ray(lab.lesson.id, preset, grid, base, tracking_uri, experiment, sweep_id,
                          out / "sweeps" / "ray", workers, address)
    order = {tuple(c.items()): i for i, c in enumerate(combos)}  # Tune's order is its own: use the grid's
    trials.sort(key=lambda t: order.get(tuple(t.params.items()), len(order)))
    return SweepResult(lab=lab.lesson.id, preset=preset, engine=engine, metric=metric, mode=mode,
                       sweep_id=sweep_id, experiment=experiment, tracking_uri=tracking_uri, trials=trials,
                       best=best_trial(trials, metric, mode), wall_time_s=round(time.perf_counter() - start, 3))


def table(result: SweepResult) -> str:
    """The trials as a Markdown table, the best marked, then one line naming the best config."""
    keys = list(result.trials[0].params) if result.trials else []
    head = [*keys, result.metric, "checks", "seconds", "MLflow run", ""]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in result.trials:
        value = f"{t.metrics[result.metric]:.6g}" if result.metric in t.metrics else ("error" if t.error else "-")
        checks = "error" if t.error else ("passed" if t.passed else "FAILED")
        mark = "best" if t is result.best else ""
        rows.append("| " + " | ".join([*(t.params.get(k, "") for k in keys), value, checks, f"{t.wall_time_s:.1f}",
                                      t.run_id[:12], mark]) + " |")
    if result.best is None:
        rows.append(f"\nno trial produced {result.metric}")
    else:
        rows.append(f"\nbest ({result.mode} {result.metric} = {result.best.metrics[result.metric]:.6g}): "
                    + " ".join(f"--set {o}" for o in overrides(result.best.params)))
    return "\n".join(rows)

