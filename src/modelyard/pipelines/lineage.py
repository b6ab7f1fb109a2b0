"""Lineage: where a model version, a run or a piece of data came from, and where it went.

``lineage_of(settings, ref)`` walks the records backward: a model version to the step run
that logged it, that step's inputs (each an upstream step's output, a file named by a
``Path`` parameter, a feature-store training set, or a data set logged with
``log_input``), their producers' inputs, and so on down to outside data. Every step comes
with its parameters, code version (git commit, dirty flag, source hash) and the parts of
its cache key. ``forward=True`` walks the other way: a digest to the steps that consumed
it, their outputs, the steps those fed, and the model versions any of them logged.

A ref is a model ref (``churn@production``, ``churn/3``, ``churn:3``), a run id (a
pipeline run, a step run or any tracked run; a unique prefix of 6+ characters), or a
digest (64 hex characters or a unique prefix of 8+). The result is a tree of
:class:`LineageNode`; a node reached twice (a diamond in the graph) is shown once in full
and then as a reference (``seen``), so the tree stays as large as the graph.

A version that ``modelyard agent`` trained (the candidate of an agent action) also shows
the action (its pipeline run, gates, canary and decision) and, upstream of it, the alert
incident that caused it (rule, cause, when it opened, the values that breached); so does
the pipeline run the action started.

Read-only SQL over the pipeline tables, the tracking tables, the registry and the agent's
``agent_actions``/``agent_events`` (read here through ``store.schema``: the pipelines layer
sits below ``modelyard.agent``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, select, union

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError, did_you_mean
from modelyard.pipelines.cache import changed_parts
from modelyard.registry.refs import LATEST, ModelRef
from modelyard.store.database import Database, open_database
from modelyard.store.schema import (
    agent_actions,
    agent_events,
    model_aliases,
    model_packages,
    model_versions,
    monitor_incidents,
    params,
    pipeline_inputs,
    pipeline_outputs,
    pipeline_runs,
    pipeline_steps,
    registered_models,
    run_inputs,
    run_tags,
    runs,
)

__all__ = [
    "CACHE_PARTS_TAG",
    "Lineage",
    "LineageNode",
    "NodeKind",
    "RerunReason",
    "RunSummary",
    "diff_parts",
    "lineage_of",
    "recorded_pipelines",
    "rerun_reasons",
    "resolve_ref",
    "run_summaries",
]

#: the run tag holding a step's cache-key parts as JSON (written by the runner)
CACHE_PARTS_TAG = "modelyard.cache_parts"

NodeKind = Literal["model", "pipeline", "step", "run", "data", "action", "incident"]
Direction = Literal["backward", "forward"]

_HEX = re.compile(r"^[0-9a-f]+$")
_MODEL_REF = re.compile(r"^[^/@:]+(?:/\d+|@[^/@]+|:\d+)$")
_MIN_RUN_PREFIX = 6
_MIN_DIGEST_PREFIX = 8


@dataclass
class LineageNode:
    """One thing in a lineage tree: a model version, a run, a step run, a digest, an agent
    action or an alert incident.

    ``id`` is the version ref (``churn/3``), the run id, the digest, the action id or the
    incident id; ``label`` one line
    for the tree; ``details`` what is known about it (JSON-able); ``seen`` true when the
    node was already shown in full higher up the tree (its children are not repeated).
    """

    kind: NodeKind
    id: str
    label: str
    details: dict[str, Any] = field(default_factory=dict)
    children: list[LineageNode] = field(default_factory=list)
    seen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "label": self.label,
            "details": self.details,
            "seen": self.seen,
            "children": [c.to_dict() for c in self.children],
        }

    def walk(self) -> Iterable[LineageNode]:
        """This node and every node under it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class Lineage:
    """The lineage of one ref in one direction."""

    ref: str
    direction: Direction
    root: LineageNode

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "direction": self.direction, "root": self.root.to_dict()}


@dataclass(frozen=True)
class _Resolved:
    kind: Literal["model", "run", "digest"]
    value: str  # "name/3", a full run id, a full digest


def lineage_of(
    settings: Settings, ref: str, *, forward: bool = False, db: Database | None = None
) -> Lineage:
    """The lineage of ``ref`` (see the module's docstring); backward unless ``forward``."""
    own = db is None
    database = db or open_database(settings.db_url)
    try:
        with database.read() as conn:
            resolved = resolve_ref(conn, ref)
            walker = _Walker(conn)
            root = walker.forward(resolved) if forward else walker.backward(resolved)
    finally:
        if own:
            database.close()
    return Lineage(ref=ref, direction="forward" if forward else "backward", root=root)


