"""Alert rules over stored windows: incidents, webhooks and commands.

A rule (``monitoring.alerts`` in ``modelyard.yaml``, see ``config.AlertRule``) looks at
the last ``m`` windows of its signal that have a value and breaches when ``k`` of them
do. Each (model version, rule, cause) has at most one incident: the cause is
``prediction`` for prediction drift, the feature's name for feature drift (so two
drifting features are two incidents) and the metric's name otherwise. An incident opens
(or reopens) when its rule breaches and resolves when it no longer does; only opening
and reopening notify: a JSON POST to the rule's webhook and the rule's command, run with
the incident as JSON in ``MODELYARD_INCIDENT``. A failed delivery is reported in the
event, never raised: monitoring goes on.

Webhook URLs often hold tokens, so events and logs show only their scheme and host.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.config import DRIFT_SIGNALS, AlertRule
from modelyard.monitoring.performance import metric_value
from modelyard.store.monitor_results import Incident, IncidentChange, MonitorResults, WindowResult
from modelyard.store.urls import url_origin

__all__ = ["AlertEvent", "evaluate_alerts", "safe_url"]

_log = logging.getLogger(__name__)


@dataclass
class AlertEvent:
    """What one rule did to one incident in this evaluation."""

    rule: str
    cause: str
    change: IncidentChange
    incident: Incident | None
    breaches: int
    windows: int
    webhook: str | None = None  # "sent to https://host (200)" or the failure
    command: str | None = None  # "exit 0" or the failure
    values: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "cause": self.cause,
            "change": self.change,
            "breaches": self.breaches,
            "windows": self.windows,
            "webhook": self.webhook,
            "command": self.command,
            "incident": None if self.incident is None else self.incident.to_dict(),
        }


def safe_url(url: str) -> str:
    """``scheme://host[:port]`` only: paths and queries may hold secrets.

    >>> safe_url("https://hooks.example.com/services/T000/B000/XXXX?token=abc")
    'https://hooks.example.com'
    """
    return url_origin(url)  # never raises, even on a port that is not a number


def _breaches(
    rule: AlertRule, drift: Sequence[WindowResult], performance: Sequence[WindowResult]
) -> dict[str, tuple[int, int, list[Any]]]:
    """cause -> (breaching windows, windows looked at, the windows' values)."""
    if rule.signal == "prediction_drift":
        last = list(drift)[-rule.m :]
        flags = [bool(w.summary.get("prediction_drift")) for w in last]
        return {"prediction": (sum(flags), len(last), flags)}
    if rule.signal == "feature_drift":
        last = list(drift)[-rule.m :]
        causes: dict[str, tuple[int, int, list[Any]]] = {}
        names = sorted({n for w in last for n in w.summary.get("drifted_columns", [])})
        for name in names:
            flags = [name in w.summary.get("drifted_columns", []) for w in last]
            causes[name] = (sum(flags), len(last), flags)
        return causes
    values = [metric_value(w.summary, rule.signal) for w in performance]
    known = [v for v in values if v is not None][-rule.m :]
    hits = [
        (rule.below is not None and v < rule.below) or (rule.above is not None and v > rule.above)
        for v in known
    ]
    return {rule.signal: (sum(hits), len(known), known)}


def evaluate_alerts(
    rules: Sequence[AlertRule],
    results: MonitorResults,
    model: str,
    version: int,
    *,
    notify: bool = True,
) -> list[AlertEvent]:
    """Evaluate every rule over the stored windows of ``model`` v``version``."""
    drift = results.windows(model, version, "drift")
    performance = results.windows(model, version, "performance")
    events: list[AlertEvent] = []
    for rule in rules:
        found = _breaches(rule, drift, performance)
        open_causes = {
            i.cause for i in results.incidents(model, version, state="open") if i.rule == rule.name
        }
        for cause in sorted(set(found) | open_causes):
            hits, seen, values = found.get(cause, (0, 0, []))
            breaching = hits >= rule.k
            detail = {
                "signal": rule.signal,
                "k": rule.k,
                "m": rule.m,
                "breaches": hits,
                "windows": seen,
                "values": values,
                "below": rule.below,
                "above": rule.above,
                "last_window_end_us": (drift[-1].end_us if rule.signal in DRIFT_SIGNALS and drift
                                       else performance[-1].end_us if performance else None),
            }  # fmt: skip
            incident, change = results.record_incident(
                model, version, rule.name, cause, breaching=breaching, detail=detail
            )
            event = AlertEvent(rule.name, cause, change, incident, hits, seen, values=values)
            if notify and incident is not None and change in ("opened", "reopened"):
                payload = {"model": model, "version": version, "change": change,
                           **incident.to_dict()}  # fmt: skip
                event.webhook = _send(rule, payload)
                event.command = _run(rule, payload)
            if change != "unchanged":
                events.append(event)
    return events


def _send(rule: AlertRule, payload: dict[str, Any]) -> str | None:
    url = rule.webhook or (os.environ.get(rule.webhook_env) if rule.webhook_env else None)
    if rule.webhook_env and not url:
        return f"not sent: ${rule.webhook_env} is not set"
    if not url:
        return None
    shown = safe_url(url)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "modelyard-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        _log.warning("alert %s: webhook %s answered %s", rule.name, shown, exc.code)
        return f"failed: {shown} answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        _log.warning("alert %s: webhook %s failed: %s", rule.name, shown, reason)
        return f"failed: {shown}: {reason}"
    return f"sent to {shown} ({status})"


def _run(rule: AlertRule, payload: dict[str, Any]) -> str | None:
    if not rule.command:
        return None
    env = {**os.environ, "MODELYARD_INCIDENT": json.dumps(payload)}
    try:
        done = subprocess.run(
            shlex.split(rule.command),
            env=env,
            capture_output=True,
            timeout=rule.command_timeout_s,
            check=False,
        )
    except (OSError, ValueError) as exc:
        return f"failed to start: {exc}"
    except subprocess.TimeoutExpired:
        return f"timed out after {rule.command_timeout_s:g} s"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"exit {done.returncode}: {tail[0][:200]}"
    return "exit 0"
