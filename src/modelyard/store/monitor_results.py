"""Monitoring results in the metadata store: one row per model version, kind and window,
and one alert incident per model version, rule and cause.

Monitoring writes them; the CLI, the report and the server's ``/metrics`` read them, so
they live here, below every one of those layers. A window's ``summary`` is the whole
result as JSON (a drift report, or performance metrics); computing a window again
replaces its row. Times are UTC microseconds since the epoch.

An incident can be acknowledged (``acknowledge``: who, a note, when); acknowledgements
are kept in the incident's ``detail`` under ``"acknowledgements"`` and survive the
updates, reopenings and resolution that rewrite the rest of it.

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
from sqlalchemy import and_, case, delete, func, insert, select, update

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store.database import Database
from modelyard.store.schema import monitor_incidents, monitor_windows

__all__ = [
    "ACKNOWLEDGEMENTS",
    "Incident",
    "IncidentChange",
    "MonitorResults",
    "MonitoredVersion",
    "WindowResult",
]

Kind = Literal["drift", "performance"]
IncidentChange = Literal["opened", "reopened", "updated", "resolved", "unchanged"]
#: the key of an incident's ``detail`` that holds its acknowledgements
ACKNOWLEDGEMENTS = "acknowledgements"
MAX_NOTE = 2000


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

    @property
    def acknowledgements(self) -> list[dict[str, Any]]:
        """Who acknowledged the incident, when and why, oldest first."""
        found = self.detail.get(ACKNOWLEDGEMENTS)
        out: list[dict[str, Any]] = []
        if isinstance(found, list):
            out += (a for a in found if isinstance(a, dict))
        return out

    @property
    def acknowledged(self) -> dict[str, Any] | None:
        """The acknowledgement of the incident's current opening, or None."""
        current = [a for a in self.acknowledgements if _at_least(a.get("at_us"), self.opened_at_us)]
        return current[-1] if current else None

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


def _at_least(value: Any, bound: int) -> bool:
    return isinstance(value, int) and value >= bound


@dataclass(frozen=True)
class MonitoredVersion:
    """What is stored for one model version: window counts, alarms, its last window."""

    model: str
    version: int
    drift_windows: int
    performance_windows: int
    alarms: int
    last_end_us: int
    open_incidents: int


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

    def monitored(self) -> list[MonitoredVersion]:
        """Every model version with stored windows or incidents, by model then version.

        Two grouped queries, whatever the number of windows.
        """
        t = monitor_windows.c
        windows = select(
            t.model,
            t.version,
            func.sum(case((t.kind == "drift", 1), else_=0)),
            func.sum(case((t.kind == "performance", 1), else_=0)),
            func.sum(case((t.alarm.is_(True), 1), else_=0)),
            func.max(t.window_end),
        ).group_by(t.model, t.version)
        i = monitor_incidents.c
        incidents = select(
            i.model, i.version, func.sum(case((i.state == "open", 1), else_=0))
        ).group_by(i.model, i.version)
        with self.db.read() as conn:
            found = {(r[0], int(r[1])): r for r in conn.execute(windows).all()}
            opened = {(r[0], int(r[1])): int(r[2] or 0) for r in conn.execute(incidents).all()}
        out = []
        for key in sorted(set(found) | set(opened)):
            row = found.get(key)
            out.append(
                MonitoredVersion(
                    model=key[0],
                    version=key[1],
                    drift_windows=int(row[2] or 0) if row is not None else 0,
                    performance_windows=int(row[3] or 0) if row is not None else 0,
                    alarms=int(row[4] or 0) if row is not None else 0,
                    last_end_us=int(row[5] or 0) if row is not None else 0,
                    open_incidents=opened.get(key, 0),
                )
            )
        return out

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

    def incident(self, incident_id: int) -> Incident:
        """The incident ``incident_id``; NotFoundError when there is none."""
        with self.db.read() as conn:
            row = conn.execute(
                select(monitor_incidents).where(monitor_incidents.c.id == incident_id)
            ).first()
        if row is None:
            raise NotFoundError(f"No incident {incident_id}")
        return _incident(row)

    def acknowledge(self, incident_id: int, who: str, note: str = "") -> Incident:
        """Record that ``who`` acknowledged the incident, with ``note``; the incident after.

        The acknowledgement is appended to ``detail["acknowledgements"]`` (``by``,
        ``note``, ``at_us``, the ``state`` it was in); the incident's state and times do
        not change. Alert evaluation keeps the list when it rewrites the detail.
        """
        if not isinstance(who, str) or not who.strip():
            raise InvalidInputError(f"Expected who acknowledges, got {who!r}", loc="who")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            shown = f"{len(note)} characters" if isinstance(note, str) else repr(note)
            raise InvalidInputError(
                f"Expected a note of at most {MAX_NOTE} characters, got {shown}", loc="note"
            )
        key = monitor_incidents.c.id == incident_id
        with self.db.write() as conn:
            row = conn.execute(self._locked(select(monitor_incidents).where(key))).first()
            if row is None:
                raise NotFoundError(f"No incident {incident_id}")
            detail = msgspec.json.decode(row.detail)
            if not isinstance(detail, dict):
                detail = {"detail": detail}
            acks = detail.get(ACKNOWLEDGEMENTS)
            acks = list(acks) if isinstance(acks, list) else []
            acks.append({"by": who, "note": note, "at_us": _now_us(), "state": row.state})
            detail[ACKNOWLEDGEMENTS] = acks
            text = msgspec.json.encode(detail).decode()
            conn.execute(update(monitor_incidents).where(key).values(detail=text))
            fresh = conn.execute(select(monitor_incidents).where(key)).one()
        return _incident(fresh)

    def _locked(self, query: Any) -> Any:
        """``query`` holding its rows' locks to the end of the transaction (PostgreSQL)."""
        return query.with_for_update() if self.db.dialect == "postgresql" else query

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
        with self.db.write() as conn:
            row = conn.execute(self._locked(select(monitor_incidents).where(key))).first()
            text = msgspec.json.encode(_keep_acknowledgements(row, detail)).decode()
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


def _keep_acknowledgements(row: Any, detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` with the acknowledgements the stored incident ``row`` has."""
    if row is None:
        return detail
    old = msgspec.json.decode(row.detail)
    acks = old.get(ACKNOWLEDGEMENTS) if isinstance(old, dict) else None
    if not acks:
        return detail
    return {**detail, ACKNOWLEDGEMENTS: acks}


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