# -- resolving a ref ----------------------------------------------------------------------


def resolve_ref(conn: Connection, ref: str) -> _Resolved:
    """What ``ref`` names: a model version, a run or a digest (one clear error otherwise)."""
    text = ref.strip() if isinstance(ref, str) else ""
    if not text:
        raise InvalidInputError(
            "Expected a model ref (name/3, name@alias), a run id or a digest, got an empty string",
            loc="ref",
        )
    if _MODEL_REF.match(text):
        return _model(conn, ModelRef.parse(text.replace(":", "/", 1) if ":" in text else text))
    lowered = text.lower()
    if _HEX.match(lowered) and len(lowered) >= _MIN_RUN_PREFIX:
        found = _matching_runs(conn, lowered) + _matching_digests(conn, lowered)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            shown = ", ".join(f"{r.kind} {r.value[:16]}" for r in found[:4])
            raise InvalidInputError(
                f"{text!r} matches more than one run or digest ({shown}); give more characters",
                loc="ref",
            )
    if conn.execute(
        select(registered_models.c.name).where(registered_models.c.name == text)
    ).first():
        return _model(conn, ModelRef.parse(text))
    raise NotFoundError(
        f"Nothing matches {text!r}: expected a model ref (name/3, name@alias), a run id "
        f"(or a prefix of {_MIN_RUN_PREFIX}+ characters) or a data digest (64 hex characters "
        f"or a prefix of {_MIN_DIGEST_PREFIX}+). List runs with `modelyard pipeline runs`."
    )


def _model(conn: Connection, ref: ModelRef) -> _Resolved:
    """``name/N`` of the version ``ref`` names (aliases and ``latest`` resolved)."""
    known = conn.execute(
        select(registered_models.c.name).where(registered_models.c.name == ref.name)
    ).first()
    if known is None:
        names = list(conn.execute(select(registered_models.c.name)).scalars())
        raise NotFoundError(
            f"No model named {ref.name!r}." + did_you_mean(ref.name, names, "models")
        )
    version: int | None
    if ref.version is not None:
        version = conn.execute(
            select(model_versions.c.version).where(
                model_versions.c.name == ref.name, model_versions.c.version == ref.version
            )
        ).scalar()
        if version is None:
            raise NotFoundError(f"Model {ref.name!r} has no version {ref.version}")
    elif ref.alias == LATEST:
        version = conn.execute(
            select(func.max(model_versions.c.version)).where(
                model_versions.c.name == ref.name, model_versions.c.status == "active"
            )
        ).scalar()
        if version is None:
            raise NotFoundError(f"Model {ref.name!r} has no active version")
    else:
        version = conn.execute(
            select(model_aliases.c.version).where(
                model_aliases.c.name == ref.name, model_aliases.c.alias == ref.alias
            )
        ).scalar()
        if version is None:
            aliases = conn.execute(
                select(model_aliases.c.alias).where(model_aliases.c.name == ref.name)
            ).scalars()
            known_aliases = ", ".join(sorted(aliases)) or "none"
            raise NotFoundError(
                f"Model {ref.name!r} has no alias {ref.alias!r}; aliases: {known_aliases}"
            )
    return _Resolved("model", f"{ref.name}/{int(version)}")


def _matching_runs(conn: Connection, prefix: str) -> list[_Resolved]:
    if len(prefix) > 32:
        return []
    ids = conn.execute(select(runs.c.id).where(runs.c.id.like(f"{prefix}%")).limit(3)).scalars()
    return [_Resolved("run", i) for i in ids]


def _matching_digests(conn: Connection, prefix: str) -> list[_Resolved]:
    if len(prefix) < _MIN_DIGEST_PREFIX or len(prefix) > 64:
        return []
    pattern = f"{prefix}%"
    query = union(
        select(pipeline_outputs.c.digest.label("d")).where(pipeline_outputs.c.digest.like(pattern)),
        select(pipeline_inputs.c.digest.label("d")).where(pipeline_inputs.c.digest.like(pattern)),
        select(run_inputs.c.digest.label("d")).where(run_inputs.c.digest.like(pattern)),
    ).limit(3)
    return [_Resolved("digest", d) for d in conn.execute(query).scalars()]


