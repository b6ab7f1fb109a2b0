"""Alert rules over stored windows: incidents on a real SQLite store, a real HTTP receiver
for webhooks on 127.0.0.1, and real commands (``python -c`` writing a file)."""

from __future__ import annotations

import json
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelyard.config import AlertRule, MonitoringSettings
from modelyard.errors import InvalidInputError
from modelyard.monitoring.alerts import evaluate_alerts, safe_url
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult

DAY = 86_400_000_000
M = "churn"


@pytest.fixture
def results(tmp_path: Path) -> Iterator[MonitorResults]:
    db: Database = open_database(f"sqlite:///{tmp_path / 'meta' / 'monitor.db'}")
    yield MonitorResults(db)
    db.close()


class Receiver:
    """A webhook receiver: records each POST (path, headers, JSON body); answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drift(
    results: MonitorResults, flags: list[bool], columns: list[list[str]] | None = None
) -> None:
    """Store one daily drift window per flag (prediction drift) and drifted columns."""
    results.save_windows(
        [
            WindowResult(
                M,
                1,
                "drift",
                i * DAY,
                (i + 1) * DAY,
                100,
                flag,
                {
                    "prediction_drift": flag,
                    "drifted_columns": (columns[i] if columns else []),
                },
            )
            for i, flag in enumerate(flags)
        ]
    )


def auc_windows(results: MonitorResults, values: list[float | None], start: int = 0) -> None:
    results.save_windows(
        [
            WindowResult(
                M,
                1,
                "performance",
                (start + i) * DAY,
                (start + i + 1) * DAY,
                100,
                False,
                {"metrics": {} if v is None else {"auc": {"value": v, "low": v, "high": v}}},
            )
            for i, v in enumerate(values)
        ]
    )


def rule(**kwargs: Any) -> AlertRule:
    return AlertRule(**{"name": "r", "signal": "prediction_drift", **kwargs})


def test_k_of_m_opens_on_two_breaches_in_the_last_three(results: MonitorResults) -> None:
    drift(results, [True, True, False, False, True])  # last three: F F T -> 1 of 3
    assert evaluate_alerts([rule(k=2, m=3)], results, M, 1) == []
    assert results.incidents() == []
    drift(results, [True, True, False, True, True])  # replaces: last three F T T -> 2 of 3
    events = evaluate_alerts([rule(k=2, m=3)], results, M, 1)
    assert [(e.rule, e.cause, e.change, e.breaches, e.windows) for e in events] == [
        ("r", "prediction", "opened", 2, 3)
    ]
    assert events[0].values == [False, True, True]
    (incident,) = results.incidents()
    assert (incident.model, incident.version, incident.state) == (M, 1, "open")
    assert incident.detail["breaches"] == 2 and incident.detail["windows"] == 3
    assert incident.detail["last_window_end_us"] == 5 * DAY


def test_a_second_evaluation_updates_the_incident_instead_of_duplicating(
    results: MonitorResults,
) -> None:
    drift(results, [True, True, True])
    first = evaluate_alerts([rule(k=2, m=3)], results, M, 1)
    second = evaluate_alerts([rule(k=2, m=3)], results, M, 1)
    assert [e.change for e in first] == ["opened"]
    assert [e.change for e in second] == ["updated"]
    assert first[0].incident is not None and second[0].incident is not None
    assert second[0].incident.id == first[0].incident.id
    assert second[0].incident.opened_at_us == first[0].incident.opened_at_us
    assert len(results.incidents()) == 1


def test_feature_drift_opens_one_incident_per_drifted_feature(results: MonitorResults) -> None:
    drift(
        results,
        [False, False, False],
        [["amount"], ["amount", "age"], ["amount", "plan", "age"]],
    )
    events = evaluate_alerts([rule(name="f", signal="feature_drift", k=2, m=3)], results, M, 1)
    assert sorted((e.cause, e.change, e.breaches) for e in events) == [
        ("age", "opened", 2),
        ("amount", "opened", 3),
    ]  # plan drifted once only: 1 of 3
    assert sorted(i.cause for i in results.incidents(M, 1, "open")) == ["age", "amount"]
    # age stops drifting: its incident resolves, amount's is updated
    drift(results, [False, False, False, False], [["amount"], [], ["amount"], ["amount"]])
    events = evaluate_alerts([rule(name="f", signal="feature_drift", k=2, m=3)], results, M, 1)
    assert sorted((e.cause, e.change) for e in events) == [
        ("age", "resolved"),
        ("amount", "updated"),
    ]


def test_an_incident_resolves_then_reopens(results: MonitorResults, receiver: Receiver) -> None:
    r = rule(name="low-auc", signal="auc", below=0.7, webhook=receiver.url())
    auc_windows(results, [0.9, 0.6])
    assert [e.change for e in evaluate_alerts([r], results, M, 1)] == ["opened"]
    auc_windows(results, [0.8, None], start=2)  # a window without value is not looked at
    events = evaluate_alerts([r], results, M, 1)
    assert [(e.change, e.values) for e in events] == [("resolved", [0.8])]
    assert events[0].webhook is None  # resolving does not notify
    assert evaluate_alerts([r], results, M, 1) == []  # resolved and still calm: unchanged
    auc_windows(results, [0.5], start=4)
    events = evaluate_alerts([r], results, M, 1)
    assert [e.change for e in events] == ["reopened"]
    assert [b["body"]["change"] for b in receiver.received] == ["opened", "reopened"]
    assert len(results.incidents()) == 1
    assert results.incidents()[0].state == "open"


def test_above_breaches_on_larger_values(results: MonitorResults) -> None:
    results.save_windows(
        [
            WindowResult(
                M, 1, "performance", 0, DAY, 10, False, {"metrics": {"log_loss": {"value": 0.9}}}
            ),
        ]
    )
    hit = evaluate_alerts([rule(name="ll", signal="log_loss", above=0.5)], results, M, 1)
    miss = evaluate_alerts([rule(name="ll2", signal="log_loss", above=1.0)], results, M, 1)
    assert [e.change for e in hit] == ["opened"] and miss == []


def test_the_webhook_receives_the_incident_as_json(
    results: MonitorResults, receiver: Receiver
) -> None:
    drift(results, [True])
    (event,) = evaluate_alerts([rule(webhook=receiver.url("/hooks/T0/secret"))], results, M, 1)
    assert event.webhook == f"sent to http://127.0.0.1:{receiver.port} (200)"
    (got,) = receiver.received
    assert got["path"] == "/hooks/T0/secret"
    assert got["content_type"] == "application/json"
    assert event.incident is not None
    assert got["body"] == {
        "model": M,
        "version": 1,
        "change": "opened",
        **json.loads(json.dumps(event.incident.to_dict())),
    }
    assert got["body"]["rule"] == "r" and got["body"]["cause"] == "prediction"
    assert got["body"]["detail"]["breaches"] == 1


def test_a_failing_webhook_is_reported_not_raised(results: MonitorResults) -> None:
    failing = Receiver(status=500)
    try:
        drift(results, [True])
        port = _closed_port()
        events = evaluate_alerts(
            [
                rule(name="a", webhook=failing.url("/x/token123")),
                rule(name="b", webhook=f"http://127.0.0.1:{port}/y/token456"),
            ],
            results,
            M,
            1,
        )
    finally:
        failing.close()
    assert len(failing.received) == 1
    a, b = events
    assert a.webhook == f"failed: http://127.0.0.1:{failing.port} answered 500"
    assert b.webhook is not None and b.webhook.startswith(f"failed: http://127.0.0.1:{port}")
    assert "token" not in (a.webhook + b.webhook)
    assert [e.change for e in events] == ["opened", "opened"]  # incidents opened anyway


def test_webhook_env_reads_the_url_and_shows_only_its_host(
    results: MonitorResults, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift(results, [True])
    monkeypatch.setenv("MY_HOOK", receiver.url("/services/T000/B000/XXXX?token=abc"))
    (event,) = evaluate_alerts([rule(webhook_env="MY_HOOK")], results, M, 1)
    assert event.webhook == f"sent to http://127.0.0.1:{receiver.port} (200)"
    assert "XXXX" not in json.dumps(event.to_dict()) and "abc" not in json.dumps(event.to_dict())
    assert receiver.received[0]["path"] == "/services/T000/B000/XXXX?token=abc"
    monkeypatch.delenv("MY_HOOK")
    (unset,) = evaluate_alerts([rule(name="other", webhook_env="MY_HOOK")], results, M, 1)
    assert unset.webhook == "not sent: $MY_HOOK is not set"
    assert len(receiver.received) == 1


def test_safe_url_drops_credentials_paths_and_queries() -> None:
    assert safe_url("https://user:pw@hooks.example.com:8443/a/b?token=x") == (
        "https://hooks.example.com:8443"
    )
    assert safe_url("http://127.0.0.1/secret") == "http://127.0.0.1"


def _writer(path: Path, code: int = 0) -> str:
    script = (
        "import os, sys; "
        f"open({str(path)!r}, 'a').write(os.environ['MODELYARD_INCIDENT'] + '\\n'); "
        f"sys.stderr.write('went wrong\\n') if {code} else None; sys.exit({code})"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"


def test_the_command_runs_with_the_incident_in_its_environment(
    results: MonitorResults, tmp_path: Path
) -> None:
    out = tmp_path / "incident.jsonl"
    drift(results, [True])
    (event,) = evaluate_alerts([rule(command=_writer(out))], results, M, 1)
    assert event.command == "exit 0"
    (line,) = out.read_text().splitlines()
    payload = json.loads(line)
    assert event.incident is not None
    assert payload["id"] == event.incident.id
    assert (payload["model"], payload["version"], payload["change"]) == (M, 1, "opened")
    assert (payload["rule"], payload["cause"], payload["state"]) == ("r", "prediction", "open")
    # an update does not run it again
    assert [e.change for e in evaluate_alerts([rule(command=_writer(out))], results, M, 1)] == [
        "updated"
    ]
    assert len(out.read_text().splitlines()) == 1


def test_a_failing_command_reports_its_exit_code(results: MonitorResults, tmp_path: Path) -> None:
    drift(results, [True])
    events = evaluate_alerts(
        [
            rule(name="fails", command=_writer(tmp_path / "f.jsonl", code=3)),
            rule(name="missing", command=str(tmp_path / "no-such-program")),
            rule(
                name="slow",
                command=f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(5)'",
                command_timeout_s=0.3,
            ),
        ],
        results,
        M,
        1,
    )
    by_rule = {e.rule: e.command for e in events}
    assert by_rule["fails"] == "exit 3: went wrong"
    assert by_rule["missing"] is not None and by_rule["missing"].startswith("failed to start")
    assert by_rule["slow"] == "timed out after 0.3 s"


def test_notify_false_sends_nothing_and_runs_nothing(
    results: MonitorResults, receiver: Receiver, tmp_path: Path
) -> None:
    out = tmp_path / "incident.jsonl"
    drift(results, [True])
    (event,) = evaluate_alerts(
        [rule(webhook=receiver.url(), command=_writer(out))], results, M, 1, notify=False
    )
    assert event.change == "opened"
    assert (event.webhook, event.command) == (None, None)
    assert receiver.received == [] and not out.exists()


def test_other_versions_are_not_looked_at(results: MonitorResults) -> None:
    drift(results, [True])
    assert evaluate_alerts([rule()], results, M, 2) == []
    assert evaluate_alerts([rule()], results, "fraud", 1) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"signal": "prediction_drift", "k": 3, "m": 2},
        {"signal": "prediction_drift", "k": 0, "m": 2},
        {"signal": "feature_drift", "below": 0.5},
        {"signal": "prediction_drift", "above": 0.5},
        {"signal": "auc"},
        {"signal": "auc", "below": 0.7, "above": 0.9},
        {"signal": "auc", "below": 0.7, "command_timeout_s": 0},
    ],
)
def test_alert_rule_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        AlertRule(name="bad", **fields)


def test_alert_rules_from_config_and_unique_names() -> None:
    good = msgspec.convert(
        {"alerts": [{"name": "a", "signal": "auc", "below": 0.7, "k": 2, "m": 3}]},
        MonitoringSettings,
    )
    assert good.alerts[0].k == 2 and good.alerts[0].below == 0.7
    with pytest.raises((InvalidInputError, msgspec.ValidationError)):
        msgspec.convert({"alerts": [{"name": "a", "signal": "auc"}]}, MonitoringSettings)
    with pytest.raises(InvalidInputError):
        MonitoringSettings(alerts=(rule(name="x"), rule(name="x")))
