"""A tiny continuous-training project the agent tests share (reuse it: ``ct_project``).

``churn`` v1 is a LogisticRegression on two features (``x``, ``z``) trained on concept
``a`` (the label follows ``x``) and holds ``production``. The project's prediction log
holds days 0-3 of concept ``a`` and days 4-6 of concept ``b`` (the label follows ``z``
and ``-x``: v1's AUC falls far below the alert's 0.7), each row labelled through
feedback, written with the real ``PredictionLog`` writer as the server writes it;
``data.csv`` holds the same labelled rows, the training data of the project's pipeline
``retrain_churn`` (``load`` the window's rows -> ``fit_register`` a LogisticRegression
as a new version of ``churn``; ``fail=true`` makes the fit raise, ``promote=true``
moves ``production`` to it as a pipeline written for manual runs would).
modelyard.yaml declares the alert ``auc-low`` (``auc`` below 0.7) with
``action.retrain {pipeline: retrain_churn, window: 3d}``, ``agent.models.churn``
(cool-down 1d, gate window 2d, canary with ``min_samples`` 50, no latency test), the
traffic policy ``churn {canary: canary, canary_weight: 0.5}`` and the gates of
``churn`` (champion on AUC). Pipelines run inline.

``CTProject.serve(day, concept)`` logs one more day of traffic as the server would
route it: each request goes to ``@canary`` with the policy's weight while that alias
exists, else to ``@production``, answered by that version's package. ``at(day)`` is the
agent's clock at the start of that day. The base project is built once per session and
each test gets a private copy (a SQLite store and artifacts inside the folder).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings, init_project, load_settings
from modelyard.registry import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord

MODEL = "churn"
DAY0 = datetime(2024, 3, 4, tzinfo=UTC)
FEATURES = ["x", "z"]
ROWS_PER_DAY = 480
PER_REQUEST = 10

PIPELINES = textwrap.dedent(
    '''
    """The tiny project's retrain pipeline (written by tests/agent/conftest.py)."""

    from __future__ import annotations

    from pathlib import Path

    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from modelyard.pipelines import pipeline, step
    from modelyard.registry.fluent import get_registry, log_model

    HERE = Path(__file__).parent


    @step
    def load(window_start: str | None = None, window_end: str | None = None) -> pd.DataFrame:
        frame = pd.read_csv(HERE / "data.csv")
        when = pd.to_datetime(frame["time"], utc=True)
        keep = pd.Series(True, index=frame.index)
        if window_start is not None:
            keep &= when >= pd.Timestamp(window_start)
        if window_end is not None:
            keep &= when < pd.Timestamp(window_end)
        return frame[keep].reset_index(drop=True)


    @step
    def fit_register(frame: pd.DataFrame, fail: bool = False, promote: bool = False) -> int:
        if fail:
            raise ValueError("the training data is broken")
        model = LogisticRegression().fit(frame[["x", "z"]], frame["label"])
        logged = log_model(model, name="churn", training_frame=frame[["x", "z"]])
        if promote:  # a pipeline written for manual runs moves production itself
            get_registry().set_alias(str(logged.ref), "production", reason="pipeline")
        return logged.version


    @pipeline
    def retrain_churn(
        window_start: str | None = None,
        window_end: str | None = None,
        fail: bool = False,
        promote: bool = False,
    ) -> None:
        fit_register(load(window_start, window_end), fail=fail, promote=promote)
    '''
)

CONFIG: dict[str, Any] = {
    "pipelines": {"executor": "inline"},
    "monitoring": {
        "window": "1d",
        "alerts": [
            {
                "name": "auc-low",
                "signal": "auc",
                "below": 0.7,
                "k": 1,
                "m": 1,
                "action": {"retrain": {"pipeline": "retrain_churn", "window": "3d"}},
            }
        ],
    },
    "serving": {
        "traffic": {MODEL: {"primary": "production", "canary": "canary", "canary_weight": 0.5}}
    },
    "agent": {
        "models": {
            MODEL: {
                "approve": "auto",
                "cooldown": "1d",
                "gate_window": "2d",
                "canary": {
                    "min_samples": 50,
                    "horizon": 5000,
                    "max_duration": "7d",
                    "latency": False,
                    "tau": 0.5,
                },
            }
        }
    },
    "gates": {
        MODEL: {"label": "label", "checks": [{"type": "champion", "metric": "auc", "margin": 0.0}]}
    },
}


def make_frame(rng: np.random.Generator, rows: int, concept: str) -> pd.DataFrame:
    """Rows of ``concept``: ``a`` (the label follows x) or ``b`` (it follows z - x)."""
    frame = pd.DataFrame({"x": rng.normal(size=rows), "z": rng.normal(size=rows)})
    score = 2.5 * frame["x"] if concept == "a" else 2.5 * (frame["z"] - frame["x"])
    p = 1 / (1 + np.exp(-score))
    frame["label"] = (rng.uniform(size=rows) < p).astype(np.int64)
    return frame


def at(day: float) -> datetime:
    """The agent's clock at the start of ``day`` (days after DAY0)."""
    return DAY0 + timedelta(days=day)


@dataclasses.dataclass
class CTProject:
    """A private copy of the tiny project."""

    settings: Settings
    _models: dict[int, Any] = dataclasses.field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.settings.project_dir

    @property
    def log_dir(self) -> Path:
        return self.root / self.settings.serving.log_dir

    def configure(self, **sections: Any) -> Settings:
        """Merge ``sections`` (dicts deep-merged key by key) into modelyard.yaml; reload."""
        path = self.root / "modelyard.yaml"
        config = yaml.safe_load(path.read_text()) or {}
        _merge(config, sections)
        path.write_text(yaml.safe_dump(config))
        self.settings = load_settings(self.root, environ={})
        return self.settings

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.settings)

    def aliases(self) -> dict[str, int]:
        with self.registry() as registry:
            found = [m for m in registry.list_models() if m.name == MODEL]
        return dict(found[0].aliases) if found else {}

    def _model(self, registry: ModelRegistry, version: int) -> Any:
        if version not in self._models:
            self._models[version] = registry.load(ModelRef(MODEL, version=version))
        return self._models[version]

    def serve(self, day: int, concept: str, *, seed: int | None = None) -> int:
        """Log ``day``'s traffic (labelled) as the server routes it; the rows logged."""
        rng = np.random.default_rng(1000 + day if seed is None else seed)
        aliases = self.aliases()
        policy = self.settings.serving.traffic[MODEL]
        frame = make_frame(rng, ROWS_PER_DAY, concept)
        routes = []
        for _ in range(0, ROWS_PER_DAY, PER_REQUEST):
            canary = policy.canary in aliases and rng.uniform() < policy.canary_weight
            routes.append("canary" if canary else "primary")
        with self.registry() as registry:
            # one scoring per version, sliced per request (the same numbers, far faster)
            scores = {
                route: self._model(registry, aliases[alias]).scores(frame[FEATURES])
                for route, alias in (("primary", policy.primary), ("canary", policy.canary))
                if alias in aliases
            }
        with PredictionLog(self.log_dir, durable=False) as log:
            for r, route in enumerate(routes):
                part = slice(r * PER_REQUEST, (r + 1) * PER_REQUEST)
                alias = policy.canary if route == "canary" else policy.primary
                chunk = frame.iloc[part]
                _log(log, day, r, chunk, scores[route][part], aliases[alias], route)
        _append_data(self.root, day, frame)
        return ROWS_PER_DAY


def _log(
    log: PredictionLog,
    day: int,
    r: int,
    chunk: pd.DataFrame,
    proba: np.ndarray,
    version: int,
    route: str,
) -> None:
    request_id = f"d{day}-r{r}"
    us = int((at(day) + timedelta(minutes=30 + r * 20)).timestamp() * 1_000_000)
    log.append_blocking(
        PredictionRecord(
            request_id=request_id,
            record_id=request_id,
            time_us=us,
            model=MODEL,
            version=version,
            rows=len(chunk),
            inputs={n: [float(v) for v in chunk[n]] for n in FEATURES},
            outputs={
                "label": [int(v) for v in np.argmax(proba, axis=1)],
                "proba_0": [float(v) for v in proba[:, 0]],
                "proba_1": [float(v) for v in proba[:, 1]],
            },
            latency_us=800,
            route=route,
        )
    )
    log.append_feedback_blocking(
        FeedbackRecord(
            request_id=request_id,
            record_id=request_id,
            label=[int(v) for v in chunk["label"]],
            time_us=us + 600_000_000,
        )
    )


def _append_data(root: Path, day: int, frame: pd.DataFrame) -> None:
    rows = frame.copy()
    minutes = 30 + (np.arange(len(rows)) // PER_REQUEST) * 20
    rows["time"] = [(at(day) + timedelta(minutes=int(m))).isoformat() for m in minutes]
    path = root / "data.csv"
    rows.to_csv(path, mode="a", header=not path.exists(), index=False)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture(scope="session")
def _ct_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agent-base") / "project"
    init_project(root)
    path = root / "modelyard.yaml"
    config = yaml.safe_load(path.read_text()) or {}
    _merge(config, CONFIG)
    path.write_text(yaml.safe_dump(config))
    (root / "pipelines.py").write_text(PIPELINES)
    settings = load_settings(root, environ={})
    rng = np.random.default_rng(5)
    train = make_frame(rng, 800, "a")
    model = LogisticRegression().fit(train[FEATURES], train["label"])
    with ModelRegistry(settings) as registry:
        logged = registry.log_model(model, name=MODEL, training_frame=train[FEATURES])
        assert logged.version == 1
        registry.set_alias(f"{MODEL}/1", "production")
    project = CTProject(settings)
    for day in range(7):
        project.serve(day, "a" if day < 4 else "b")
    return root


def copy_project(base: Path, root: Path) -> CTProject:
    """A private copy of the project at ``base`` in ``root``."""
    shutil.copytree(base, root)
    return CTProject(load_settings(root, environ={}))


@pytest.fixture
def ct_project(
    _ct_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CTProject]:
    """A private copy of the tiny project (churn v1 = production, days 0-6 logged)."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_ACTOR", "agent-test")
    yield copy_project(_ct_base, tmp_path / "project")
