"""The MLflow half of the gates benchmark; run by ``run.py`` in MLflow's own venv.

    python mlflow_side.py --data EVAL.parquet --models DIR --work WORK_DIR

Logs the candidate and the champion (the same fitted models the modelyard side
registers, read from pickles) to a fresh SQLite store, untimed; then times
``mlflow.models.evaluate(model_uri, data, targets=LABEL, model_type="classifier")``
for each, as its docs show it (explainability off: SHAP is not installed and the
modelyard side has no counterpart). Prints one ``BENCH-RESULT {json}`` line with the
wall time and the metrics it computed. Never imports modelyard.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from common import HGB_TREE_TYPE, LABEL, result_line
from mlflow.models import infer_signature

warnings.filterwarnings("ignore")
for _name in ("mlflow", "alembic", "sqlalchemy"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    uri = f"sqlite:///{args.work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    frame = pd.read_parquet(args.data)
    features = frame.drop(columns=[LABEL])
    uris: dict[str, str] = {}
    for which in ("candidate", "champion"):
        model = pickle.loads((args.models / f"{which}.pkl").read_bytes())
        with mlflow.start_run():
            signature = infer_signature(features.head(100), model.predict_proba(features.head(100)))
            info = mlflow.sklearn.log_model(
                model, name=which, signature=signature, skops_trusted_types=[HGB_TREE_TYPE]
            )
        uris[which] = info.model_uri
    metrics: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for which in ("candidate", "champion"):
        with mlflow.start_run():
            result = mlflow.models.evaluate(
                uris[which],
                frame,
                targets=LABEL,
                model_type="classifier",
                evaluators=["default"],
                evaluator_config={"default": {"log_model_explainability": False}},
            )
        metrics[which] = {k: float(v) for k, v in result.metrics.items()}
    seconds = time.perf_counter() - start
    print(
        result_line({"seconds": seconds, "metrics": metrics, "mlflow": mlflow.__version__}),
        flush=True,
    )


if __name__ == "__main__":
    main()
