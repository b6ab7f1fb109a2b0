"""The agent's record of what it did: actions (``agent_actions``) and their events.

An action is one retrain of one model, caused by one opening of an alert incident. It
moves through these states, each move a compare-and-set on the state it was in, with the
fields it fills and one or more events written in the same transaction::

    pending -> training -> gating -> [awaiting_approval ->] canary -> promoting -> promoted
                       \\-> failed   \\-> rejected                  \\-> rolling_back -> rolled_back
    skipped (created terminal: cool-down, another candidate in flight)   any -> failed

While an action is not terminal its ``in_flight`` column holds the model's name, and a
unique constraint on it keeps at most one action in flight per model whatever process
asks; ``(incident_id, incident_opened_us)`` is unique too, so one opening of an incident
has at most one action. An event is unique per ``(action, kind, key)``: writing it again
is a no-op, so a stage re-run after a crash never doubles one.

>>> from modelyard.store.database import open_database
>>> store = ActionStore(open_database("sqlite://"))
>>> action = store.create(model="churn", kind="retrain", state="pending", now_us=1)
>>> action.state, store.in_flight("churn") == action
('pending', True)
>>> store.advance(action, "training", now_us=2, event=("retrain_started", "", {})).state
'training'
>>> store.advance(action, "training", now_us=3)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.ConflictError: Action ... of churn is training, not pending: ...
"""

from __future__ import annotations

import builtins
import getpass
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Connection, and_, insert, select, update
from sqlalchemy import exc as sa_exc

from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.store.database import Database
from modelyard.store.monitor_results import Incident
from modelyard.store.schema import agent_actions, agent_events

__all__ = [
    "EVENT_KINDS",
    "STATES",
    "TERMINAL",
    "Action",
    "ActionEvent",
    "ActionStore",
    "EventSpec",
    "actor",
    "new_action_id",
]

#: the states of an action still in flight
STATES = (
    "pending",
    "training",
    "gating",
    "awaiting_approval",
    "canary",
    "promoting",
    "rolling_back",
)
#: the states an action ends in
TERMINAL = ("promoted", "rolled_back", "failed", "rejected", "skipped")
#: the kinds of ``agent_events``
EVENT_KINDS = (
    "created",
    "skipped",
    "retrain_started",
    "retrain_completed",
    "retrain_failed",
    "candidate",
    "gates",
    "awaiting_approval",
    "approved",
    "canary_started",
    "look",
    "decision",
    "promoted",
    "rolled_back",
    "failed",
    "incident_opened",
    "production_restored",
    "orphan_archived",
)

#: an event to write with a transition: (kind, key, detail)
EventSpec = tuple[str, str, dict[str, Any]]

# the columns ``advance`` may fill (everything but the identity and the bookkeeping)
_FIELDS = frozenset(
    {
        "incident_id",
        "incident_opened_us",
        "rule",
        "champion_version",
        "candidate_version",
        "pipeline",
        "params",
        "window_start_us",
        "window_end_us",
        "pipeline_run_id",
        "gate_evaluation_id",
        "canary_started_us",
        "decision",
        "reason",
        "detail",
    }
)


def new_action_id() -> str:
    """32 hex characters that sort by creation time (ns clock, then random bits)."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


def actor() -> str:
    """Who acts: ``MODELYARD_ACTOR``, else the user's login name."""
    configured = os.environ.get("MODELYARD_ACTOR")
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _wall_us() -> int:
    return time.time_ns() // 1000


def _json(value: dict[str, Any]) -> str:
    return msgspec.json.encode(value).decode()


@dataclass(frozen=True)
class Action:
    """One row of ``agent_actions``, its JSON columns decoded."""

    id: str
    model: str
    kind: str
    state: str
    incident_id: int | None
    incident_opened_us: int | None
    rule: str | None
    champion_version: int | None
    candidate_version: int | None
    pipeline: str | None
    params: dict[str, Any]
    window_start_us: int | None
    window_end_us: int | None
    pipeline_run_id: str | None
    gate_evaluation_id: str | None
    canary_started_us: int | None
    decision: str | None
    reason: str | None
    detail: dict[str, Any]
    created_us: int
    updated_us: int
    recorded_us: int
    created_by: str

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActionEvent:
    """One row of ``agent_events``: something an action did, at the agent's time."""

    id: int
    action_id: str
    kind: str
    key: str
    time_us: int
    recorded_us: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _action(row: Any) -> Action:
    return Action(
        id=row.id,
        model=row.model,
        kind=row.kind,
        state=row.state,
        incident_id=row.incident_id,
        incident_opened_us=row.incident_opened_us,
        rule=row.rule,
        champion_version=row.champion_version,
        candidate_version=row.candidate_version,
        pipeline=row.pipeline,
        params=msgspec.json.decode(row.params),
        window_start_us=row.window_start_us,
        window_end_us=row.window_end_us,
        pipeline_run_id=row.pipeline_run_id,
        gate_evaluation_id=row.gate_evaluation_id,
        canary_started_us=row.canary_started_us,
        decision=row.decision,
        reason=row.reason,
        detail=msgspec.json.decode(row.detail),
        created_us=row.created_us,
        updated_us=row.updated_us,
        recorded_us=row.recorded_us,
        created_by=row.created_by,
    )


