"""``modelyard gate`` and ``models promote|show|history`` run as a user runs them.

The CLI runs in-process (``modelyard.cli.app.main``) on a real project whose
modelyard.yaml declares the gates, with real models, files and prediction log.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from modelyard.cli.app import main
from modelyard.cli.gate import labels_as
from modelyard.config import Settings
from modelyard.registry import ModelRegistry
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
NAME = "flights-delay"


class gcli_Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, _ANSI.sub("", out), _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


def gcli_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "origin": rng.integers(0, 3, size=rows)})
    p = 1 / (1 + np.exp(-2.0 * frame["x"]))
    frame["is_delayed"] = (rng.uniform(size=rows) < p).astype(np.int64)
    return frame


def gcli_yaml(project: Path, auc_min: float) -> None:
    """Declare the gates of NAME in the project's modelyard.yaml (replacing any)."""
    path = project / "modelyard.yaml"
    text = path.read_text().split("\ngates:")[0]
    path.write_text(
        text
        + f"""
gates:
  {NAME}:
    label: is_delayed
    eval: eval.csv
    checks:
      - {{type: metric, metric: auc, min: {auc_min}}}
      - {{type: metric, metric: log_loss, max: 0.01, required: false}}
      - {{type: champion, metric: auc, margin: 0.05}}
      - {{type: slices, by: [origin], metric: auc, min_rows: 50, max_drop: 0.1}}
"""
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite: the CLI is a thin layer over registry and gates, tested on every backend."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def gcli_project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NAME/1 (holds production) and NAME/2, both good models; eval.csv; gates declared."""
    for key in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    monkeypatch.setenv("MODELYARD_ACTOR", "cli-user")
    monkeypatch.chdir(settings.project_dir)
    train = gcli_frame(600, seed=1)
    features = train[["x", "origin"]]
    with ModelRegistry(settings) as registry:
        for c in (0.05, 1.0):
            model = LogisticRegression(C=c).fit(features, train["is_delayed"])
            registry.log_model(model, name=NAME, training_frame=features)
        registry.set_alias(f"{NAME}/1", "production")
    gcli_frame(900, seed=2).to_csv(settings.project_dir / "eval.csv", index=False)
    gcli_yaml(settings.project_dir, 0.6)
    return settings.project_dir


@pytest.fixture
def gcli(gcli_project: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> gcli_Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return gcli_Result(code, out, err)

    return run


def test_gate_passes_exits_0_and_stores_the_evidence(gcli: Any) -> None:
    result = gcli("gate", f"{NAME}/2")
    assert result.code == 0, result.err
    for column in ("gate", "required", "passed", "summary", "CI"):
        assert column in result.out
    assert "metric:auc" in result.out and "champion" in result.out
    report = gcli("gate", f"{NAME}/2", "--json").json()
    assert report["passed"] is True and report["champion_version"] == 1
    assert {r["kind"] for r in report["results"]} == {"metric", "champion", "slices"}
    # the optional log_loss gate failed and did not block
    [loss] = [r for r in report["results"] if r["gate"] == "metric:log_loss"]
    assert (loss["passed"], loss["required"]) == (False, False)
    evidence = gcli("models", "show", f"{NAME}/2", "--json").json()["evidence"]
    assert [(e["alias"], e["state"], e["evaluation_id"]) for e in evidence] == [
        ("production", "passed", report["id"])
    ]


def test_gate_exits_1_when_a_required_gate_fails(gcli: Any, gcli_project: Path) -> None:
    gcli_yaml(gcli_project, 0.999)
    result = gcli("gate", f"{NAME}/2", "--json")
    assert result.code == 1, result.err
    assert result.json()["passed"] is False
    table = gcli("gate", f"{NAME}/2")
    assert table.code == 1 and "FAILED" in table.out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eval", "eval.csv", "--window", "3"], "got both"),
        (["--eval", "missing.parquet"], "missing.parquet"),
        (["--window", "0"], "--window"),
        (["--against", "not an alias"], "alias"),
    ],
)
def test_gate_bad_input_exits_2_with_one_line(gcli: Any, args: list[str], words: str) -> None:
    result = gcli("gate", f"{NAME}/2", *args)
    assert result.code == 2, (result.out, result.err)
    assert words in result.err
    assert "Traceback" not in result.err


def test_gate_of_an_unknown_model_exits_2(gcli: Any) -> None:
    result = gcli("gate", "nosuch/1")
    assert result.code == 2 and "nosuch" in result.err


def test_promote_is_refused_without_evidence_exit_1(gcli: Any) -> None:
    result = gcli("models", "promote", f"{NAME}/2", "--to", "production")
    assert result.code == 1
    assert (
        f"no gate evaluation of {NAME}/2 against 'production': run modelyard gate {NAME}/2"
        in result.err
    )
    assert gcli("models", "show", f"{NAME}@production", "--json").json()["version"]["version"] == 1


def test_promote_after_passing_gates_moves_and_history_shows_both(gcli: Any) -> None:
    report = gcli("gate", f"{NAME}/2", "--json").json()
    result = gcli("models", "promote", f"{NAME}/2", "--to", "production", "--json")
    assert result.code == 0, result.err
    done = result.json()
    assert (done["version"], done["previous"], done["forced"]) == (2, 1, False)
    assert done["evidence"]["evaluation_id"] == report["id"]
    history = gcli("models", "history", NAME, "--json").json()
    actions = [row["action"] for row in history]
    assert actions[-2:] == ["gate", "promote"]
    assert history[-1]["reason"] == f"gates passed: evaluation {report['id']}"
    table = gcli("models", "history", NAME)
    assert "gate passed" in table.out and "promote" in table.out


