"""The modelyard half of the tracking benchmark; run by ``run.py`` with the project's python.

    python modelyard_side.py TASK --data DATA_DIR --work WORK_DIR [--searches 20] [--digests 3]

TASK is one of single, single-async, batch, runs (create, then search), digest, fresh-store.
Each task runs in a fresh process on a fresh store and prints one ``BENCH-RESULT {json}``
line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import (
    SEARCH_FILTER,
    SEARCH_ORDER,
    changed_copy,
    load_frame,
    load_points,
    load_runs,
    median_time,
    side_main,
)


def _client(work: Path) -> Any:
    """A client on a fresh project; its store is created (migrated) before any clock."""
    from modelyard.config import init_project, load_settings
    from modelyard.tracking import TrackingClient

    init_project(work / "project")
    return TrackingClient(load_settings(work / "project", environ={}))


def single(args: argparse.Namespace) -> dict[str, Any]:
    """One log_metric call per point, then the flush that makes them durable."""
    client = _client(args.work)
    points = load_points(args.data)
    with client.start_run("bench-single") as run:
        start = time.perf_counter()
        for step, value in enumerate(points):
            run.log_metric("loss", value, step=step)
        client.flush()
        seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run.id, "loss"))
    client.close()
    return {"single_s": seconds, "single_stored": stored}


def single_async(args: argparse.Namespace) -> dict[str, Any]:
    """The single calls again, in their own process, beside MLflow's asynchronous ones."""
    result = single(args)
    return {"single_async_s": result["single_s"], "single_async_stored": result["single_stored"]}


def batch(args: argparse.Namespace) -> dict[str, Any]:
    """The same points in one log_batch call, then the flush."""
    client = _client(args.work)
    points = load_points(args.data)
    with client.start_run("bench-batch") as run:
        start = time.perf_counter()
        client.log_batch(run.id, [("loss", value, step) for step, value in enumerate(points)])
        client.flush()
        seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run.id, "loss"))
    client.close()
    return {"batch_s": seconds, "batch_stored": stored}


def runs(args: argparse.Namespace) -> dict[str, Any]:
    """Runs with 5 params and 3 metrics each, started and ended; then a search over them."""
    client = _client(args.work)
    specs = load_runs(args.data)
    start = time.perf_counter()
    for i, spec in enumerate(specs):
        with client.start_run("bench-runs", name=f"run-{i}") as run:
            run.log_params(spec["params"])
            run.log_metrics(spec["metrics"])
    out: dict[str, Any] = {"create_runs_s": time.perf_counter() - start}

    found: list[Any] = []

    def search() -> None:
        found[:] = client.search_runs(
            "bench-runs", filter=SEARCH_FILTER, order_by=[SEARCH_ORDER], max_results=1000
        )

    out["search_s"], out["search_all_s"] = median_time(search, args.searches)
    out["search_hits"] = len(found)
    out["search_top_auc"] = [r.metrics["auc"] for r in found[:5]]
    client.close()
    return out


def digest(args: argparse.Namespace) -> dict[str, Any]:
    """The digest of the whole frame, and whether one changed cell far down is noticed."""
    from modelyard.tracking.digest import digest_frame

    frame = load_frame(args.data)
    out: dict[str, Any] = {}
    out["digest_s"], out["digest_all_s"] = median_time(lambda: digest_frame(frame), args.digests)
    before = digest_frame(frame).digest
    after = digest_frame(changed_copy(frame)).digest
    out["digest"] = before
    out["digest_changed"] = before != after
    return out


def fresh_store(args: argparse.Namespace) -> dict[str, Any]:
    """The first open of a new SQLite file, migrations included (imports done before)."""
    from modelyard.store.database import open_database

    url = f"sqlite:///{args.work / 'fresh.db'}"
    start = time.perf_counter()
    db = open_database(url)
    seconds = time.perf_counter() - start
    revision = db.revision()
    db.close()
    return {"fresh_store_s": seconds, "revision": revision}


if __name__ == "__main__":
    import importlib.metadata

    side_main(
        "modelyard",
        importlib.metadata.version("modelyard"),
        {
            "single": single,
            "single-async": single_async,
            "batch": batch,
            "runs": runs,
            "digest": digest,
            "fresh-store": fresh_store,
        },
    )
