"""One project for the models, pipelines and lineage pages' tests, built once per session.

Three runs of a small real pipeline (inline executor): the first trains ``toy/1``, the
second reuses two cached steps and trains ``toy/2``, the third fails in ``train`` (a
negative C) so ``evaluate`` is skipped. ``toy@production`` is ``toy/1``; a gate
evaluation of ``toy/2`` against production is stored with confidence intervals; an
Optuna study with six trials lives in the project's study storage; ``toy/1`` has a
drift window and an open incident; an agent retrain action names 1 -> 2.
"""

from __future__ import annotations

import json
import random
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from sqlalchemy import insert

from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import StepFailedError
from modelyard.gates.base import GateResult
from modelyard.gates.records import GateReport, save_report
from modelyard.models.flavors.custom import PythonModel
from modelyard.pipelines import load_pipelines, run_pipeline
from modelyard.pipelines.studies import close_study_storages, open_study_storage
from modelyard.registry.client import ModelRegistry
from modelyard.store.database import open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult
from modelyard.store.schema import agent_actions

FLOW = """
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import modelyard
from modelyard import log_metric, pipeline, step
from modelyard.models.flavors.custom import PythonModel


class Cut(PythonModel):
    classes_ = [0, 1]

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, frame):
        return (frame["x"].to_numpy() > self.cut).astype(int)

    def predict_proba(self, frame):
        p = np.clip(frame["x"].to_numpy() - self.cut + 0.5, 0.0, 1.0)
        return np.column_stack([1 - p, p])


@step
def load(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@step(outputs=("train", "test"))
def split(frame: pd.DataFrame, test_month: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame[frame.month < test_month], frame[frame.month >= test_month]


@step
def train(train: pd.DataFrame, c: float = 1.0) -> dict[str, float]:
    if c <= 0:
        raise ValueError(f"c must be positive, got {c}")
    modelyard.log_model(Cut(c / 4), name="toy", training_frame=train[["x", "plan"]])
    return {"cut": c / 4}


@step
def evaluate(model: dict[str, float], test: pd.DataFrame) -> dict[str, float]:
    log_metric("rows", len(test))
    return {"rows": float(len(test))}


@pipeline
def flights(data: Path = Path("flights.csv"), c: float = 1.0, test_month: int = 6) -> None:
    frame = load(data)
    tr, te = split(frame, test_month=test_month)
    model = train(tr, c=c)
    evaluate(model, te)
"""

STUDY = "toy-search"


class Threshold(PythonModel):
    """A model that needs no library: ``x`` above a cut is class 1."""

    classes_ = (0, 1)

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, frame: Any) -> Any:
        return (frame["x"].to_numpy() > self.cut).astype(int)


def log_two_versions(settings: Settings) -> None:
    """``toy/1`` and ``toy/2`` logged without a pipeline (any metadata store)."""
    frame = pd.DataFrame({"x": [0.1, 0.5, 0.9, 0.3], "plan": ["a", "b", "a", "a"]})
    with ModelRegistry(settings) as registry:
        registry.log_model(Threshold(0.5), name="toy", training_frame=frame)
        registry.log_model(Threshold(0.4), name="toy", training_frame=frame)


def _write_data(path: Path, rows: int = 120) -> None:
    rng = random.Random(0)
    lines = ["month,x,plan,y"]
    for i in range(rows):
        x = rng.random()
        plan = "a" if rng.random() < 0.6 else "b"
        lines.append(f"{1 + i % 12},{x:.6f},{plan},{int(x + rng.random() * 0.3 > 0.6)}")
    path.write_text("\n".join(lines) + "\n")


