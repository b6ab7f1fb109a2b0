"""Opening a package's serving runtime, as a server does."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings
from modelyard.models.optimize import optimize_package
from modelyard.models.runtimes import build_inputs, open_serving_runtime
from modelyard.registry.client import ModelRegistry

SEED = 7


def _data(rows: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.uniform(0, 10, size=rows)})
    return frame, (frame["a"] + 0.2 * frame["b"] > 1).to_numpy().astype(int)


def test_serving_runtime_of_an_optimized_package_matches_the_native_model(
    settings: Settings,
) -> None:
    frame, labels = _data()
    model = HistGradientBoostingClassifier(max_iter=30, random_state=SEED).fit(frame, labels)
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name="m", training_frame=frame)
        manifest = optimize_package(registry, "m/1")
        runtime = open_serving_runtime(registry.load("m/1"), registry.artifacts)
        assert runtime.name == manifest.serving_runtime
        assert runtime.name != "native"  # the ONNX graph passed parity and is faster
        scores = runtime.scores(build_inputs(manifest.signature, frame.head(50)))  # type: ignore[arg-type]
        np.testing.assert_allclose(scores, model.predict_proba(frame.head(50)), atol=1e-5)


def test_a_package_never_optimized_serves_natively(settings: Settings) -> None:
    frame, labels = _data()
    model = LogisticRegression().fit(frame, labels)
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name="m", training_frame=frame)
        packaged = registry.load("m@latest")
        runtime = open_serving_runtime(packaged, registry.artifacts)
        assert runtime.name == "native"
        scores = runtime.scores(build_inputs(packaged.manifest.signature, frame.head(5)))  # type: ignore[arg-type]
        np.testing.assert_array_equal(scores, model.predict_proba(frame.head(5)))