# -- walking the records --------------------------------------------------------------------


def _json(raw: Any) -> Any:
    """A JSON column decoded; a value that is not JSON is shown as recorded."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _iso(us: int | None) -> str:
    """Microseconds since the epoch as ``2013-05-20T00:00:00Z``; ``-`` for None."""
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(value: str | None, n: int = 12) -> str:
    return "-" if value is None else value[:n]


class _Walker:
    """Builds lineage trees over one read connection; each run and digest expanded once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._expanded: set[tuple[str, str]] = set()

    def _first_time(self, kind: str, key: str) -> bool:
        if (kind, key) in self._expanded:
            return False
        self._expanded.add((kind, key))
        return True

    # -- reading rows ---------------------------------------------------------------

    def _run_row(self, run_id: str) -> Any:
        return self.conn.execute(select(runs).where(runs.c.id == run_id)).first()

    def _params(self, run_id: str) -> dict[str, str]:
        rows = self.conn.execute(
            select(params.c.key, params.c.value).where(params.c.run_id == run_id)
        ).all()
        return dict(sorted((r.key, r.value) for r in rows))

    def _cache_parts(self, run_id: str) -> Any:
        raw = self.conn.execute(
            select(run_tags.c.value).where(
                run_tags.c.run_id == run_id, run_tags.c.key == CACHE_PARTS_TAG
            )
        ).scalar()
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # shown as recorded

    def _code(self, run: Any) -> dict[str, Any]:
        if run is None:
            return {}
        return {"git_commit": run.git_commit, "git_dirty": run.git_dirty}

    def _versions_of_run(self, run_id: str) -> list[Any]:
        return list(
            self.conn.execute(
                select(model_versions)
                .where(model_versions.c.run_id == run_id)
                .order_by(model_versions.c.name, model_versions.c.version)
            ).all()
        )

    # -- nodes ------------------------------------------------------------------------

    def _model_node(self, ref: str) -> tuple[LineageNode, Any]:
        name, _, number = ref.rpartition("/")
        row = self.conn.execute(
            select(model_versions, model_packages.c.flavor, model_packages.c.model_class)
            .join(model_packages, model_packages.c.id == model_versions.c.package_id)
            .where(model_versions.c.name == name, model_versions.c.version == int(number))
        ).first()
        if row is None:  # resolve_ref found it; a concurrent delete is the only way here
            raise NotFoundError(f"Model version {ref} does not exist")
        node = LineageNode(
            kind="model",
            id=ref,
            label=f"model {ref} ({row.flavor} {row.model_class})",
            details={
                "name": row.name,
                "version": row.version,
                "package_id": row.package_id,
                "run_id": row.run_id,
                "status": row.status,
                "created_by": row.created_by,
                "created_at": row.created_at,
            },
        )
        return node, row

    def _step_node(self, step: Any, run: Any) -> LineageNode:
        pipeline = self.conn.execute(
            select(pipeline_runs.c.pipeline).where(pipeline_runs.c.run_id == step.pipeline_run_id)
        ).scalar()
        status = step.status + (f" from {step.cached_from[:8]}" if step.cached_from else "")
        details = {
            "run_id": step.run_id,
            "step": step.step,
            "pipeline": pipeline,
            "pipeline_run_id": step.pipeline_run_id,
            "status": step.status,
            "cached_from": step.cached_from,
            "function": step.function,
            "source_hash": step.source_hash,
            "cache_key": step.cache_key,
            **self._code(run),
            "params": self._params(step.run_id),
            "cache_parts": self._cache_parts(step.run_id),
            "started_at": step.started_at,
            "ended_at": step.ended_at,
            "error": step.error,
        }
        return LineageNode(
            kind="step",
            id=step.run_id,
            label=f"step {step.step} of {pipeline} ({status}) run {step.run_id[:8]}",
            details=details,
        )

    def _pipeline_node(self, prun: Any, run: Any) -> LineageNode:
        try:
            values = json.loads(prun.params)
        except ValueError:
            values = prun.params
        return LineageNode(
            kind="pipeline",
            id=prun.run_id,
            label=f"pipeline {prun.pipeline} ({prun.status}) run {prun.run_id[:8]}",
            details={
                "run_id": prun.run_id,
                "pipeline": prun.pipeline,
                "module": prun.module,
                "status": prun.status,
                "params": values,
                "resumed_from": prun.resumed_from,
                "executor": prun.executor,
                **self._code(run),
                "started_at": prun.started_at,
                "ended_at": prun.ended_at,
            },
        )

    def _plain_run_node(self, run: Any) -> LineageNode:
        return LineageNode(
            kind="run",
            id=run.id,
            label=f"run {run.name} ({run.status}) {run.id[:8]}",
            details={
                "run_id": run.id,
                "name": run.name,
                "status": run.status,
                "parent_run_id": run.parent_run_id,
                **self._code(run),
                "source": run.source,
                "params": self._params(run.id),
                "started_at": run.start_time,
                "ended_at": run.end_time,
            },
        )

    def _run_node(self, run_id: str) -> LineageNode:
        """The node of any run: a step of a pipeline, a pipeline run or a tracked run."""
        run = self._run_row(run_id)
        step = self.conn.execute(
            select(pipeline_steps).where(pipeline_steps.c.run_id == run_id)
        ).first()
        if step is not None:
            return self._step_node(step, run)
        prun = self.conn.execute(
            select(pipeline_runs).where(pipeline_runs.c.run_id == run_id)
        ).first()
        if prun is not None:
            return self._pipeline_node(prun, run)
        if run is None:
            return LineageNode(
                kind="run", id=run_id, label=f"run {run_id[:8]} (not recorded)", details={}
            )
        return self._plain_run_node(run)

    def _seen(self, node: LineageNode) -> LineageNode:
        node.seen = True
        node.label += " (shown above)"
        return node

    # -- backward ---------------------------------------------------------------------

    def backward(self, resolved: _Resolved) -> LineageNode:
        if resolved.kind == "model":
            node, row = self._model_node(resolved.value)
            if row.run_id is not None:
                node.children.append(self._run_back(row.run_id))
            node.children.extend(
                self._actions_back(
                    (agent_actions.c.model == row.name)
                    & (agent_actions.c.candidate_version == row.version)
                )
            )
            return node
        if resolved.kind == "run":
            return self._run_back(resolved.value)
        return self._digest_back(resolved.value)

    def _run_back(self, run_id: str) -> LineageNode:
        node = self._run_node(run_id)
        if not self._first_time("run", run_id):
            return self._seen(node)
        if node.kind == "step":
            node.children.extend(self._step_inputs_back(run_id, node.details.get("cached_from")))
        elif node.kind == "pipeline":
            node.children.extend(self._run_back(s) for s in self._steps_sinks_first(run_id))
            node.children.extend(self._actions_back(agent_actions.c.pipeline_run_id == run_id))
        node.children.extend(self._datasets_back(run_id))
        return node

    # -- the agent's actions and the incidents that caused them ----------------------

    def _actions_back(self, where: Any) -> list[LineageNode]:
        """The agent actions matching ``where``, each with the incident that caused it."""
        rows = self.conn.execute(
            select(agent_actions)
            .where(where)
            .order_by(agent_actions.c.created_us, agent_actions.c.id)
        ).all()
        nodes = []
        for row in rows:
            node = self._action_node(row)
            if not self._first_time("action", row.id):
                nodes.append(self._seen(node))
                continue
            if row.incident_id is not None:
                node.children.append(self._incident_node(row))
            nodes.append(node)
        return nodes

    def _action_node(self, row: Any) -> LineageNode:
        events = self.conn.execute(
            select(agent_events)
            .where(agent_events.c.action_id == row.id)
            .order_by(agent_events.c.time_us, agent_events.c.id)
        ).all()
        looks = [e for e in events if e.kind == "look"]
        shown = [
            {"kind": e.kind, "key": e.key, "time_us": e.time_us, "detail": _json(e.detail)}
            for e in events
            if e.kind != "look"
        ]
        details: dict[str, Any] = {
            "action_id": row.id,
            "model": row.model,
            "kind": row.kind,
            "state": row.state,
            "rule": row.rule,
            "incident_id": row.incident_id,
            "incident_opened_us": row.incident_opened_us,
            "champion_version": row.champion_version,
            "candidate_version": row.candidate_version,
            "pipeline": row.pipeline,
            "pipeline_run_id": row.pipeline_run_id,
            "params": _json(row.params),
            "window_start_us": row.window_start_us,
            "window_end_us": row.window_end_us,
            "gate_evaluation_id": row.gate_evaluation_id,
            "canary_started_us": row.canary_started_us,
            "decision": row.decision,
            "reason": row.reason,
            "created_us": row.created_us,
            "updated_us": row.updated_us,
            "created_by": row.created_by,
            "events": shown,
            "looks": len(looks),
            "last_look": _json(looks[-1].detail) if looks else None,
        }
        parts = [f"agent action {row.id[:8]} {row.kind} ({row.state})"]
        if row.pipeline is not None:
            ran = f" run {row.pipeline_run_id[:8]}" if row.pipeline_run_id else ""
            parts.append(f"pipeline {row.pipeline}{ran}")
        if row.champion_version is not None:
            parts.append(f"against {row.model}/{row.champion_version}")
        if row.decision is not None:
            parts.append(f"decision {row.decision}")
        return LineageNode(kind="action", id=row.id, label=", ".join(parts), details=details)

    def _incident_node(self, action: Any) -> LineageNode:
        """The incident that caused ``action``, as it opened then and as it stands now."""
        incident_id = int(action.incident_id)
        row = self.conn.execute(
            select(monitor_incidents).where(monitor_incidents.c.id == incident_id)
        ).first()
        opened = action.incident_opened_us
        if row is None:  # an incident deleted since: the action's own record remains
            return LineageNode(
                kind="incident",
                id=str(incident_id),
                label=f"incident {incident_id} of rule {action.rule} (not recorded)",
                details={"incident_id": incident_id, "rule": action.rule, "opened_us": opened},
            )
        detail = _json(row.detail)
        details = {
            "incident_id": incident_id,
            "model": row.model,
            "version": row.version,
            "rule": row.rule,
            "cause": row.cause,
            "state": row.state,
            "opened_us": opened if opened is not None else row.opened_at,
            "last_opened_us": row.opened_at,
            "updated_us": row.updated_at,
            "detail": detail,
            "values": detail.get("values") if isinstance(detail, dict) else None,
        }
        when = _iso(details["opened_us"])
        return LineageNode(
            kind="incident",
            id=str(incident_id),
            label=f"incident {incident_id}: rule {row.rule}, cause {row.cause} on "
            f"{row.model}/{row.version}, opened {when} ({row.state} now)",
            details=details,
        )

    def _steps_sinks_first(self, pipeline_run_id: str) -> list[str]:
        """The step runs of a pipeline run: those no other step of it consumed first."""
        steps = list(
            self.conn.execute(
                select(pipeline_steps.c.run_id)
                .where(pipeline_steps.c.pipeline_run_id == pipeline_run_id)
                .order_by(pipeline_steps.c.started_at, pipeline_steps.c.step)
            ).scalars()
        )
        if not steps:
            return []
        consumed = set(
            self.conn.execute(
                select(pipeline_inputs.c.source_step_run_id).where(
                    pipeline_inputs.c.step_run_id.in_(steps)
                )
            ).scalars()
        )
        return [s for s in steps if s not in consumed] + [s for s in steps if s in consumed]

    def _step_inputs_back(self, run_id: str, cached_from: str | None) -> list[LineageNode]:
        rows = list(self._inputs_of(run_id))
        if cached_from is not None:
            # a cached step keeps the runner's input rows only; what the original recorded
            # itself (record_input: a feature set, the files it read) holds for the same key
            names = {r.name for r in rows}
            rows.extend(r for r in self._inputs_of(cached_from) if r.name not in names)
            rows.sort(key=lambda r: str(r.name))
        return [self._input_back(r) for r in rows]

    def _inputs_of(self, run_id: str) -> Sequence[Any]:
        return self.conn.execute(
            select(pipeline_inputs)
            .where(pipeline_inputs.c.step_run_id == run_id)
            .order_by(pipeline_inputs.c.name)
        ).all()

    def _input_back(self, row: Any) -> LineageNode:
        node = LineageNode(
            kind="data",
            id=row.digest,
            label=self._input_label(row),
            details={
                "as": row.name,
                "kind": row.kind,
                "digest": row.digest,
                "description": row.description,
                "source_step_run_id": row.source_step_run_id,
            },
        )
        if row.source_step_run_id is not None:
            out = self.conn.execute(
                select(pipeline_outputs).where(
                    pipeline_outputs.c.step_run_id == row.source_step_run_id,
                    pipeline_outputs.c.digest == row.digest,
                )
            ).first()
            if out is not None:
                node.details.update(self._output_details(out))
                node.label += f" ({out.type}, {out.materializer}, {out.size} bytes)"
            node.children.append(self._run_back(row.source_step_run_id))
        elif self._first_time("digest", row.digest):
            producer = self._producer_of(row.digest)  # outside data another step also made
            if producer is not None:
                node.children.append(self._run_back(producer))
        return node

    def _input_label(self, row: Any) -> str:
        where = f" {row.description}" if row.description else ""
        return f"{row.name} <- {row.kind}{where} sha256:{_short(row.digest)}"

    @staticmethod
    def _output_details(out: Any) -> dict[str, Any]:
        return {
            "output": out.name,
            "type": out.type,
            "materializer": out.materializer,
            "size": out.size,
        }

    def _producer_of(self, digest: str) -> str | None:
        """The step run that first made ``digest`` (an original run before cached copies)."""
        rows = self.conn.execute(
            select(pipeline_steps.c.run_id, pipeline_steps.c.cached_from)
            .join(pipeline_outputs, pipeline_outputs.c.step_run_id == pipeline_steps.c.run_id)
            .where(pipeline_outputs.c.digest == digest)
            .order_by(pipeline_steps.c.started_at, pipeline_steps.c.run_id)
        ).all()
        original = [r.run_id for r in rows if r.cached_from is None]
        if original:
            return str(original[0])
        return str(rows[0].run_id) if rows else None

    def _datasets_back(self, run_id: str) -> list[LineageNode]:
        """Data sets the run logged with ``log_input`` (digest of every cell)."""
        rows = self.conn.execute(
            select(run_inputs).where(run_inputs.c.run_id == run_id).order_by(run_inputs.c.id)
        ).all()
        return [
            LineageNode(
                kind="data",
                id=r.digest,
                label=f"{r.name} <- dataset ({r.context}, {r.num_rows} rows)"
                f"{' ' + r.source if r.source else ''} sha256:{_short(r.digest)}",
                details={
                    "as": r.name,
                    "kind": "dataset",
                    "context": r.context,
                    "digest": r.digest,
                    "rows": r.num_rows,
                    "description": r.source,
                },
            )
            for r in rows
        ]

    def _digest_back(self, digest: str) -> LineageNode:
        node = self._digest_node(digest)
        self._first_time("digest", digest)
        producer = self._producer_of(digest)
        if producer is not None:
            node.children.append(self._run_back(producer))
        return node

    def _digest_node(self, digest: str) -> LineageNode:
        out = self.conn.execute(
            select(pipeline_outputs).where(pipeline_outputs.c.digest == digest).limit(1)
        ).first()
        details: dict[str, Any] = {"digest": digest}
        if out is not None:
            details.update(self._output_details(out))
            label = f"data sha256:{_short(digest)} ({out.type}, {out.size} bytes)"
        else:
            seen = self.conn.execute(
                select(pipeline_inputs.c.kind, pipeline_inputs.c.description)
                .where(pipeline_inputs.c.digest == digest)
                .limit(1)
            ).first()
            if seen is None:
                seen = self.conn.execute(
                    select(
                        run_inputs.c.context.label("kind"), run_inputs.c.name.label("description")
                    )
                    .where(run_inputs.c.digest == digest)
                    .limit(1)
                ).first()
            kind = seen.kind if seen is not None else "data"
            where = f" {seen.description}" if seen is not None and seen.description else ""
            details.update({"kind": kind, "description": seen.description if seen else None})
            label = f"data sha256:{_short(digest)} ({kind}{where})"
        return LineageNode(kind="data", id=digest, label=label, details=details)

    # -- forward ----------------------------------------------------------------------

    def forward(self, resolved: _Resolved) -> LineageNode:
        if resolved.kind == "model":
            node, _row = self._model_node(resolved.value)
            return node
        if resolved.kind == "run":
            return self._run_fwd(resolved.value)
        return self._digest_fwd(self._digest_node(resolved.value))

    def _digest_fwd(self, node: LineageNode) -> LineageNode:
        digest = node.id
        if not self._first_time("digest", digest):
            return self._seen(node)
        consumers = self.conn.execute(
            select(pipeline_inputs.c.step_run_id, pipeline_inputs.c.name)
            .join(pipeline_steps, pipeline_steps.c.run_id == pipeline_inputs.c.step_run_id)
            .where(pipeline_inputs.c.digest == digest)
            .order_by(pipeline_steps.c.started_at, pipeline_inputs.c.step_run_id)
        ).all()
        for run_id, name in consumers:
            child = self._run_fwd(run_id)
            child.details.setdefault("as", name)
            node.children.append(child)
        others = self.conn.execute(
            select(run_inputs.c.run_id)
            .where(run_inputs.c.digest == digest)
            .order_by(run_inputs.c.created_at, run_inputs.c.run_id)
        ).scalars()
        node.children.extend(self._run_fwd(r) for r in others)
        return node

    def _run_fwd(self, run_id: str) -> LineageNode:
        node = self._run_node(run_id)
        if not self._first_time("run", run_id):
            return self._seen(node)
        if node.kind == "pipeline":
            steps = self.conn.execute(
                select(pipeline_steps.c.run_id)
                .where(pipeline_steps.c.pipeline_run_id == run_id)
                .order_by(pipeline_steps.c.started_at, pipeline_steps.c.step)
            ).scalars()
            node.children.extend(self._run_fwd(s) for s in list(steps))
        outputs = self.conn.execute(
            select(pipeline_outputs)
            .where(pipeline_outputs.c.step_run_id == run_id)
            .order_by(pipeline_outputs.c.name)
        ).all()
        for out in outputs:
            data = LineageNode(
                kind="data",
                id=out.digest,
                label=f"{out.name} -> sha256:{_short(out.digest)} "
                f"({out.type}, {out.materializer}, {out.size} bytes)",
                details={"digest": out.digest, **self._output_details(out)},
            )
            node.children.append(self._digest_fwd(data))
        for row in self._versions_of_run(run_id):
            model, _ = self._model_node(f"{row.name}/{row.version}")
            node.children.append(model)
        return node


