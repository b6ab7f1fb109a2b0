"""MLflow side (runs in MLflow's venv): save both models as MLflow model directories.

    python mlflow_side.py --data DATA_DIR --out OUT_DIR

Each model is saved with ``mlflow.sklearn.save_model`` (skops, the types it needs
trusted), a signature inferred from the training frame and ``predict_proba`` as the
pyfunc method, then served by ``mlflow models serve -m OUT_DIR/KIND --env-manager local
--workers 1``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlflow
import mlflow.sklearn
import skops.io
from common import MODELS, emit, training
from common import fit as fit_model
from mlflow.models import infer_signature


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for kind in MODELS:
        X, y = training(args.data, kind)
        model = fit_model(kind, X, y)
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        mlflow.sklearn.save_model(
            model,
            str(args.out / kind),
            signature=infer_signature(X.head(1000), model.predict_proba(X.head(1000))),
            input_example=X.head(1),
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=trusted,
        )
    emit({"version": mlflow.__version__})


if __name__ == "__main__":
    main()
