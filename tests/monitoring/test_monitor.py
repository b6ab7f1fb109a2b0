"""``Monitor`` end to end: a registered classifier, a prediction log written like the
server's, drift and performance per day, stored results, alert rules from modelyard.yaml
and the report data."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from modelyard.config import load_settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.monitoring.monitor import Monitor
from tests.monitoring.conftest import DAY0, FEATURES, NAME, Logged, Project, write_days

DAY_US = 86_400_000_000
CALM, SHIFTED = [0, 1, 2], [3, 4]


def _us(day: int) -> int:
    return int((DAY0 + timedelta(days=day)).timestamp() * 1_000_000)


def _command(path: Path) -> str:
    script = f"import os; open({str(path)!r}, 'a').write(os.environ['MODELYARD_INCIDENT'] + '\\n')"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"


@pytest.fixture
def logged(project: Project) -> Logged:
    return write_days(project, CALM + SHIFTED, shifted=SHIFTED)


def test_run_finds_drift_only_in_the_shifted_windows(project: Project, logged: Logged) -> None:
    with Monitor(project.settings) as monitor:
        run = monitor.run(f"{NAME}/1", window="1d")
    assert (run.model.name, run.model.version) == (NAME, 1)
    assert run.model.inputs == FEATURES
    assert run.model.classes == ["0", "1"]
    assert [(w.start_us, w.end_us, w.rows) for w in run.drift] == [
        (_us(d), _us(d) + DAY_US, 400) for d in CALM + SHIFTED
    ]
    for w in run.drift[:3]:
        assert w.summary["drifted_columns"] == [], w.summary["start"]
        assert w.summary["prediction_drift"] is False
        assert w.alarm is False
    for w in run.drift[3:]:
        assert "amount" in w.summary["drifted_columns"], w.summary["start"]
        assert w.summary["ranked"][0] == "amount"
        assert w.summary["prediction_drift"] is True  # the scores moved with amount
        assert w.alarm is True
        assert w.summary["n_current"] == 400


def test_performance_per_window_equals_sklearn_on_the_labelled_rows(
    project: Project, logged: Logged
) -> None:
    with Monitor(project.settings) as monitor:
        model = monitor.model(NAME)  # NAME means its production alias
        windows = monitor.performance(model, window="1d")
    assert len(windows) == 5
    for day, w in zip(CALM + SHIFTED, windows, strict=True):
        labels = logged.labels[day]
        known = np.array([v is not None for v in labels])
        y = np.array([v for v in labels if v is not None])
        s = w.summary
        assert s["matured"] is True, s["coverage"]
        assert (s["rows"], s["labelled"]) == (400, int(known.sum()))
        assert s["coverage"] == pytest.approx(known.mean())
        auc = roc_auc_score(y, logged.proba[day][known, 1])
        assert s["metrics"]["auc"]["value"] == pytest.approx(auc, abs=1e-12)
        assert s["metrics"]["auc"]["low"] < auc < s["metrics"]["auc"]["high"]
        assert s["estimated"]["positive_rate"] == pytest.approx(logged.proba[day][:, 1].mean())


def test_a_window_without_enough_labels_is_not_matured(project: Project) -> None:
    write_days(project, [0], unlabelled_share=0.6, seed=3)
    with Monitor(project.settings) as monitor:
        (w,) = monitor.performance(monitor.model(NAME), window="1d")
    assert w.summary["coverage"] < 0.8
    assert w.summary["matured"] is False and w.summary["metrics"] == {}
    assert w.summary["estimated"]["auc"] is not None


def test_results_are_stored_and_a_rerun_replaces_them(project: Project, logged: Logged) -> None:
    with Monitor(project.settings) as monitor:
        first = monitor.run(f"{NAME}@production", window="1d")
        stored = monitor.results.windows(NAME, 1, "drift")
        assert [w.summary for w in stored] == [w.summary for w in first.drift]
        monitor.run(f"{NAME}@production", window="1d")
        assert len(monitor.results.windows(NAME, 1, "drift")) == 5
        assert len(monitor.results.windows(NAME, 1, "performance")) == 5
        latest = monitor.results.latest(NAME, 1, "drift")
        assert latest is not None and latest.start_us == _us(4)
        # another window length is another set of rows
        weekly = monitor.drift(monitor.model(NAME), window="1w")
        assert [(w.start_us, w.rows) for w in weekly] == [(_us(0), 2_000)]
        assert len(monitor.results.windows(NAME, 1, "drift")) == 6


def test_since_and_until_clip_the_windows(project: Project, logged: Logged) -> None:
    # requests arrive every 30 s from 00:01: from 00:10, requests 18 to 39 of day 1
    since, until = DAY0 + timedelta(days=1, minutes=10), DAY0 + timedelta(days=3)
    with Monitor(project.settings) as monitor:
        windows = monitor.drift(monitor.model(NAME), window="1d", since=since, until=until)
    assert [(w.start_us, w.end_us) for w in windows] == [
        (_us(1) + 600_000_000, _us(2)),
        (_us(2), _us(3)),
    ]
    assert [w.rows for w in windows] == [220, 400]


def test_alert_rules_from_the_project_config_fire_once(
    project: Project, logged: Logged, tmp_path: Path
) -> None:
    out = tmp_path / "incidents.jsonl"
    settings = project.configure(
        {
            "window": "1d",
            "alerts": [
                {"name": "amount-drift", "signal": "feature_drift", "k": 2, "m": 3,
                 "command": _command(out)},
                {"name": "auc-low", "signal": "auc", "below": 0.5, "command": _command(out)},
            ]
        }
    )  # fmt: skip
    with Monitor(settings) as monitor:
        run = monitor.run(NAME)
        assert [(e.rule, e.cause, e.change, e.command) for e in run.events] == [
            ("amount-drift", "amount", "opened", "exit 0")
        ]
        again = monitor.run(NAME)
        assert [(e.cause, e.change, e.command) for e in again.events] == [
            ("amount", "updated", None)
        ]
        (incident,) = monitor.results.incidents(NAME, 1)
    (line,) = out.read_text().splitlines()
    payload = json.loads(line)
    assert (payload["rule"], payload["cause"], payload["model"]) == ("amount-drift", "amount", NAME)
    assert payload["id"] == incident.id and incident.state == "open"
    assert payload["detail"]["breaches"] == 2 and payload["detail"]["windows"] == 3


def test_report_data_has_windows_causes_and_distributions(project: Project, logged: Logged) -> None:
    with Monitor(project.settings) as monitor:
        model = monitor.model(NAME)
        empty = monitor.report_data(model, window="1d", domain=False)
        assert empty["windows"] == [] and empty["findings"]
        monitor.run(NAME, window="1d")
        data = monitor.report_data(model, window="1d", domain=False)
    assert (data["model"], data["version"]) == (NAME, 1)
    assert [w["rows"] for w in data["windows"]] == [400] * 5
    assert [w["prediction_drift"] for w in data["windows"]] == [False] * 3 + [True] * 2
    assert len(data["performance"]) == 5
    assert data["causes"][0]["name"] == "amount" and data["causes"][0]["drifted"] is True
    assert {c["name"] for c in data["causes"]} == set(FEATURES)
    assert data["domain_classifier"] is None
    dist = data["distributions"]
    assert set(dist) == {*FEATURES, "proba_0", "proba_1"}
    amount = dist["amount"]
    edges = np.array(amount["edges"])
    current = np.clip(logged.frames[4]["amount"].to_numpy(), edges[0], edges[-1])
    expected = np.histogram(current, edges)[0] / 400
    assert amount["current"] == pytest.approx(expected.tolist(), abs=1e-12)
    assert sum(amount["reference"]) == pytest.approx(1.0)
    plan = dist["plan"]
    assert plan["kind"] == "categorical"
    shares = logged.frames[4]["plan"].value_counts(normalize=True)
    for category in ("basic", "pro", "max"):
        i = plan["categories"].index(category)
        assert plan["current"][i] == pytest.approx(shares[category])


def test_an_unknown_model_is_not_found(project: Project) -> None:
    with Monitor(project.settings) as monitor, pytest.raises(NotFoundError):
        monitor.model("nope")


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "a", "signal": "auc", "k": 3, "m": 2, "below": 0.7},
        {"name": "a", "signal": "feature_drift", "below": 0.7},
        {"name": "a", "signal": "auc"},
    ],
)
def test_bad_alert_rules_in_the_config_are_invalid_input(
    project: Project, rule: dict[str, object]
) -> None:
    path = project.root / "modelyard.yaml"
    path.write_text(path.read_text() + f"monitoring:\n  alerts: [{json.dumps(rule)}]\n")
    with pytest.raises(InvalidInputError):
        load_settings(project.root, environ={})