# -- why steps ran, and run summaries (for `pipeline runs` and `pipeline inspect`) ---------


def diff_parts(old: Any, new: Any) -> list[str]:
    """The cache-key parts that differ (``params.max_depth``, ``source``, ``inputs.train``):
    :func:`modelyard.pipelines.cache.changed_parts` over recorded parts, ``["(all)"]`` when
    one side is not a mapping (a tag that was not JSON) and they differ.

    >>> diff_parts({"source": "a", "params": {"x": 1}}, {"source": "a", "params": {"x": 3}})
    ['params.x']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        return changed_parts(old, new)
    return [] if old == new else ["(all)"]


@dataclass(frozen=True)
class RerunReason:
    """Why a step of a pipeline run ran (or did not).

    ``compared_with`` is the step run of an earlier run of the same pipeline whose
    cache-key parts were compared; ``changed`` the parts that differ (:func:`diff_parts`).
    """

    step: str
    status: str
    compared_with: str | None
    changed: tuple[str, ...]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status,
            "compared_with": self.compared_with,
            "changed": list(self.changed),
            "text": self.text,
        }


def _parts_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, Any]:
    if not run_ids:
        return {}
    found: dict[str, Any] = {}
    for run_id, raw in conn.execute(
        select(run_tags.c.run_id, run_tags.c.value).where(
            run_tags.c.run_id.in_(list(run_ids)), run_tags.c.key == CACHE_PARTS_TAG
        )
    ):
        try:
            found[run_id] = json.loads(raw)
        except ValueError:
            found[run_id] = raw
    return found


def _earlier_steps(conn: Connection, prun: Any) -> dict[str, tuple[str, str]]:
    """Step name -> (step run id, status) of the latest earlier run of the same pipeline
    that had that step; the run it resumed comes first."""
    earlier = (
        select(pipeline_runs.c.run_id)
        .where(
            pipeline_runs.c.pipeline == prun.pipeline,
            pipeline_runs.c.run_id != prun.run_id,
            pipeline_runs.c.started_at <= prun.started_at,
        )
        .order_by(pipeline_runs.c.started_at.desc(), pipeline_runs.c.run_id.desc())
        .limit(20)
    )
    ids = list(conn.execute(earlier).scalars())
    if prun.resumed_from is not None and prun.resumed_from not in ids:
        ids.insert(0, prun.resumed_from)
    elif prun.resumed_from is not None:
        ids.remove(prun.resumed_from)
        ids.insert(0, prun.resumed_from)
    if not ids:
        return {}
    rank = {run_id: i for i, run_id in enumerate(ids)}
    found: dict[str, tuple[int, str, str]] = {}
    for row in conn.execute(
        select(
            pipeline_steps.c.pipeline_run_id,
            pipeline_steps.c.step,
            pipeline_steps.c.run_id,
            pipeline_steps.c.status,
        ).where(pipeline_steps.c.pipeline_run_id.in_(ids))
    ):
        order = rank[row.pipeline_run_id]
        if row.step not in found or order < found[row.step][0]:
            found[row.step] = (order, row.run_id, row.status)
    return {step: (run_id, status) for step, (_o, run_id, status) in found.items()}


def rerun_reasons(db: Database, pipeline_run_id: str) -> dict[str, RerunReason]:
    """For each step of a pipeline run: why it ran, was cached or skipped.

    A step that ran is compared with the same step of the run it resumed, or else of the
    latest earlier run of the same pipeline: the parts of the cache key that changed
    (the tag ``modelyard.cache_parts``), or why an unchanged key still ran.
    """
    with db.read() as conn:
        prun = conn.execute(
            select(pipeline_runs).where(pipeline_runs.c.run_id == pipeline_run_id)
        ).first()
        if prun is None:
            raise NotFoundError(f"No pipeline run with id {pipeline_run_id!r}")
        steps = conn.execute(
            select(pipeline_steps)
            .where(pipeline_steps.c.pipeline_run_id == pipeline_run_id)
            .order_by(pipeline_steps.c.started_at, pipeline_steps.c.step)
        ).all()
        earlier = _earlier_steps(conn, prun)
        ids = [s.run_id for s in steps] + [run_id for run_id, _ in earlier.values()]
        parts = _parts_of(conn, ids)
    return {s.step: _reason(s, earlier.get(s.step), parts) for s in steps}


def _reason(step: Any, earlier: tuple[str, str] | None, parts: dict[str, Any]) -> RerunReason:
    def reason(text: str, compared: str | None = None, changed: Sequence[str] = ()) -> RerunReason:
        return RerunReason(step.step, step.status, compared, tuple(changed), text)

    if step.status == "cached":
        return reason(f"cached: same key as step run {_short(step.cached_from, 8)}")
    if step.status == "skipped":
        return reason("skipped: " + (step.error or "an upstream step failed"))
    if step.status == "pending":
        return reason("not started")
    if earlier is None:
        return reason("first run of this step")
    before_id, before_status = earlier
    now, before = parts.get(step.run_id), parts.get(before_id)
    if now is None or before is None:
        return reason(f"no recorded key to compare with {before_id[:8]}", before_id)
    changed = diff_parts(before, now)
    if changed:
        return reason(
            "changed since " + before_id[:8] + ": " + ", ".join(changed), before_id, changed
        )
    if before_status in ("failed", "skipped", "pending", "running"):
        return reason(
            f"same key as {before_id[:8]}, which did not finish ({before_status})", before_id
        )
    return reason(
        f"same key as {before_id[:8]}: the cache was off (--no-cache, or a step with "
        "cache=False) or its outputs were gone",
        before_id,
    )


@dataclass(frozen=True)
class RunSummary:
    """What ``pipeline runs`` shows beside a pipeline run's own row."""

    tracked_status: str | None  # the tracked run's status: RUNNING, FINISHED, FAILED, KILLED
    steps: dict[str, int]  # status -> how many steps


def run_summaries(db: Database, run_ids: Sequence[str]) -> dict[str, RunSummary]:
    """Step counts by status and the tracked run's status, per pipeline run, in two reads."""
    if not run_ids:
        return {}
    ids = list(run_ids)
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    with db.read() as conn:
        for run_id, status, n in conn.execute(
            select(pipeline_steps.c.pipeline_run_id, pipeline_steps.c.status, func.count())
            .where(pipeline_steps.c.pipeline_run_id.in_(ids))
            .group_by(pipeline_steps.c.pipeline_run_id, pipeline_steps.c.status)
        ):
            counts[run_id][status] = int(n)
        tracked = {
            row.id: row.status
            for row in conn.execute(select(runs.c.id, runs.c.status).where(runs.c.id.in_(ids)))
        }
    return {i: RunSummary(tracked.get(i), counts[i]) for i in ids}


def recorded_pipelines(db: Database) -> list[str]:
    """The names of the pipelines that have runs, sorted."""
    with db.read() as conn:
        return sorted(conn.execute(select(pipeline_runs.c.pipeline).distinct()).scalars().all())
