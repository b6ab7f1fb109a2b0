"""BentoML 1.4 services for the serving benchmark (``bentoml serve bentoml_service:HGB``).

One worker each, no adaptive batching (``@bentoml.api`` is not batchable by default).
The HistGradientBoosting service takes a numpy array as BentoML's scikit-learn example
does (``{"instances": [[...]]}``); the pipeline takes a list of records and builds the
DataFrame its ColumnTransformer needs (``{"records": [{...}]}``).
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
import pandas as pd


@bentoml.service(workers=1)
class HGB:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model("serving-hgb:latest")

    @bentoml.api
    def predict(self, instances: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(instances)


@bentoml.service(workers=1)
class Pipeline:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model("serving-pipeline:latest")

    @bentoml.api
    def predict(self, records: list[dict[str, Any]]) -> np.ndarray:
        return self.model.predict_proba(pd.DataFrame.from_records(records))