def test_promote_failed_gates_lists_each_one_per_line(gcli: Any, gcli_project: Path) -> None:
    gcli_yaml(gcli_project, 0.999)
    assert gcli("gate", f"{NAME}/2").code == 1
    result = gcli("models", "promote", f"{NAME}/2", "--to", "production")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert any(line.strip().startswith("metric:auc:") for line in lines)
    assert not any("log_loss" in line for line in lines)


def test_promote_stale_when_the_champion_moved(gcli: Any) -> None:
    assert gcli("gate", f"{NAME}/2").code == 0
    assert gcli("models", "unalias", NAME, "production").code == 0
    result = gcli("models", "promote", f"{NAME}/2", "--to", "production")
    assert result.code == 1
    assert "stale: the champion changed from v1 to no version" in result.err


def test_promote_stale_when_the_gate_config_changed(gcli: Any, gcli_project: Path) -> None:
    assert gcli("gate", f"{NAME}/2").code == 0
    gcli_yaml(gcli_project, 0.55)
    result = gcli("models", "promote", f"{NAME}/2", "--to", "production")
    assert result.code == 1 and "gate config changed" in result.err
    shown = gcli("models", "show", f"{NAME}/2")
    assert "stale" in shown.out


def test_force_needs_a_reason_and_is_audited(gcli: Any) -> None:
    refused = gcli("models", "promote", f"{NAME}/2", "--to", "production", "--force")
    assert refused.code == 2 and "reason" in refused.err
    forced = gcli(
        "models", "promote", f"{NAME}/2", "--to", "production", "--force", "--reason", "hotfix"
    )
    assert forced.code == 0, forced.err
    assert "forced over missing evidence" in forced.out
    last = gcli("models", "history", NAME, "--json").json()[-1]
    assert (last["action"], last["actor"]) == ("promote_forced", "cli-user")
    assert last["reason"].startswith("hotfix")


def gcli_log(project: Path, frame: pd.DataFrame, *, version: int, days_ago: float) -> None:
    """Log ``frame``'s rows as served by NAME/version, each request labelled later."""
    when = datetime.now(UTC) - timedelta(days=days_ago)
    with PredictionLog(project / ".modelyard" / "predictions") as log:
        for i, first in enumerate(range(0, len(frame), 10)):
            chunk = frame.iloc[first : first + 10]
            us = int((when + timedelta(seconds=i)).timestamp() * 1_000_000)
            request_id = f"r{days_ago}-{i}"
            log.append_blocking(
                PredictionRecord(
                    request_id=request_id,
                    time_us=us,
                    model=NAME,
                    version=version,
                    rows=len(chunk),
                    inputs={
                        "x": [float(v) for v in chunk["x"]],
                        "origin": [int(v) for v in chunk["origin"]],
                    },
                    outputs={"label": [0] * len(chunk)},
                    latency_us=100,
                )
            )
            log.append_feedback_blocking(
                FeedbackRecord(
                    request_id=request_id,
                    label=[int(v) for v in chunk["is_delayed"]],
                    time_us=us + 1000,
                )
            )


def test_gate_window_evaluates_the_labelled_log_of_the_last_n_days(
    gcli: Any, gcli_project: Path, settings: Settings
) -> None:
    recent, old = gcli_frame(400, seed=3), gcli_frame(300, seed=4)
    log_dir = settings.project_dir / settings.serving.log_dir
    assert log_dir == gcli_project / ".modelyard" / "predictions"
    gcli_log(gcli_project, recent, version=1, days_ago=1)
    gcli_log(gcli_project, old, version=1, days_ago=20)
    result = gcli("gate", f"{NAME}/2", "--window", "7", "--json")
    assert result.code == 0, result.err
    report = result.json()
    [auc] = [r for r in report["results"] if r["gate"] == "metric:auc"]
    assert auc["numbers"]["rows"] == len(recent)  # the 20-day-old rows are outside
    everything = gcli("gate", f"{NAME}/2", "--window", "30", "--json").json()
    [auc30] = [r for r in everything["results"] if r["gate"] == "metric:auc"]
    assert auc30["numbers"]["rows"] == len(recent) + len(old)


def test_gate_window_without_labelled_rows_exits_2(gcli: Any) -> None:
    result = gcli("gate", f"{NAME}/2", "--window", "7")
    assert result.code == 2
    assert "labelled rows" in result.err and "--eval FILE" in result.err


@given(st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=20))
def test_labels_as_restores_integer_classes(values: list[int | None]) -> None:
    text = [None if v is None else str(v) for v in values]
    assert labels_as(text, "classification", ["0", "1"]) == values


@given(st.lists(st.one_of(st.none(), st.booleans()), max_size=20), st.booleans())
def test_labels_as_restores_boolean_classes(values: list[bool | None], lower: bool) -> None:
    text = [None if v is None else (str(v).lower() if lower else str(v)) for v in values]
    assert labels_as(text, "classification", ["False", "True"]) == values
