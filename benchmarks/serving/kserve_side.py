"""KServe side (runs in KServe's venv): save the models, or serve one of them.

    python kserve_side.py prepare --data DATA_DIR --out OUT_DIR
    python kserve_side.py serve --kind hgb --artifact OUT_DIR/hgb.joblib --port PORT

``serve`` is a custom ``kserve.Model`` under ``kserve.ModelServer(workers=1)``, with
gRPC off and per-request latency logging off (both on by default). v1
``/v1/models/KIND:predict`` takes ``{"instances": [[...]]}`` in column order; v2
``/v2/models/KIND/infer`` takes one FP64 tensor ``[1, 12]`` for the
HistGradientBoosting model and one tensor per column for the pipeline (decoded with
``InferRequest.as_dataframe``). Both return ``predict_proba``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import joblib
import kserve
import numpy as np
import pandas as pd
from common import MODELS, emit, train
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse


class Classifier(kserve.Model):
    def __init__(self, name: str, artifact: Path) -> None:
        super().__init__(name)
        self.artifact = artifact
        self.columns = MODELS[name]["columns"]
        self.model: Any = None

    def load(self) -> bool:
        # the file was written by this venv's own scikit-learn, in ``prepare``
        self.model = joblib.load(self.artifact)
        self.ready = True
        return self.ready

    def _frame(self, rows: Any) -> Any:
        if self.name == "hgb":
            return np.asarray(rows, dtype=np.float64)
        return pd.DataFrame(rows, columns=self.columns)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            if self.name == "hgb":
                proba = self.model.predict_proba(payload.inputs[0].as_numpy())
            else:
                proba = self.model.predict_proba(payload.as_dataframe()[self.columns])
            output = InferOutput(
                name="probabilities", shape=list(proba.shape), datatype="FP64", data=proba
            )
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=[output],
            )
        proba = self.model.predict_proba(self._frame(payload["instances"]))
        return {"predictions": proba.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["prepare", "serve"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--kind", choices=list(MODELS))
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--port", type=int, default=8080)
    args, _ = parser.parse_known_args()
    if args.command == "prepare":
        args.out.mkdir(parents=True, exist_ok=True)
        for kind in MODELS:
            joblib.dump(train(args.data, kind), args.out / f"{kind}.joblib")
        emit({"version": importlib.metadata.version("kserve")})
        return
    model = Classifier(args.kind, args.artifact)
    model.load()
    kserve.ModelServer(
        http_port=args.port, workers=1, enable_grpc=False, enable_latency_logging=False
    ).start([model])


if __name__ == "__main__":
    main()
