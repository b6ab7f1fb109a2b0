"""The agent's events as the command line shows them: one line per event, and the rows
``models history`` puts beside the alias moves and gate evaluations.

Light on purpose (the agent's records only): ``models history`` imports it, and no
models command should pay for the agent's loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelyard.agent.records import Action, ActionStore
from modelyard.cli.failures import printable_line
from modelyard.cli.output import fmt_value

__all__ = ["agent_rows", "event_summary", "utc"]


def utc(us: int | None) -> str:
    """Microseconds on the agent's clock as ``2013-05-20 00:00:00Z``; ``-`` for None.

    >>> utc(1_368_921_600_000_000)
    '2013-05-19 00:00:00Z'
    """
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return fmt_value(value, digits=4)
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def event_summary(detail: dict[str, Any]) -> str:
    """One line for an event's detail: a look's metrics as ``name decision diff [lo, hi]``,
    every other scalar as ``key=value``.

    >>> event_summary({"decision": "continue", "metrics": {"log_loss": {"diff": -0.012,
    ...     "lower": -0.03, "upper": 0.004, "decision": "continue"}}, "n_candidate": 240})
    'decision=continue, n_candidate=240; log_loss continue diff -0.012 [-0.03, 0.004]'
    """
    scalars = [
        f"{key}={_scalar(value)}"
        for key, value in detail.items()
        if not isinstance(value, dict | list) and value is not None
    ]
    text = ", ".join(scalars)
    metrics = detail.get("metrics")
    if isinstance(metrics, dict):
        shown = []
        for name, m in metrics.items():
            if not isinstance(m, dict):
                continue
            bounds = ""
            if m.get("lower") is not None and m.get("upper") is not None:
                bounds = f" [{_scalar(m['lower'])}, {_scalar(m['upper'])}]"
            diff = f" diff {_scalar(m['diff'])}" if m.get("diff") is not None else ""
            shown.append(f"{name} {m.get('decision', '-')}{diff}{bounds}")
        if shown:
            text = "; ".join([text, *shown]) if text else "; ".join(shown)
    # one line whatever the detail holds (keys and values come from pipelines and users):
    # control characters escaped, credentials masked
    return printable_line(text)


def _reason(action: Action, kind: str, detail: dict[str, Any]) -> str:
    """Why, for one event of an agent action: ``agent: action ID``, the incident that
    caused it (on the first event), then what the event says."""
    head = f"agent: action {action.id[:12]}"
    if kind in ("created", "skipped") and action.incident_id is not None:
        head += f", incident {action.incident_id} (rule {action.rule})"
    if kind == "created" and action.pipeline:
        head += f", retrain with pipeline {action.pipeline}"
    summary = event_summary(detail)
    return f"{head}: {summary}" if summary else head


def agent_rows(store: ActionStore, name: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """The events of the agent's actions for model ``name`` as history rows.

    One row per event; the canary's looks are one row per action (how many, and the last
    one). ``at`` is when the event was recorded, in milliseconds on the wall clock (as
    alias moves are); ``agent_time_us`` is the agent's clock (``--as-of`` when
    replaying). ``from``/``to`` are the champion and the candidate.
    """
    rows: list[dict[str, Any]] = []
    for action in store.list(name, limit=limit):
        events = store.events(action.id)
        looks = [e for e in events if e.kind == "look"]
        shown = [e for e in events if e.kind != "look"] + looks[-1:]
        for event in shown:
            detail = dict(event.detail)
            kind = event.kind
            if kind == "look":
                kind = "looks"
                detail = {"looks": len(looks), **detail}
            rows.append(
                {
                    "id": event.id,
                    "name": action.model,
                    "action": f"agent {kind}",
                    "alias": None,
                    "version_from": action.champion_version,
                    "version_to": action.candidate_version,
                    "actor": action.created_by,
                    "reason": _reason(action, kind, detail),
                    "at": event.recorded_us // 1000,
                    "agent_time_us": event.time_us,
                    "action_id": action.id,
                    "event": kind,
                    "state": action.state,
                    "detail": detail,
                }
            )
    return rows
