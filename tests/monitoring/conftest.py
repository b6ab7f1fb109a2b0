"""A project with a registered classifier and a prediction log written like the server's.

``churn`` v1 is a scikit-learn pipeline (one-hot ``plan`` + numeric ``amount`` and
``age`` into a LogisticRegression) registered once per session with its training frame,
so its package carries a reference profile; each test gets a private copy of the
project (SQLite metadata store and artifacts). ``write_days`` writes daily windows of
served rows to the project's prediction log with ``PredictionLog``: inputs drawn like
the training data (``amount`` shifted by ``shift`` standard deviations on chosen days),
the model's real ``predict_proba`` as ``proba_0``/``proba_1``, and list labels as
feedback for most requests.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.config import Settings, init_project, load_settings
from modelyard.registry import ModelRegistry
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord

SEED = 20240501
NAME = "churn"
DAY0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
FEATURES = ["amount", "age", "plan"]


def make_frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    """Rows like the training data; ``amount`` moved by ``shift`` standard deviations."""
    return pd.DataFrame(
        {
            "amount": rng.normal(loc=shift, scale=1.0, size=rows),
            "age": rng.integers(18, 90, size=rows).astype(np.int64),
            "plan": rng.choice(["basic", "pro", "max"], size=rows).astype(object),
        }
    )


def true_labels(rng: np.random.Generator, frame: pd.DataFrame) -> np.ndarray:
    score = frame["amount"] + (frame["plan"] == "pro") + (frame["age"] > 50) * 0.7
    return (score + rng.normal(scale=0.7, size=len(frame)) > 0.8).astype(int).to_numpy()


def make_model() -> tuple[Pipeline, pd.DataFrame]:
    rng = np.random.default_rng(SEED)
    frame = make_frame(rng, 600)
    labels = true_labels(rng, frame)
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan"]), remainder="passthrough"
    )
    model = make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame, labels)
    return model, frame


@dataclasses.dataclass
class Project:
    settings: Settings
    model: Pipeline

    @property
    def root(self) -> Path:
        return self.settings.project_dir

    @property
    def log_dir(self) -> Path:
        return self.root / self.settings.serving.log_dir

    def configure(self, monitoring: dict[str, Any]) -> Settings:
        """Write ``monitoring`` into modelyard.yaml; reload the settings."""
        path = self.root / "modelyard.yaml"
        config = yaml.safe_load(path.read_text())
        config["monitoring"] = monitoring
        path.write_text(yaml.safe_dump(config))
        self.settings = load_settings(self.root, environ={})
        return self.settings


@pytest.fixture(scope="session")
def _base_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pipeline]:
    root = tmp_path_factory.mktemp("monitoring-base") / "project"
    init_project(root)
    settings = load_settings(root, environ={})
    model, frame = make_model()
    registry = ModelRegistry(settings)
    try:
        logged = registry.log_model(model, name=NAME, training_frame=frame)
        assert logged.version == 1
        registry.set_alias(f"{NAME}/1", "production")
    finally:
        registry.close()
    return root, model


@pytest.fixture
def project(
    _base_project: tuple[Path, Pipeline], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    """A private copy of the base project (churn v1 = production)."""
    base, model = _base_project
    root = tmp_path / "project"
    shutil.copytree(base, root)
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    yield Project(load_settings(root, environ={}), model)


@dataclasses.dataclass
class Logged:
    """What ``write_days`` wrote, per day: the frame, the probabilities, the labels."""

    frames: dict[int, pd.DataFrame] = dataclasses.field(default_factory=dict)
    proba: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    labels: dict[int, list[int | None]] = dataclasses.field(default_factory=dict)


def write_days(
    project: Project,
    days: Iterable[int],
    *,
    shifted: Iterable[int] = (),
    rows: int = 400,
    per_request: int = 10,
    unlabelled_share: float = 0.1,
    shift: float = 1.5,
    seed: int = 7,
) -> Logged:
    """Log ``rows`` rows on each of ``days`` (days after DAY0) with the model's outputs."""
    rng = np.random.default_rng(seed)
    out = Logged()
    moved = set(shifted)
    with PredictionLog(project.log_dir) as log:
        for day in days:
            frame = make_frame(rng, rows, shift if day in moved else 0.0)
            labels = true_labels(rng, frame)
            proba = project.model.predict_proba(frame)
            start = DAY0 + timedelta(days=day)
            kept: list[int | None] = []
            for r, first in enumerate(range(0, rows, per_request)):
                part = slice(first, first + per_request)
                chunk = frame.iloc[part]
                request_id = f"d{day}-r{r}"
                when = start + timedelta(seconds=60 + r * 30)
                us = int(when.timestamp() * 1_000_000)
                log.append_blocking(
                    PredictionRecord(
                        request_id=request_id,
                        time_us=us,
                        model=NAME,
                        version=1,
                        rows=len(chunk),
                        inputs={
                            "amount": [float(v) for v in chunk["amount"]],
                            "age": [int(v) for v in chunk["age"]],
                            "plan": [str(v) for v in chunk["plan"]],
                        },
                        outputs={
                            "label": [int(v) for v in np.argmax(proba[part], axis=1)],
                            "proba_0": [float(v) for v in proba[part, 0]],
                            "proba_1": [float(v) for v in proba[part, 1]],
                        },
                        latency_us=500,
                    )
                )
                if rng.uniform() < unlabelled_share:
                    kept += [None] * len(chunk)
                    continue
                values = [int(v) for v in labels[part]]
                log.append_feedback_blocking(
                    FeedbackRecord(request_id=request_id, label=values, time_us=us + 3_600_000_000)
                )
                kept += values
            out.frames[day], out.proba[day], out.labels[day] = frame, proba, kept
    return out
