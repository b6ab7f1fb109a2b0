"""Metaflow side of the pipelines benchmark, run with the Metaflow venv's python.

``fetch``: the metrics of the flow's latest run (Metaflow's client API, untimed).
``api``: the flow run three times through ``metaflow.Runner`` (its programmatic API)
from one warm process: first run, the same again, then ``max_depth`` changed; each
timed, its metrics read back afterwards. The CLI (``python metaflow_flow.py run``) is
timed by ``run.py`` itself. The working directory is the work folder (the flow file,
``common.py`` and the ``.metaflow`` datastore live there).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.getcwd())  # the work folder's copies of the flow and common.py

import common
import metaflow
from metaflow import Flow, Runner, namespace


def _metrics(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "successful": bool(run.successful),
        "metrics": dict(run["end"].task.data.metrics),
        "step_s": {
            step.id: (step.task.finished_at - step.task.created_at).total_seconds()
            if step.task.finished_at
            else None
            for step in run
        },
    }


def fetch(flow: str) -> dict[str, Any]:
    namespace(None)
    return _metrics(Flow(flow).latest_run)


def api(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    plan = [("first", {}), ("cached", {}), ("changed", {"max_depth": args.changed_depth})]
    for label, extra in plan:
        runner = Runner("metaflow_flow.py", show_output=False)
        start = time.perf_counter()
        done = runner.run(data=args.data, **extra)
        seconds = time.perf_counter() - start
        if done.status != "successful":
            raise SystemExit(f"Metaflow run {label} ended {done.status}:\n{done.stderr[-3000:]}")
        runs[label] = {"seconds": seconds, **_metrics(done.run)}
        runner.cleanup()
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["fetch", "api"])
    parser.add_argument("--flow", default="FlightsFlow")
    parser.add_argument("--data")
    parser.add_argument("--changed-depth", type=int, default=4)
    args = parser.parse_args()
    result = fetch(args.flow) if args.task == "fetch" else api(args)
    common.emit({**result, "version": metaflow.__version__})


if __name__ == "__main__":
    main()
