"""The MLflow half of the models benchmark; run by ``run.py`` in MLflow's own venv.

    python mlflow_side.py registry --data DATA_DIR --work WORK_DIR [--logs 5] [--loads 5]

On a fresh SQLite store (tracking and registry): fit the model, then ``--logs`` times
each, interleaved, log and register it inside a run the way MLflow's docs show
(``infer_signature`` + ``mlflow.sklearn.log_model`` with an input example), once with
MLflow's default requirements inference and once with explicit ``pip_requirements``;
then set the alias and load the model by it ``--loads`` times. Prints one
``BENCH-RESULT {json}`` line. Never imports modelyard.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
from common import (
    ALIAS,
    CHECK_ROWS,
    HGB_TREE_TYPE,
    MODEL_NAME,
    fit_model,
    load_training,
    median_time,
    model_digest,
    side_main,
)
from mlflow import MlflowClient
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")
for _name in ("mlflow", "alembic", "sqlalchemy"):
    logging.getLogger(_name).setLevel(logging.ERROR)

#: what a user who pins by hand writes: the same packages MLflow infers for this model
_PINNED = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def _client(work: Path) -> MlflowClient:
    """A client on a fresh SQLite store, migrated before any clock starts."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return client


def _explicit_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in _PINNED]


def registry(args: argparse.Namespace) -> dict[str, Any]:
    client = _client(args.work)
    X, y = load_training(args.data)
    model = fit_model(args.model, X, y)
    mlflow.set_experiment("bench-models")
    extra = {"skops_trusted_types": [HGB_TREE_TYPE]} if args.model == "hgb" else {}
    pinned = _explicit_requirements()
    times: dict[str, list[float]] = {"default": [], "explicit": []}
    versions: dict[str, list[int]] = {"default": [], "explicit": []}
    inferred: list[str] = []
    for _ in range(args.logs):
        for kind in ("default", "explicit"):
            with mlflow.start_run():
                start = time.perf_counter()
                signature = infer_signature(X, model.predict_proba(X))
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=MODEL_NAME,
                    input_example=X.head(5),
                    signature=signature,
                    pip_requirements=pinned if kind == "explicit" else None,
                    **extra,
                )
                times[kind].append(time.perf_counter() - start)
            versions[kind].append(int(info.registered_model_version))
            if kind == "default" and not inferred:
                folder = mlflow.artifacts.download_artifacts(
                    f"models:/{MODEL_NAME}/{info.registered_model_version}",
                    dst_path=str(args.work / "inferred"),
                )
                inferred = [
                    line.strip()
                    for line in (Path(folder) / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")
                ]

    champion = versions["default"][-1]
    client.set_registered_model_alias(MODEL_NAME, ALIAS, champion)
    loaded: list[Any] = []

    def load() -> None:
        loaded[:] = [mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{ALIAS}")]

    load_s, load_all_s = median_time(load, args.loads)
    labels = loaded[0].predict(X.head(CHECK_ROWS))
    registered = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return {
        "log_default_s": statistics.median(times["default"]),
        "log_default_all_s": times["default"],
        "log_explicit_s": statistics.median(times["explicit"]),
        "log_explicit_all_s": times["explicit"],
        "load_s": load_s,
        "load_all_s": load_all_s,
        "versions": len(registered),
        "champion": champion,
        "inferred_requirements": inferred,
        "explicit_requirements": pinned,
        "model_digest": model_digest(model, X),
        "loaded_labels": "".join(str(int(v)) for v in labels),
        "skops_trusted_types": extra.get("skops_trusted_types", []),
    }


if __name__ == "__main__":
    side_main("mlflow", mlflow.__version__, {"registry": registry})
