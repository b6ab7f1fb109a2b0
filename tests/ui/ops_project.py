"""A project for the features, deployments and monitoring pages: everything real.

``make_ops_project(root)`` builds, through the public clients only:

- features: entity ``carrier``, view ``delays`` (ttl 1 day) over ``data/flights.parquet``,
  service ``model``; applied and materialized (so the online store has the values);
- models: ``churn`` v1 and v2 (a small ``PythonModel`` with a real reference profile),
  ``production`` -> v1, ``canary`` -> v2, and a traffic policy sending 25% to the
  canary;
- the prediction log, written like the server's with ``PredictionLog``: ``DAYS`` days
  of requests, every fourth one answered by the canary v2, known latencies, labels as
  feedback; ``tenure`` shifted on the last day so it drifts;
- monitoring: ``Monitor.run`` over the log in daily windows (the real drift and
  performance results), one open incident with an agent action (failed), one resolved
  incident, and an agent action whose candidate v2 awaits approval.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from modelyard.agent.records import ActionStore
from modelyard.config import Settings, TrafficSettings, init_project, load_settings
from modelyard.features.store import FeatureStore
from modelyard.models.flavors.custom import PythonModel
from modelyard.monitoring.monitor import Monitor
from modelyard.registry.client import ModelRegistry
from modelyard.store.database import open_database
from modelyard.store.monitor_results import MonitorResults
from modelyard.store.predlog import ErrorRecord, FeedbackRecord, PredictionLog, PredictionRecord

__all__ = ["DAY0", "DAYS", "OpsProject", "Score", "make_ops_project", "shared_ops_project"]

DAY0 = datetime(2024, 3, 4, tzinfo=UTC)
DAYS = 4
REQUESTS_PER_DAY = 40
ROWS_PER_REQUEST = 5

FEATURES = """\
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

carrier = Entity("carrier", join_keys=["carrier"])
flights = FileSource("data/flights.parquet", timestamp_field="ts")
delays = FeatureView("delays", entities=[carrier], source=flights, ttl="1d",
                     features=[Feature("delay", "float"), Feature("n", "int")])
model = FeatureService("model", features=[delays])
"""


class Score(PythonModel):
    """A logistic score of ``tenure`` and ``spend``: classes "0" and "1"."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self.classes_ = np.array(["0", "1"])

    def get_state(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        z = frame["tenure"].to_numpy() * self.weight + 0.5 * frame["spend"].to_numpy()
        p = 1 / (1 + np.exp(-z))
        return np.column_stack([1 - p, p])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.where(self.predict_proba(frame)[:, 1] > 0.5, "1", "0")


@dataclasses.dataclass
class OpsProject:
    settings: Settings
    #: (version, route, time_us, latency_us, rows) of every logged request
    requests: list[tuple[int, str, int, int, int]]
    open_incident: int
    resolved_incident: int
    action_id: str
    awaiting_id: str
    #: (version, route, time_us) of every logged error answer (None, None: no version chosen)
    errors: list[tuple[int | None, str | None, int]] = dataclasses.field(default_factory=list)


def _frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {"tenure": rng.normal(loc=shift, size=rows), "spend": rng.normal(size=rows)}
    )


def _features(root: Path, now: datetime) -> None:
    rng = np.random.default_rng(3)
    rows = 60
    (root / "data").mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "carrier": rng.choice(["AA", "UA", "DL"], size=rows),
            "ts": pd.to_datetime(
                [now - timedelta(hours=int(h)) for h in rng.integers(1, 200, size=rows)], utc=True
            ),
            "delay": rng.uniform(-5, 60, size=rows),
            "n": rng.integers(0, 100, size=rows),
        }
    ).to_parquet(root / "data" / "flights.parquet", index=False)
    (root / "features.py").write_text(FEATURES)


