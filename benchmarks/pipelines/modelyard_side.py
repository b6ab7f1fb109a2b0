"""modelyard side of the pipelines benchmark, run with the project's python.

Run with the temp project folder as the working directory (its ``pipelines.py`` and
``common.py`` are the benchmark's ``modelyard_pipelines.py`` and ``common.py``):

- ``fetch``: the newest ``flights`` run's step statuses and metrics (read back from the
  artifact store, verified), untimed.
- ``api``: the user's in-process API from one warm process (``from pipelines import
  flights``; ``flights.run(...)``): first run, the same again (cached), then
  ``max_depth`` changed; each timed; then ``empty`` (``--empty-steps`` no-op steps, and
  2) with ``cache=False``, the median of ``--repeats`` runs each.
- ``tune``: ``modelyard.tune`` on the cheap objective of ``tune_objective.py``, seeded
  TPE, trials recorded as child runs in the project's SQLite store.

``--profile FILE`` profiles the timed calls (cProfile) into ``FILE`` (a pstats dump) and
prints the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the project folder: its pipelines.py and common.py

import common
from tune_objective import HIGH, LOW, Timer

import modelyard


class _Profiler:
    """cProfile around the timed calls only, when asked for."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profile = cProfile.Profile() if path else None

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.profile is not None:
            self.profile.enable()
        start = time.perf_counter()
        try:
            value = fn()
        finally:
            seconds = time.perf_counter() - start
            if self.profile is not None:
                self.profile.disable()
        return seconds, value

    def report(self, top: int = 40) -> None:
        if self.profile is None or self.path is None:
            return
        self.profile.dump_stats(self.path)
        out = io.StringIO()
        stats = pstats.Stats(self.profile, stream=out).sort_stats("cumulative")
        stats.print_stats(top)
        text = out.getvalue()
        Path(self.path).with_suffix(".txt").write_text(text)
        print(text, file=sys.stderr)


def _describe(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status,
        "steps": {name: s.status for name, s in run.steps.items()},
        "step_s": {name: s.duration_s for name, s in run.steps.items()},
        "metrics": dict(run.load("evaluate")),
    }


def fetch() -> dict[str, Any]:
    from modelyard.pipelines.executors import client_for
    from modelyard.pipelines.records import PipelineRecords
    from modelyard.pipelines.runner import load_pipeline_run

    settings = modelyard.load_settings()
    newest = PipelineRecords(client_for(settings).db).list_pipeline_runs("flights", limit=1)
    return _describe(load_pipeline_run(newest[0].run_id, settings=settings))


def api(args: argparse.Namespace, profiler: _Profiler) -> dict[str, Any]:
    start = time.perf_counter()
    from pipelines import empty, flights

    import_s = time.perf_counter() - start
    runs: dict[str, Any] = {}
    data = Path(args.data)
    plan = [
        ("first", {"data": data}),
        ("cached", {"data": data}),
        ("changed", {"data": data, "max_depth": args.changed_depth}),
    ]
    for label, params in plan:
        use = profiler if label in args.profile_runs else _Profiler(None)
        seconds, run = use.timed(lambda params=params: flights.run(params))
        runs[label] = {"seconds": seconds, **_describe(run)}
    empty_s: dict[str, list[float]] = {}
    for n in (2, args.empty_steps):
        use = profiler if "empty" in args.profile_runs and n > 2 else _Profiler(None)
        times = []
        for _ in range(args.repeats):
            seconds, run = use.timed(lambda n=n: empty.run({"n": n}, cache=False))
            if run.status != "completed" or len(run.steps) != n:
                raise SystemExit(f"empty n={n} ended {run.status} with {len(run.steps)} steps")
            times.append(seconds)
        empty_s[str(n)] = times
    return {"import_s": import_s, "runs": runs, "empty_s": empty_s}


def tune(args: argparse.Namespace, profiler: _Profiler) -> dict[str, Any]:
    tune_fn = getattr(modelyard, "tune", None)
    entry = "modelyard.tune"
    if tune_fn is None:  # before the package root exports it
        from modelyard.pipelines.tuning import tune as tune_fn

        entry = "modelyard.pipelines.tuning.tune"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as on the anchor's side
    client = modelyard.get_client()
    client.create_experiment("bench-tune")  # the store made now (migrations), untimed
    timer = Timer()

    def objective(params: dict[str, Any]) -> float:
        return timer(params["x"], params["y"])

    space = {"x": (LOW["x"], HIGH["x"]), "y": (LOW["y"], HIGH["y"])}
    seconds, result = profiler.timed(
        lambda: tune_fn(
            objective,
            space=space,
            n_trials=args.trials,
            seed=args.seed,
            study="bench-tune",
            experiment="bench-tune",
        )
    )
    trials = result.study.get_trials(deepcopy=False)
    logged = [
        r
        for r in modelyard.get_client().search_runs("bench-tune", max_results=10_000)
        if "modelyard.trial" in r.tags
    ]
    return {
        "tool": entry,
        "total_s": seconds,
        "objective_s": timer.seconds,
        "objective_calls": timer.calls,
        "trials": [{"params": t.params, "value": t.value} for t in trials],
        "best_value": result.best_value,
        "best_params": result.best_params,
        "logged_runs": len(logged),
        "logged_values": sorted(
            float(r.metrics["value"]) if "value" in r.metrics else float("nan") for r in logged
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["fetch", "api", "tune"])
    parser.add_argument("--data")
    parser.add_argument("--changed-depth", type=int, default=4)
    parser.add_argument("--empty-steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", help="write a cProfile of the timed calls here")
    parser.add_argument(
        "--profile-runs", nargs="*", default=["cached"], help="api: first cached changed empty"
    )
    args = parser.parse_args()
    profiler = _Profiler(args.profile)
    if args.task == "fetch":
        result = fetch()
    elif args.task == "api":
        result = api(args, profiler)
    else:
        result = tune(args, profiler)
    profiler.report()
    common.emit({**result, "version": modelyard.__version__})


if __name__ == "__main__":
    main()
