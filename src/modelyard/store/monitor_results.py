"""Monitoring results in the metadata store: one row per model version, kind and window,
and one alert incident per model version, rule and cause.

Monitoring writes them; the CLI, the report and the server's ``/metrics`` read them, so
they live here, below every one of those layers. A window's ``summary`` is the whole
result as JSON (a drift report, or performance metrics); computing a window again
replaces its row. Times are UTC microseconds since the epoch.

>>> from modelyard.store.database import open_database
>>> results = MonitorResults(open_database("sqlite://"))
>>> results.save_window(WindowResult("m", 1, "drift", 0, 86_400_000_000, 10, True, {"x": 1}))
>>> results.latest("m", 1, "drift").summary
{'x': 1}
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import and_, delete, insert, select, update

from modelyard.store.database import Database
from modelyard.store.schema import monitor_incidents, monitor_windows

__all__ = ["Incident", "IncidentChange", "MonitorResults", "WindowResult"]

Kind = Literal["drift", "performance"]
IncidentChange = Literal["opened", "reopened", "updated", "resolved", "unchanged"]


@dataclass(frozen=True)
class WindowResult:
    """One computed window."""

    model: str
    version: int
    kind: str
    start_us: int
    end_us: int
    rows: int
    alarm: bool
    summary: dict[str, Any]
    computed_at_us: int = 0


@dataclass(frozen=True)
class Incident:
    """An alert incident: one per model version, rule and cause; reopened, never duplicated."""

    id: int
    model: str
    version: int
    rule: str
    cause: str
    state: str  # "open" | "resolved"
    opened_at_us: int
    updated_at_us: int
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "rule": self.rule,
            "cause": self.cause,
            "state": self.state,
            "opened_at_us": self.opened_at_us,
            "updated_at_us": self.updated_at_us,
            "detail": self.detail,
        }


def _now_us() -> int:
    return time.time_ns() // 1000


class MonitorResults:
    """Reads and writes ``monitor_windows`` and ``monitor_incidents``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- windows ------------------------------------------------------------------------

    def save_window(self, result: WindowResult) -> None:
        """Store ``result``, replacing an earlier computation of the same window."""
        self.save_windows([result])

    def save_windows(self, results: Sequence[WindowResult]) -> None:
        """Store many windows in one transaction."""
        if not results:
            return
        now = _now_us()
        t = monitor_windows.c
        with self.db.write() as conn:
            for r in results:
                conn.execute(
                    delete(monitor_windows).where(
                        and_(
                            t.model == r.model,
                            t.version == r.version,
                            t.kind == r.kind,
                            t.window_start == r.start_us,
                            t.window_end == r.end_us,
                        )
                    )
                )
            conn.execute(
                insert(monitor_windows),
                [
                    {
                        "model": r.model,
                        "version": r.version,
                        "kind": r.kind,
                        "window_start": r.start_us,
                        "window_end": r.end_us,
                        "rows": r.rows,
                        "alarm": r.alarm,
                        "summary": msgspec.json.encode(r.summary).decode(),
                        "computed_at": r.computed_at_us or now,
                    }
                    for r in results
                ],
            )

    def windows(
        self,
        model: str,
        version: int,
        kind: str,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
    ) -> list[WindowResult]:
        """Stored windows, oldest first."""
        t = monitor_windows.c
        query = select(monitor_windows).where(
            and_(t.model == model, t.version == version, t.kind == kind)
        )
        if since_us is not None:
            query = query.where(t.window_end > since_us)
        if until_us is not None:
            query = query.where(t.window_start < until_us)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(t.window_start, t.window_end)).all()
        return [_window(row) for row in rows]

    def latest(self, model: str, version: int, kind: str) -> WindowResult | None:
        """The window that ends last, or None."""
        t = monitor_windows.c
        query = (
            select(monitor_windows)
            .where(and_(t.model == model, t.version == version, t.kind == kind))
            .order_by(t.window_end.desc(), t.window_start.desc())
            .limit(1)
        )
        with self.db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _window(row)

    # -- incidents ----------------------------------------------------------------------

    def incidents(
        self, model: str | None = None, version: int | None = None, state: str | None = None
    ) -> list[Incident]:
        """Incidents, most recently updated first."""
        t = monitor_incidents.c
        query = select(monitor_incidents)
        if model is not None:
            query = query.where(t.model == model)
        if version is not None:
            query = query.where(t.version == version)
        if state is not None:
            query = query.where(t.state == state)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(t.updated_at.desc(), t.id.desc())).all()
        return [_incident(row) for row in rows]

    def record_incident(
        self,
        model: str,
        version: int,
        rule: str,
        cause: str,
        *,
        breaching: bool,
        detail: dict[str, Any],
    ) -> tuple[Incident | None, IncidentChange]:
        """Open, reopen, update or resolve the incident of ``(model, version, rule, cause)``."""
        t = monitor_incidents.c
        key = and_(t.model == model, t.version == version, t.rule == rule, t.cause == cause)
        now = _now_us()
        text = msgspec.json.encode(detail).decode()
        with self.db.write() as conn:
            row = conn.execute(select(monitor_incidents).where(key)).first()
            if row is None:
                if not breaching:
                    return None, "unchanged"
                conn.execute(
                    insert(monitor_incidents).values(
                        model=model,
                        version=version,
                        rule=rule,
                        cause=cause,
                        state="open",
                        opened_at=now,
                        updated_at=now,
                        detail=text,
                    )
                )
                change: IncidentChange = "opened"
            elif breaching:
                change = "updated" if row.state == "open" else "reopened"
                values: dict[str, Any] = {"state": "open", "updated_at": now, "detail": text}
                if change == "reopened":
                    values["opened_at"] = now
                conn.execute(update(monitor_incidents).where(key).values(**values))
            elif row.state == "open":
                change = "resolved"
                conn.execute(
                    update(monitor_incidents)
                    .where(key)
                    .values(state="resolved", updated_at=now, detail=text)
                )
            else:
                return _incident(row), "unchanged"
            fresh = conn.execute(select(monitor_incidents).where(key)).one()
        return _incident(fresh), change


def _window(row: Any) -> WindowResult:
    return WindowResult(
        model=row.model,
        version=row.version,
        kind=row.kind,
        start_us=row.window_start,
        end_us=row.window_end,
        rows=row.rows,
        alarm=bool(row.alarm),
        summary=msgspec.json.decode(row.summary),
        computed_at_us=row.computed_at,
    )


def _incident(row: Any) -> Incident:
    return Incident(
        id=row.id,
        model=row.model,
        version=row.version,
        rule=row.rule,
        cause=row.cause,
        state=row.state,
        opened_at_us=row.opened_at,
        updated_at_us=row.updated_at,
        detail=msgspec.json.decode(row.detail),
    )
