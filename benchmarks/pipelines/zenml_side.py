"""ZenML side of the pipelines benchmark, run with the ZenML venv's python.

``fetch``: the step statuses and metrics of the ``flights`` pipeline's latest run (the
ZenML client, untimed). ``api``: the pipeline called three times in one warm process
(ZenML's in-process API: calling the ``@pipeline`` function): first run, the same
again (cached), then ``max_depth`` changed; each timed, read back afterwards. The CLI
(``python zenml_flow.py``) is timed by ``run.py`` itself. The working directory is the
work folder where ``zenml init`` ran (``ZENML_CONFIG_PATH`` points inside it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.getcwd())  # the work folder's copies of the pipeline and common.py

import common
import zenml
from zenml.client import Client


def _describe(run: Any) -> dict[str, Any]:
    run = Client().get_pipeline_run(run.id)
    return {
        "run_id": str(run.id),
        "status": str(run.status.value),
        "steps": {name: str(s.status.value) for name, s in run.steps.items()},
        "step_s": {
            name: (s.end_time - s.start_time).total_seconds()
            if s.end_time and s.start_time
            else None
            for name, s in run.steps.items()
        },
        "metrics": dict(run.steps["evaluate"].output.load()),
    }


def fetch(pipeline: str) -> dict[str, Any]:
    return _describe(Client().get_pipeline(pipeline).last_run)


def api(args: argparse.Namespace) -> dict[str, Any]:
    import zenml_flow

    Client()  # the store opened before the first timed call, as an imported script has it
    runs: dict[str, Any] = {}
    plan = [("first", {}), ("cached", {}), ("changed", {"max_depth": args.changed_depth})]
    for label, extra in plan:
        start = time.perf_counter()
        run = zenml_flow.flights(data=args.data, **extra)
        seconds = time.perf_counter() - start
        runs[label] = {"seconds": seconds, **_describe(run)}
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["fetch", "api"])
    parser.add_argument("--pipeline", default="flights")
    parser.add_argument("--data")
    parser.add_argument("--changed-depth", type=int, default=4)
    args = parser.parse_args()
    result = fetch(args.pipeline) if args.task == "fetch" else api(args)
    common.emit({**result, "version": zenml.__version__})


if __name__ == "__main__":
    main()