def make_ops_project(root: Path, db_url: str | None = None) -> OpsProject:
    init_project(root)
    settings = load_settings(root, environ={})
    if db_url is not None:
        settings = msgspec.structs.replace(settings, db_url=db_url)
    traffic = TrafficSettings(primary="production", canary="canary", canary_weight=0.25)
    settings = msgspec.structs.replace(
        settings, serving=msgspec.structs.replace(settings.serving, traffic={"churn": traffic})
    )
    now = datetime.now(UTC)
    _features(root, now)
    with FeatureStore(settings) as store:
        store.apply()
        store.materialize(None, now)

    rng = np.random.default_rng(11)
    training = _frame(rng, 300)
    models = {1: Score(1.0), 2: Score(1.5)}
    registry = ModelRegistry(settings)
    try:
        for model in models.values():
            registry.log_model(model, name="churn", training_frame=training)
        registry.set_alias("churn/1", "production")
        registry.set_alias("churn/2", "canary")
    finally:
        registry.close()

    requests: list[tuple[int, str, int, int, int]] = []
    errors: list[tuple[int | None, str | None, int]] = []
    with PredictionLog(root / settings.serving.log_dir, durable=False) as log:
        for day in range(DAYS):
            shift = 2.0 if day == DAYS - 1 else 0.0
            for r in range(REQUESTS_PER_DAY):
                version, route = (2, "canary") if r % 4 == 3 else (1, "primary")
                chunk = _frame(rng, ROWS_PER_REQUEST, shift)
                proba = models[version].predict_proba(chunk)
                us = int((DAY0 + timedelta(days=day, minutes=10 + 30 * r)).timestamp() * 1e6)
                latency = int(rng.integers(200, 20_000))
                request_id = f"d{day}-r{r}"
                log.append_blocking(
                    PredictionRecord(
                        request_id=request_id,
                        record_id=request_id,
                        time_us=us,
                        model="churn",
                        version=version,
                        rows=ROWS_PER_REQUEST,
                        inputs={c: [float(v) for v in chunk[c]] for c in chunk.columns},
                        outputs={
                            "label": [str(int(p > 0.5)) for p in proba[:, 1]],
                            "proba_0": [float(v) for v in proba[:, 0]],
                            "proba_1": [float(v) for v in proba[:, 1]],
                        },
                        latency_us=latency,
                        route=route,
                    )
                )
                requests.append((version, route, us, latency, ROWS_PER_REQUEST))
                # error answers beside them: some after a version was chosen, some before
                for chosen, status, kind, late_us in (
                    (r % 5 == 2, 500, "model", 1_000_000),
                    (r % 9 == 4, 422, "invalid_input", 2_000_000),
                ):
                    if not chosen:
                        continue
                    picked = (version, route) if status == 500 else (None, None)
                    log.append_error_blocking(
                        ErrorRecord(
                            record_id=f"e{late_us}-{request_id}",
                            request_id=f"e-{request_id}",
                            time_us=us + late_us,
                            model="churn",
                            protocol="v1",
                            status=status,
                            error=kind,
                            latency_us=latency,
                            version=picked[0],
                            route=picked[1],
                        )
                    )
                    errors.append((*picked, us + late_us))  # fmt: skip
                labels = [int(v) for v in rng.integers(0, 2, size=ROWS_PER_REQUEST)]
                log.append_feedback_blocking(
                    FeedbackRecord(request_id=request_id, label=labels, time_us=us + 60_000_000)
                )

    with Monitor(settings) as monitor:
        monitor.run("churn/1", window="1d", notify=False)

    db = open_database(settings.db_url)
    try:
        results = MonitorResults(db)
        opened, _ = results.record_incident(
            "churn", 1, "tenure-drift", "feature:tenure", breaching=True, detail={"window": 3}
        )
        results.record_incident(
            "churn", 1, "auc-floor", "auc", breaching=True, detail={"auc": 0.51}
        )
        resolved, _ = results.record_incident(
            "churn", 1, "auc-floor", "auc", breaching=False, detail={"auc": 0.7}
        )
        assert opened is not None and resolved is not None
        action = ActionStore(db).create(
            model="churn",
            kind="retrain",
            state="failed",
            now_us=opened.opened_at_us + 1,
            incident=opened,
            rule="tenure-drift",
            champion_version=1,
            reason="pipeline train failed",
        )
        assert action is not None
        store = ActionStore(db)
        pending = store.create(
            model="churn", kind="retrain", state="pending", now_us=opened.opened_at_us + 2
        )
        assert pending is not None
        awaiting = store.advance(
            pending,
            "awaiting_approval",
            now_us=opened.opened_at_us + 3,
            champion_version=1,
            candidate_version=2,
        )
    finally:
        db.close()
    return OpsProject(
        settings, requests, opened.id, resolved.id, action.id, awaiting.id, errors=errors
    )


_BUILT: dict[str, OpsProject] = {}


def shared_ops_project(factory: pytest.TempPathFactory) -> OpsProject:
    """One ``make_ops_project`` per test session, shared by the three page test files."""
    if "sqlite" not in _BUILT:
        _BUILT["sqlite"] = make_ops_project(factory.mktemp("ops") / "project")
    return _BUILT["sqlite"]
