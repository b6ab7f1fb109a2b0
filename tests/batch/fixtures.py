"""One project for the batch scoring tests, built once per session, copied per test.

``churn`` v1: a scikit-learn pipeline over float, int, category and string columns
(served natively); ``hgb`` v1: a HistGradientBoosting classifier on numeric columns,
optimized (``models optimize``), so it scores with the ONNX runtime the optimizer chose.
The native models are kept as the oracles.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.config import Settings, init_project, load_settings
from modelyard.models.optimize import optimize_package
from modelyard.registry import ModelRegistry

SEED = 20261206
CHURN = "churn"
HGB = "hgb"
NUMERIC = ["x1", "x2", "x3", "x4"]


def churn_frame(rows: int, seed: int = SEED) -> pd.DataFrame:
    """Rows of churn's columns (age within the trained range 18..89)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(size=rows),
            "age": rng.integers(18, 90, size=rows),
            "plan": pd.Categorical(rng.choice(["basic", "pro", "max"], size=rows)),
            "city": rng.choice(["lyon", "oslo"], size=rows).astype(object),
        }
    )


def hgb_frame(rows: int, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.normal(size=rows) for c in NUMERIC})


def _fit_churn() -> Any:
    frame = churn_frame(400)
    rng = np.random.default_rng(SEED + 1)
    score = frame["amount"] + (frame["plan"] == "pro") + (frame["age"] > 50) * 0.7
    labels = (score + rng.normal(scale=0.5, size=len(frame)) > 0.8).astype(int)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan", "city"]), remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame, labels), frame


def _fit_hgb() -> Any:
    frame = hgb_frame(2000)
    rng = np.random.default_rng(SEED + 2)
    labels = (frame["x1"] - frame["x2"] * frame["x3"] + rng.normal(size=len(frame)) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(frame, labels)
    return model, frame


@dataclasses.dataclass
class BatchProject:
    """A private project copy and the native models (the oracles)."""

    root: Path
    settings: Settings
    models: dict[str, Any]

    def proba(self, name: str, frame: pd.DataFrame) -> np.ndarray:
        """The native model's class probabilities, one row per row of ``frame``."""
        return np.asarray(self.models[name].predict_proba(frame), dtype=np.float64)

    def with_value_checks(self, mode: str) -> Settings:
        serving = msgspec.structs.replace(self.settings.serving, value_checks=mode)
        return msgspec.structs.replace(self.settings, serving=serving)


@pytest.fixture(scope="session")
def _batch_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("batch") / "project"
    init_project(root)
    settings = load_settings(root, environ={})
    churn, churn_train = _fit_churn()
    hgb, hgb_train = _fit_hgb()
    with ModelRegistry(settings) as registry:
        registry.log_model(churn, name=CHURN, training_frame=churn_train)
        registry.set_alias(f"{CHURN}/1", "production")
        registry.log_model(hgb, name=HGB, training_frame=hgb_train)
        manifest = optimize_package(registry, f"{HGB}/1")
        assert manifest.serving_runtime != "native", manifest.runtimes
    return root, {CHURN: churn, HGB: hgb}


@pytest.fixture
def batch_project(
    _batch_base: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BatchProject]:
    base, models = _batch_base
    root = tmp_path / "project"
    shutil.copytree(base, root)
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    yield BatchProject(root, load_settings(root, environ={}), dict(models))