def gate_report() -> GateReport:
    metric = GateResult(
        gate="metric:auc",
        kind="metric",
        passed=True,
        required=True,
        summary="auc 0.812 >= 0.7",
        numbers={"value": 0.812, "min": 0.7, "max": None, "rows": 40},
        ci=(0.74, 0.88),
    )
    champion = GateResult(
        gate="champion:auc",
        kind="champion",
        passed=True,
        required=True,
        summary="auc 0.812 vs champion v1 0.80: diff +0.012",
        numbers={"candidate": 0.812, "champion": 0.8, "diff": 0.012, "rows": 40},
        ci=(-0.01, 0.034),
    )
    signature = GateResult(
        gate="signature",
        kind="signature",
        passed=True,
        required=True,
        summary="no breaking change",
        numbers={},
        ci=None,
    )
    return GateReport(
        model="toy",
        version=2,
        against="production",
        champion_version=1,
        eval_digest="e" * 64,
        config_digest="",
        results=(metric, champion, signature),
        created_by="tester",
    )


def _study(settings: Settings) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_study_storage(settings.db_url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    study.optimize(
        lambda t: (
            (t.suggest_float("lr", 0.01, 1.0) - 0.3) ** 2 + 0.1 * t.suggest_int("depth", 1, 4)
        ),
        n_trials=6,
    )
    close_study_storages()


def build(root: Path) -> Settings:
    """Write and fill the project under ``root``; its settings."""
    init_project(root)
    # the default, relative store: a copy of the folder is an independent project
    (root / CONFIG_FILE).write_text("pipelines:\n  executor: inline\n")
    (root / "pipelines.py").write_text(textwrap.dedent(FLOW))
    _write_data(root / "flights.csv")
    settings = load_settings(root, environ={})
    flights = load_pipelines(settings)["flights"]
    run_pipeline(flights, {"c": 0.5}, settings=settings, executor="inline")
    run_pipeline(flights, {"c": 2.0}, settings=settings, executor="inline")
    with pytest.raises(StepFailedError):
        run_pipeline(flights, {"c": -1.0}, settings=settings, executor="inline")
    add_records(settings)
    _study(settings)
    return settings


def add_records(settings: Settings) -> None:
    """On a project with ``toy/1`` and ``toy/2``: production at 1, a gate evaluation of 2,
    a drift window with an alarm and an open incident on 1, an agent retrain 1 -> 2."""
    registry = ModelRegistry(settings)
    try:
        registry.set_alias("toy/1", "production", reason="first model", actor="tester")
        save_report(registry.db, gate_report())
    finally:
        registry.close()
    db = open_database(settings.db_url)
    try:
        now_us = time.time_ns() // 1000
        day = 86_400_000_000
        results = MonitorResults(db)
        results.save_window(
            WindowResult("toy", 1, "drift", now_us - day, now_us, 50, True, {"features": {}})
        )
        results.record_incident(
            "toy", 1, "drift", "x", breaching=True, detail={"value": 0.31, "threshold": 0.2}
        )
        with db.write() as conn:
            conn.execute(
                insert(agent_actions).values(
                    id="a" * 32,
                    model="toy",
                    kind="retrain",
                    state="promoted",
                    in_flight=None,
                    incident_id=None,
                    incident_opened_us=None,
                    rule="drift",
                    champion_version=1,
                    candidate_version=2,
                    pipeline="flights",
                    params=json.dumps({"c": 2.0}),
                    window_start_us=now_us - day,
                    window_end_us=now_us,
                    pipeline_run_id=None,
                    gate_evaluation_id=None,
                    canary_started_us=None,
                    decision="promoted",
                    reason="drift on x",
                    detail="{}",
                    created_us=now_us,
                    updated_us=now_us,
                    recorded_us=now_us,
                    created_by="agent",
                )
            )
    finally:
        db.close()


_BUILT: dict[str, Settings] = {}


def shared_project(factory: pytest.TempPathFactory) -> Settings:
    """The project, built on first use in this session; tests that change it use a copy."""
    if "p" not in _BUILT:
        _BUILT["p"] = build(factory.mktemp("u2-project") / "project")
    return _BUILT["p"]


def project_copy(factory: pytest.TempPathFactory) -> Settings:
    """An independent copy of the shared project (its own metadata, artifacts, studies)."""
    source = shared_project(factory)
    target = factory.mktemp("u2-copy") / "project"
    shutil.copytree(source.project_dir, target)
    return load_settings(target, environ={})