def _event(row: Any) -> ActionEvent:
    return ActionEvent(
        id=row.id,
        action_id=row.action_id,
        kind=row.kind,
        key=row.key,
        time_us=row.time_us,
        recorded_us=row.recorded_us,
        detail=msgspec.json.decode(row.detail),
    )


def _check_state(state: str) -> None:
    if state not in STATES and state not in TERMINAL:
        raise InvalidInputError(
            f"Expected an action state ({', '.join(STATES + TERMINAL)}), got {state!r}",
            loc="state",
        )


def _check_kind(kind: str) -> None:
    if kind not in EVENT_KINDS:
        raise InvalidInputError(
            f"Expected an event kind ({', '.join(EVENT_KINDS)}), got {kind!r}", loc="event"
        )


class ActionStore:
    """Reads and writes ``agent_actions`` and ``agent_events`` of one metadata store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writing ------------------------------------------------------------------------

    def create(
        self,
        *,
        model: str,
        kind: str,
        state: str,
        now_us: int,
        incident: Incident | None = None,
        rule: str | None = None,
        champion_version: int | None = None,
        pipeline: str | None = None,
        params: dict[str, Any] | None = None,
        window: tuple[int, int] | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Action | None:
        """A new action (and its ``created`` or ``skipped`` event), in one transaction.

        None when ``incident``'s opening has an action already. ConflictError, naming it,
        when ``state`` is not terminal and another action of ``model`` is in flight: the
        caller records a skipped one instead.
        """
        _check_state(state)
        action_id = new_action_id()
        values = {
            "id": action_id,
            "model": model,
            "kind": kind,
            "state": state,
            "in_flight": None if state in TERMINAL else model,
            "incident_id": None if incident is None else incident.id,
            "incident_opened_us": None if incident is None else incident.opened_at_us,
            "rule": rule,
            "champion_version": champion_version,
            "pipeline": pipeline,
            "params": _json(params or {}),
            "window_start_us": None if window is None else window[0],
            "window_end_us": None if window is None else window[1],
            "decision": None,
            "reason": reason,
            "detail": _json(detail or {}),
            "created_us": now_us,
            "updated_us": now_us,
            "recorded_us": _wall_us(),
            "created_by": actor(),
        }
        first = "skipped" if state == "skipped" else "created"
        event = {"state": state, **({"reason": reason} if reason else {})}
        try:
            with self.db.write() as conn:
                if incident is not None and self._of_incident(conn, incident) is not None:
                    return None
                conn.execute(insert(agent_actions).values(**values))
                self._insert_events(conn, action_id, [(first, "", event)], now_us)
                row = conn.execute(select(agent_actions).where(agent_actions.c.id == action_id))
                return _action(row.one())
        except sa_exc.IntegrityError:
            pass  # another process won a race: say which constraint, read afresh
        if incident is not None:
            with self.db.read() as conn:
                if self._of_incident(conn, incident) is not None:
                    return None
        holder = self.in_flight(model)
        if holder is not None:
            raise ConflictError(
                f"Action {holder.id} of {model} is in flight ({holder.state}): at most one "
                "candidate in flight per model"
            )
        raise ConflictError(f"Could not record an action of {model}: retry")  # pragma: no cover

    def _of_incident(self, conn: Connection, incident: Incident) -> str | None:
        t = agent_actions.c
        found = conn.execute(
            select(t.id).where(
                and_(t.incident_id == incident.id, t.incident_opened_us == incident.opened_at_us)
            )
        ).first()
        return None if found is None else str(found[0])

    def advance(
        self,
        action: Action,
        to_state: str,
        *,
        now_us: int,
        event: EventSpec | None = None,
        events: Sequence[EventSpec] = (),
        expect: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Action:
        """Move ``action`` to ``to_state`` if it is still in ``action.state``.

        Writes ``fields`` (columns of ``agent_actions``; ``detail`` and ``params`` as
        dicts) and the events in the same transaction. ConflictError when the state moved
        meanwhile (another process advanced it): nothing is written. ``expect`` adds
        columns that must still hold these values (None: NULL) for the move to happen.
        """
        _check_state(to_state)
        unknown = sorted((set(fields) | set(expect or {})) - _FIELDS)
        if unknown:
            raise InvalidInputError(
                f"Expected fields of an action ({', '.join(sorted(_FIELDS))}), got {unknown}",
                loc="fields",
            )
        values = dict(fields)
        for name in ("detail", "params"):
            if name in values:
                values[name] = _json(values[name])
        values.update(
            state=to_state,
            in_flight=None if to_state in TERMINAL else action.model,
            updated_us=now_us,
        )
        all_events = ([event] if event is not None else []) + builtins.list(events)
        for kind, _, _ in all_events:
            _check_kind(kind)
        t = agent_actions.c
        conditions = [t.id == action.id, t.state == action.state]
        for name, value in (expect or {}).items():
            column = getattr(t, name)
            conditions.append(column.is_(None) if value is None else column == value)
        with self.db.write() as conn:
            done = conn.execute(update(agent_actions).where(and_(*conditions)).values(**values))
            if done.rowcount != 1:
                row = conn.execute(select(t.state).where(t.id == action.id)).first()
                if row is None:
                    raise NotFoundError(f"No agent action with id {action.id!r}")
                if row[0] == action.state:
                    raise ConflictError(
                        f"Action {action.id} of {action.model} changed meanwhile "
                        f"({', '.join(sorted(expect or {}))}): another process moved it"
                    )
                raise ConflictError(
                    f"Action {action.id} of {action.model} is {row[0]}, not {action.state}: "
                    "another process moved it"
                )
            self._insert_events(conn, action.id, all_events, now_us)
            fresh = conn.execute(select(agent_actions).where(t.id == action.id)).one()
        return _action(fresh)

    def update_detail(
        self,
        action: Action,
        detail: dict[str, Any],
        *,
        now_us: int,
        event: EventSpec | None = None,
    ) -> Action:
        """Replace ``action.detail`` (same compare-and-set, same state) with its event."""
        return self.advance(action, action.state, now_us=now_us, event=event, detail=detail)

    def add_event(
        self,
        action_id: str,
        kind: str,
        *,
        key: str = "",
        now_us: int,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Write one event; False when that (action, kind, key) exists already."""
        _check_kind(kind)
        with self.db.write() as conn:
            return self._insert_events(conn, action_id, [(kind, key, detail or {})], now_us) == 1

    def _insert_events(
        self, conn: Connection, action_id: str, events: Iterable[EventSpec], now_us: int
    ) -> int:
        """Insert the events not there yet (checked in the transaction); how many."""
        t = agent_events.c
        written = 0
        for kind, key, detail in events:
            exists = conn.execute(
                select(t.id).where(and_(t.action_id == action_id, t.kind == kind, t.key == key))
            ).first()
            if exists is not None:
                continue
            conn.execute(
                insert(agent_events).values(
                    action_id=action_id,
                    kind=kind,
                    key=key,
                    time_us=now_us,
                    recorded_us=_wall_us(),
                    detail=_json(detail),
                )
            )
            written += 1
        return written

    # -- reading ------------------------------------------------------------------------

    def get(self, action_id: str) -> Action:
        """The action ``action_id``; NotFoundError naming it."""
        with self.db.read() as conn:
            row = conn.execute(select(agent_actions).where(agent_actions.c.id == action_id)).first()
        if row is None:
            raise NotFoundError(f"No agent action with id {action_id!r}")
        return _action(row)

    def list(
        self, model: str | None = None, *, states: Sequence[str] | None = None, limit: int = 100
    ) -> builtins.list[Action]:
        """Actions, newest first."""
        t = agent_actions.c
        query = select(agent_actions)
        if model is not None:
            query = query.where(t.model == model)
        if states is not None:
            query = query.where(t.state.in_(list(states)))
        query = query.order_by(t.created_us.desc(), t.id.desc()).limit(limit)
        with self.db.read() as conn:
            return [_action(row) for row in conn.execute(query).all()]

    def in_flight(self, model: str) -> Action | None:
        """The action of ``model`` not finished yet, or None."""
        with self.db.read() as conn:
            row = conn.execute(
                select(agent_actions).where(agent_actions.c.in_flight == model)
            ).first()
        return None if row is None else _action(row)

    def last_retrain(self, model: str) -> Action | None:
        """The newest action of ``model`` that was not skipped (the cool-down's start)."""
        t = agent_actions.c
        query = (
            select(agent_actions)
            .where(and_(t.model == model, t.state != "skipped"))
            .order_by(t.created_us.desc(), t.id.desc())
            .limit(1)
        )
        with self.db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _action(row)

    def events(self, action_id: str) -> builtins.list[ActionEvent]:
        """The events of ``action_id``, in the order they were written."""
        t = agent_events.c
        with self.db.read() as conn:
            rows = conn.execute(
                select(agent_events).where(t.action_id == action_id).order_by(t.id)
            ).all()
        return [_event(row) for row in rows]

    def for_version(self, model: str, version: int) -> builtins.list[Action]:
        """The actions whose candidate is ``model`` v``version``, newest first."""
        t = agent_actions.c
        query = (
            select(agent_actions)
            .where(and_(t.model == model, t.candidate_version == version))
            .order_by(t.created_us.desc(), t.id.desc())
        )
        with self.db.read() as conn:
            return [_action(row) for row in conn.execute(query).all()]
