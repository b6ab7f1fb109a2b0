"""The MLflow half of the tracking benchmark; run by ``run.py`` in MLflow's own venv.

    python mlflow_side.py TASK --data DATA_DIR --work WORK_DIR [--searches 20] [--digests 3]

TASK is one of single, single-async, batch, runs (create, then search), digest, fresh-store.
Each task runs in a fresh process on a fresh store and prints one ``BENCH-RESULT {json}``
line.
Never imports modelyard.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
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
from mlflow import MlflowClient
from mlflow.entities import Metric

#: MLflow's limit of metrics in one log_batch call
_BATCH_LIMIT = 1000

warnings.filterwarnings("ignore")
for _name in ("mlflow", "alembic", "sqlalchemy"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def _client(work: Path) -> MlflowClient:
    """A client on a fresh SQLite store, migrated before any clock starts."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.search_experiments()
    return client


def single(args: argparse.Namespace) -> dict[str, Any]:
    """One log_metric call per point; each is written before it returns."""
    client = _client(args.work)
    points = load_points(args.data)
    mlflow.set_experiment("bench-single")
    with mlflow.start_run() as run:
        start = time.perf_counter()
        for step, value in enumerate(points):
            mlflow.log_metric("loss", value, step=step)
        seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run.info.run_id, "loss"))
    return {"single_s": seconds, "single_stored": stored}


def single_async(args: argparse.Namespace) -> dict[str, Any]:
    """One asynchronous log_metric call per point (MLflow's documented
    ``synchronous=False``; ``MLFLOW_ENABLE_ASYNC_LOGGING=true`` does the same for
    every call), then ``mlflow.flush_async_logging()``, which waits until they are
    written: the same work as modelyard's buffered calls and final flush."""
    client = _client(args.work)
    points = load_points(args.data)
    mlflow.set_experiment("bench-single-async")
    with mlflow.start_run() as run:
        start = time.perf_counter()
        for step, value in enumerate(points):
            mlflow.log_metric("loss", value, step=step, synchronous=False)
        calls = time.perf_counter() - start  # the loop's own wait, before the writes end
        mlflow.flush_async_logging()
        seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run.info.run_id, "loss"))
    return {
        "single_async_s": seconds,
        "single_async_calls_s": calls,
        "single_async_stored": stored,
    }


def batch(args: argparse.Namespace) -> dict[str, Any]:
    """The same points through log_batch, in chunks of at most 1000 metrics."""
    client = _client(args.work)
    points = load_points(args.data)
    mlflow.set_experiment("bench-batch")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        start = time.perf_counter()
        for first in range(0, len(points), _BATCH_LIMIT):
            now = int(time.time() * 1000)
            chunk = points[first : first + _BATCH_LIMIT]
            client.log_batch(
                run_id,
                metrics=[Metric("loss", v, now, first + i) for i, v in enumerate(chunk)],
            )
        seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run_id, "loss"))
    return {"batch_s": seconds, "batch_stored": stored}


def runs(args: argparse.Namespace) -> dict[str, Any]:
    """Runs with 5 params and 3 metrics each, started and ended; then a search over them."""
    client = _client(args.work)
    experiment_id = mlflow.set_experiment("bench-runs").experiment_id
    specs = load_runs(args.data)
    start = time.perf_counter()
    for i, spec in enumerate(specs):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"run-{i}"):
            mlflow.log_params(spec["params"])
            mlflow.log_metrics(spec["metrics"])
    out: dict[str, Any] = {"create_runs_s": time.perf_counter() - start}

    found: list[Any] = []

    def search() -> None:
        found[:] = client.search_runs(
            [experiment_id],
            filter_string=SEARCH_FILTER,
            order_by=[SEARCH_ORDER],
            max_results=1000,
        )

    out["search_s"], out["search_all_s"] = median_time(search, args.searches)
    out["search_hits"] = len(found)
    out["search_top_auc"] = [r.data.metrics["auc"] for r in found[:5]]
    return out


def digest(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset digest, and whether one changed cell far down is noticed."""
    frame = load_frame(args.data)
    out: dict[str, Any] = {}
    out["digest_s"], out["digest_all_s"] = median_time(
        lambda: mlflow.data.from_pandas(frame).digest, args.digests
    )
    before = mlflow.data.from_pandas(frame).digest
    after = mlflow.data.from_pandas(changed_copy(frame)).digest
    out["digest"] = before
    out["digest_changed"] = before != after
    return out


def fresh_store(args: argparse.Namespace) -> dict[str, Any]:
    """The first use of a new sqlite:/// URI, migrations included (imports done before)."""
    uri = f"sqlite:///{args.work / 'fresh.db'}"
    start = time.perf_counter()
    MlflowClient(uri).search_experiments()
    return {"fresh_store_s": time.perf_counter() - start}


if __name__ == "__main__":
    side_main(
        "mlflow",
        mlflow.__version__,
        {
            "single": single,
            "single-async": single_async,
            "batch": batch,
            "runs": runs,
            "digest": digest,
            "fresh-store": fresh_store,
        },
    )
