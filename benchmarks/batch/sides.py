"""One contender of the batch benchmark, run in its own process (see bench_batch.py).

    python sides.py native  --work DIR      # pandas + predict_proba, one process
    python sides.py local   --work DIR      # modelyard.predict_batch(engine="local")
    python sides.py ray     --work DIR      # modelyard.predict_batch(engine="ray"), 2 actors
    python sides.py mlflow  --work DIR      # in MLflow's venv: pyfunc.predict over chunks
    python sides.py ray-floor --work DIR    # Ray Data alone: the same pipeline, no scoring

Each reads ``DIR/input.parquet``, scores every row and writes ``DIR/<side>/proba.parquet``
(``flight`` and ``proba_1``, in input order), then prints one JSON line (``BATCH-BENCH
{...}``) with the scoring seconds (reading, scoring and writing; process start-up, model
loading outside the scoring call and Ray's cluster start-up excluded and printed apart).
The MLflow side only needs numpy, pandas, pyarrow and mlflow.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MARKER = "BATCH-BENCH "
CHUNK = 65_536


def emit(payload: dict[str, Any]) -> None:
    print(MARKER + json.dumps(payload), flush=True)


def features(work: Path) -> list[str]:
    return list(json.loads((work / "features.json").read_text()))


def write(out: Path, flight: Any, proba: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"flight": pa.array(flight), "proba_1": pa.array(proba, type=pa.float64())}),
        out / "proba.parquet",
    )


def native(work: Path) -> None:
    with (work / "model.pkl").open("rb") as handle:
        model = pickle.load(handle)  # the benchmark's own file
    start = time.perf_counter()
    frame = pd.read_parquet(work / "input.parquet")
    for col in ("carrier", "origin"):
        frame[col] = frame[col].astype("category")
    proba = model.predict_proba(frame[features(work)])[:, 1]
    write(work / "native", frame["flight"].to_numpy(), proba)
    emit({"seconds": time.perf_counter() - start})


def modelyard_side(work: Path, engine: str) -> None:
    import shutil

    import sklearn.ensemble  # noqa: F401 - other sides import theirs before the timer
    import skops.io  # noqa: F401 - warm the imports the package's loader needs, as the

    import modelyard
    from modelyard.config import load_settings
    from modelyard.engine import connect_ray

    settings = load_settings(work / "project", environ={})
    setup = 0.0
    if engine == "ray":
        begin = time.perf_counter()
        connect_ray(settings)  # the cluster's start-up, not the scoring
        setup = time.perf_counter() - begin
    out = work / engine / "run"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = modelyard.predict_batch(
        "flights@production",
        work / "input.parquet",
        out,
        engine=engine,
        settings=settings,
        workers=2 if engine == "ray" else None,
    )
    seconds = time.perf_counter() - start
    table = pq.read_table(out / "predictions.parquet", columns=["flight", "proba_1"])
    write(work / engine, table.column("flight"), table.column("proba_1"))
    emit(
        {
            "seconds": seconds,
            "setup_seconds": setup,
            "runtime": result.runtime,
            "rows_scored": result.rows_scored,
            "rows_rejected": result.rows_rejected,
            "workers": result.workers,
            "model_loads": result.model_loads,
        }
    )


class _Identity:
    """The floor's actor: loads nothing, returns its batch."""

    def __call__(self, batch: Any) -> Any:
        return batch


def ray_floor(work: Path) -> None:
    """Ray Data's own cost on this machine: the same read and actor-pool shape as
    ``predict --engine ray`` (2 actors, 65,536-row batches, order kept), an identity map
    instead of scoring, the batches counted on the driver and nothing written."""
    import ray

    from modelyard.config import load_settings
    from modelyard.engine import connect_ray

    settings = load_settings(work / "project", environ={})
    connect_ray(settings)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    start = time.perf_counter()
    rows = 0
    dataset = ray.data.read_parquet(
        str(work / "input.parquet"), include_paths=True, num_cpus=0.25
    ).map_batches(
        _Identity,
        batch_size=CHUNK,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=2),
        zero_copy_batch=True,
        num_cpus=0.5,
    )
    for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += table.num_rows
    emit({"seconds": time.perf_counter() - start, "rows": rows})


def mlflow_side(work: Path) -> None:
    import mlflow.pyfunc
    import mlflow.sklearn

    with (work / "model.pkl").open("rb") as handle:
        model = pickle.load(handle)
    target = work / "mlflow" / "model"
    if not target.exists():
        import skops.io

        # MLflow's schema enforcement refuses a category column: text, as pyfunc takes it
        sample = pd.read_parquet(work / "input.parquet").head(100)[features(work)]
        mlflow.sklearn.save_model(
            model,
            str(target),
            input_example=sample.head(1),
            signature=mlflow.models.infer_signature(sample, model.predict_proba(sample)),
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )
    loaded = mlflow.pyfunc.load_model(str(target))
    names = features(work)
    start = time.perf_counter()
    parquet = pq.ParquetFile(work / "input.parquet")
    flights, probas = [], []
    for batch in parquet.iter_batches(batch_size=CHUNK):
        frame = batch.to_pandas()
        out = np.asarray(loaded.predict(frame[names]))
        flights.append(frame["flight"].to_numpy())
        probas.append(out[:, 1])
    write(work / "mlflow", np.concatenate(flights), np.concatenate(probas))
    emit({"seconds": time.perf_counter() - start, "mlflow": mlflow.__version__})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["native", "local", "ray", "ray-floor", "mlflow"])
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    if args.side == "native":
        native(args.work)
    elif args.side == "mlflow":
        mlflow_side(args.work)
    elif args.side == "ray-floor":
        ray_floor(args.work)
    else:
        modelyard_side(args.work, args.side)


if __name__ == "__main__":
    sys.exit(main())
