"""Every read and write of the pipeline tables (``pipeline_runs``, ``pipeline_steps``,
``pipeline_outputs``, ``pipeline_inputs``, ``step_cache``).

A pipeline run is a tracked run and each step a child run; the runner changes a step's
state in one transaction that also writes its run row, params and tags, so a step
transition costs one commit. The process that runs a pipeline is the only writer of
these tables (its workers write metrics through the tracking client).

A ``running`` pipeline run whose process is gone (same host, dead pid) or that has not
been heard from within the heartbeat timeout is reported failed, with its unfinished
steps: ``reap_dead`` records that, and every read here calls it first.

>>> from modelyard.store.database import open_database
>>> records = PipelineRecords(open_database("sqlite://"))
>>> records.list_pipeline_runs()
[]
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store.database import Database
from modelyard.store.processes import pid_alive
from modelyard.store.schema import (
    params,
    pipeline_inputs,
    pipeline_outputs,
    pipeline_runs,
    pipeline_steps,
    run_artifacts,
    run_tags,
    runs,
    step_cache,
)
from modelyard.tracking.environment import RunEnvironment
from modelyard.tracking.validation import MAX_PARAM_LENGTH

__all__ = [
    "CacheEntry",
    "CachedStep",
    "InputRow",
    "NewRun",
    "OutputRow",
    "PipelineRecords",
    "PipelineRunRow",
    "StepRow",
    "now_ms",
    "param_text",
]

#: the artifact path of a step run's captured output (``modelyard runs show`` lists it)
LOGS_ARTIFACT = "logs.txt"
#: statuses of a step that hold outputs another run may reuse
DONE = ("completed", "cached")
_HEX = re.compile(r"[0-9a-f]{1,32}")
_TRUNCATED = " ... (truncated; the full value is in the tag modelyard.cache_parts)"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def param_text(value: object) -> str:
    """A step or pipeline parameter as the text stored in ``params``.

    Strings as they are, paths as their text, anything else as canonical JSON; a value
    longer than a param may hold is cut with an explicit marker (never silently).
    """
    if isinstance(value, str):
        text = value
    elif hasattr(value, "__fspath__"):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - len(_TRUNCATED)] + _TRUNCATED
    return text


@dataclass(frozen=True)
class NewRun:
    """A tracked run the runner creates (the pipeline's run or a step's child run)."""

    run_id: str
    experiment_id: str
    name: str
    parent_run_id: str | None
    env: RunEnvironment
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputRow:
    """A stored step output as recorded (the fields of ``StoredOutput``)."""

    name: str
    digest: str
    type: str
    materializer: str
    manifest: Mapping[str, Any]
    size: int


@dataclass(frozen=True)
class InputRow:
    """What a step read: another step's output, a file, a feature set."""

    name: str
    digest: str
    kind: str  # output | file | features
    source_step_run_id: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class StepRow:
    run_id: str
    pipeline_run_id: str
    step: str
    function: str
    cache_key: str | None
    source_hash: str
    status: str
    cached_from: str | None
    started_at: int | None
    ended_at: int | None
    error: str | None
    logs_sha256: str | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at) / 1000


@dataclass(frozen=True)
class PipelineRunRow:
    run_id: str
    pipeline: str
    module: str
    params: dict[str, Any]
    status: str  # running | completed | failed
    resumed_from: str | None
    executor: str
    started_at: int
    ended_at: int | None


@dataclass(frozen=True)
class CachedStep:
    """A step a run answers from the cache (see ``PipelineRecords.steps_cached``)."""

    run: NewRun
    step: str
    function: str
    source_hash: str
    cache_key: str
    cached_from: str
    inputs: Sequence[InputRow]
    outputs: Sequence[OutputRow]
    at: int


@dataclass(frozen=True)
class CacheEntry:
    """A step run whose outputs answer a cache key."""

    cache_key: str
    step_run_id: str
    outputs: dict[str, OutputRow]


def _step_row(r: Any) -> StepRow:
    return StepRow(
        run_id=r.run_id,
        pipeline_run_id=r.pipeline_run_id,
        step=r.step,
        function=r.function,
        cache_key=r.cache_key,
        source_hash=r.source_hash,
        status=r.status,
        cached_from=r.cached_from,
        started_at=None if r.started_at is None else int(r.started_at),
        ended_at=None if r.ended_at is None else int(r.ended_at),
        error=r.error,
        logs_sha256=r.logs_sha256,
    )


_STEP_COLUMNS = (
    pipeline_steps.c.run_id,
    pipeline_steps.c.pipeline_run_id,
    pipeline_steps.c.step,
    pipeline_steps.c.function,
    pipeline_steps.c.cache_key,
    pipeline_steps.c.source_hash,
    pipeline_steps.c.status,
    pipeline_steps.c.cached_from,
    pipeline_steps.c.started_at,
    pipeline_steps.c.ended_at,
    pipeline_steps.c.error,
    pipeline_steps.c.logs_sha256,
)

# statements built once: SQLAlchemy's compiled cache then serves each transition
_INSERT_STEP = insert(pipeline_steps)
_CACHE_LOOKUP = (
    select(
        step_cache.c.step_run_id,
        pipeline_outputs.c.name,
        pipeline_outputs.c.digest,
        pipeline_outputs.c.type,
        pipeline_outputs.c.materializer,
        pipeline_outputs.c.manifest,
        pipeline_outputs.c.size,
    )
    .select_from(
        step_cache.outerjoin(
            pipeline_outputs, pipeline_outputs.c.step_run_id == step_cache.c.step_run_id
        )
    )
    .where(step_cache.c.cache_key == bindparam("b_key"))
)
_SET_STEP = (
    update(pipeline_steps)
    .where(pipeline_steps.c.run_id == bindparam("b_run_id"))
    .values(
        status=bindparam("b_status"),
        cache_key=bindparam("b_cache_key"),
        cached_from=bindparam("b_cached_from"),
        started_at=bindparam("b_started_at"),
        ended_at=bindparam("b_ended_at"),
        error=bindparam("b_error"),
        logs_sha256=bindparam("b_logs"),
    )
)
_END_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("b_run_id"))
    .values(
        status=bindparam("b_status"), end_time=bindparam("b_end"), heartbeat_at=bindparam("b_end")
    )
)


class PipelineRecords:
    """Pipeline runs, steps, their inputs and outputs, and the step cache."""

    def __init__(self, db: Database, *, heartbeat_timeout_s: float = 60.0) -> None:
        self.db = db
        self._host = socket.gethostname()
        self._timeout_ms = int(heartbeat_timeout_s * 1000)
        ins: Any = sqlite.insert if db.dialect == "sqlite" else postgresql.insert
        upsert = ins(step_cache)
        self._upsert_cache = upsert.on_conflict_do_update(
            index_elements=[step_cache.c.cache_key],
            set_={
                "step_run_id": upsert.excluded.step_run_id,
                "created_at": upsert.excluded.created_at,
            },
        )

    # -- writes ---------------------------------------------------------------------

    @staticmethod
    def _run_rows(
        conn: Connection, new: Sequence[tuple[NewRun, int]], *, status: str, ended: bool
    ) -> None:
        """Insert tracked runs (each with its start time), their params and tags."""
        if not new:
            return
        conn.execute(
            insert(runs),
            [
                {
                    "id": r.run_id,
                    "experiment_id": r.experiment_id,
                    "name": r.name,
                    "status": status,
                    "start_time": at,
                    "end_time": at if ended else None,
                    "heartbeat_at": at,
                    "parent_run_id": r.parent_run_id,
                    "git_commit": r.env.git_commit,
                    "git_dirty": r.env.git_dirty,
                    "python_version": r.env.python_version,
                    "packages": json.dumps(r.env.packages, sort_keys=True),
                    "host": r.env.host,
                    "pid": r.env.pid,
                    "user": r.env.user,
                    "source": r.env.source,
                }
                for r, at in new
            ],
        )
        param_rows = [
            {"run_id": r.run_id, "key": k, "value": v} for r, _ in new for k, v in r.params.items()
        ]
        if param_rows:
            conn.execute(insert(params), param_rows)
        tag_rows = [
            {"run_id": r.run_id, "key": k, "value": v} for r, _ in new for k, v in r.tags.items()
        ]
        if tag_rows:
            conn.execute(insert(run_tags), tag_rows)

    def start_pipeline(
        self,
        run: NewRun,
        *,
        pipeline: str,
        module: str,
        params_json: str,
        executor: str,
        resumed_from: str | None,
        now: int,
    ) -> None:
        """The pipeline's tracked run and its ``pipeline_runs`` row, in one transaction."""
        with self.db.write() as conn:
            self._run_rows(conn, [(run, now)], status="RUNNING", ended=False)
            conn.execute(
                insert(pipeline_runs).values(
                    run_id=run.run_id,
                    pipeline=pipeline,
                    module=module,
                    params=params_json,
                    status="running",
                    resumed_from=resumed_from,
                    executor=executor,
                    started_at=now,
                    ended_at=None,
                )
            )

    def step_running(
        self,
        run: NewRun,
        *,
        pipeline_run_id: str,
        step: str,
        function: str,
        source_hash: str,
        cache_key: str | None,
        inputs: Sequence[InputRow],
        now: int,
    ) -> None:
        """A step starts: its child run, its ``pipeline_steps`` row and its inputs."""
        with self.db.write() as conn:
            self._run_rows(conn, [(run, now)], status="RUNNING", ended=False)
            self._step_row(
                conn,
                run.run_id,
                pipeline_run_id,
                step,
                function,
                source_hash,
                cache_key,
                status="running",
                started_at=now,
            )
            self._inputs(conn, [(run.run_id, i) for i in inputs])

    @staticmethod
    def _step_row(
        conn: Connection,
        run_id: str,
        pipeline_run_id: str,
        step: str,
        function: str,
        source_hash: str,
        cache_key: str | None,
        *,
        status: str,
        started_at: int | None,
        ended_at: int | None = None,
        cached_from: str | None = None,
        error: str | None = None,
    ) -> None:
        conn.execute(
            _INSERT_STEP,
            {
                "run_id": run_id,
                "pipeline_run_id": pipeline_run_id,
                "step": step,
                "function": function,
                "cache_key": cache_key,
                "source_hash": source_hash,
                "status": status,
                "cached_from": cached_from,
                "started_at": started_at,
                "ended_at": ended_at,
                "error": error,
                "logs_sha256": None,
            },
        )

    @staticmethod
    def _inputs(conn: Connection, inputs: Sequence[tuple[str, InputRow]]) -> None:
        """Insert ``(step run id, input)`` rows."""
        if inputs:
            conn.execute(
                insert(pipeline_inputs),
                [
                    {
                        "step_run_id": run_id,
                        "name": i.name,
                        "digest": i.digest,
                        "kind": i.kind,
                        "source_step_run_id": i.source_step_run_id,
                        "description": i.description,
                    }
                    for run_id, i in inputs
                ],
            )

    @staticmethod
    def _outputs(conn: Connection, outputs: Sequence[tuple[str, OutputRow]]) -> None:
        """Insert ``(step run id, output)`` rows."""
        rows = [
            {
                "step_run_id": run_id,
                "name": o.name,
                "digest": o.digest,
                "type": o.type,
                "materializer": o.materializer,
                "manifest": json.dumps(o.manifest, sort_keys=True),
                "size": o.size,
            }
            for run_id, o in outputs
        ]
        if rows:
            conn.execute(insert(pipeline_outputs), rows)

    @staticmethod
    def _logs(conn: Connection, run_id: str, sha256: str | None, size: int, now: int) -> None:
        if sha256 is not None:
            conn.execute(
                insert(run_artifacts).values(
                    run_id=run_id, path=LOGS_ARTIFACT, sha256=sha256, size=size, created_at=now
                )
            )

    def _cache_row(self, conn: Connection, cache_key: str, run_id: str, now: int) -> None:
        conn.execute(
            self._upsert_cache, {"cache_key": cache_key, "step_run_id": run_id, "created_at": now}
        )

    def steps_cached(self, cached: Sequence[CachedStep], *, pipeline_run_id: str) -> None:
        """Steps answered from the cache, in one transaction: each one's run, row, inputs
        and the reused outputs (the runner batches the steps a scheduling round caches)."""
        if not cached:
            return
        with self.db.write() as conn:
            self._run_rows(conn, [(c.run, c.at) for c in cached], status="FINISHED", ended=True)
            conn.execute(
                _INSERT_STEP,
                [
                    {
                        "run_id": c.run.run_id,
                        "pipeline_run_id": pipeline_run_id,
                        "step": c.step,
                        "function": c.function,
                        "cache_key": c.cache_key,
                        "source_hash": c.source_hash,
                        "status": "cached",
                        "cached_from": c.cached_from,
                        "started_at": c.at,
                        "ended_at": c.at,
                        "error": None,
                        "logs_sha256": None,
                    }
                    for c in cached
                ],
            )
            self._inputs(conn, [(c.run.run_id, i) for c in cached for i in c.inputs])
            self._outputs(conn, [(c.run.run_id, o) for c in cached for o in c.outputs])

    def step_completed(
        self,
        run_id: str,
        *,
        cache_key: str | None,
        write_cache: bool,
        started_at: int,
        outputs: Iterable[OutputRow],
        inputs: Sequence[InputRow],
        logs_sha256: str | None,
        now: int,
        logs_size: int = 0,
    ) -> None:
        """A step finished: outputs, extra inputs, status and (after the blobs exist) the
        cache entry, all in one transaction."""
        with self.db.write() as conn:
            self._outputs(conn, [(run_id, o) for o in outputs])
            self._inputs(conn, [(run_id, i) for i in inputs])
            conn.execute(
                _SET_STEP,
                {
                    "b_run_id": run_id,
                    "b_status": "completed",
                    "b_cache_key": cache_key,
                    "b_cached_from": None,
                    "b_started_at": started_at,
                    "b_ended_at": now,
                    "b_error": None,
                    "b_logs": logs_sha256,
                },
            )
            conn.execute(_END_RUN, {"b_run_id": run_id, "b_status": "FINISHED", "b_end": now})
            self._logs(conn, run_id, logs_sha256, logs_size, now)
            if write_cache and cache_key is not None:
                self._cache_row(conn, cache_key, run_id, now)

    def step_failed(
        self,
        run_id: str,
        *,
        cache_key: str | None,
        started_at: int,
        error: str,
        inputs: Sequence[InputRow],
        logs_sha256: str | None,
        now: int,
        logs_size: int = 0,
    ) -> None:
        with self.db.write() as conn:
            self._inputs(conn, [(run_id, i) for i in inputs])
            conn.execute(
                _SET_STEP,
                {
                    "b_run_id": run_id,
                    "b_status": "failed",
                    "b_cache_key": cache_key,
                    "b_cached_from": None,
                    "b_started_at": started_at,
                    "b_ended_at": now,
                    "b_error": error,
                    "b_logs": logs_sha256,
                },
            )
            conn.execute(_END_RUN, {"b_run_id": run_id, "b_status": "FAILED", "b_end": now})
            self._logs(conn, run_id, logs_sha256, logs_size, now)

    def steps_skipped(
        self,
        new: Sequence[tuple[NewRun, str, str, str, str]],
        *,
        pipeline_run_id: str,
        now: int,
    ) -> None:
        """Steps that did not run because a step they depend on failed.

        ``new`` holds ``(run, step, function, source_hash, reason)``; each gets a child run
        (status KILLED: it never ran) and a ``skipped`` row naming the reason.
        """
        if not new:
            return
        with self.db.write() as conn:
            self._run_rows(conn, [(n[0], now) for n in new], status="KILLED", ended=True)
            for run, step, function, source_hash, reason in new:
                self._step_row(
                    conn,
                    run.run_id,
                    pipeline_run_id,
                    step,
                    function,
                    source_hash,
                    None,
                    status="skipped",
                    started_at=None,
                    ended_at=now,
                    error=reason,
                )

    def finish_pipeline(self, run_id: str, *, status: str, now: int) -> None:
        """The pipeline run ended: ``completed`` or ``failed`` (its run FINISHED or FAILED)."""
        with self.db.write() as conn:
            conn.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.run_id == run_id)
                .values(status=status, ended_at=now)
            )
            final = "FINISHED" if status == "completed" else "FAILED"
            conn.execute(_END_RUN, {"b_run_id": run_id, "b_status": final, "b_end": now})

    def heartbeat(self, pipeline_run_id: str, now: int) -> None:
        """The pipeline run and its running step runs are alive."""
        with self.db.write() as conn:
            conn.execute(
                update(runs)
                .where(
                    or_(runs.c.id == pipeline_run_id, runs.c.parent_run_id == pipeline_run_id),
                    runs.c.status == "RUNNING",
                )
                .values(heartbeat_at=now)
            )

    def forget_cache(self, cache_key: str, step_run_id: str) -> None:
        """Drop a cache entry whose outputs are gone or corrupted (only if unchanged)."""
        with self.db.write() as conn:
            conn.execute(
                step_cache.delete().where(
                    step_cache.c.cache_key == cache_key, step_cache.c.step_run_id == step_run_id
                )
            )

    # -- dead runs ------------------------------------------------------------------

    def reap_dead(self, now: int | None = None) -> int:
        """Record as failed the ``running`` pipeline runs whose process is gone."""
        now = now_ms() if now is None else now
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.host, runs.c.pid, runs.c.heartbeat_at, runs.c.status)
                .join(pipeline_runs, pipeline_runs.c.run_id == runs.c.id)
                .where(pipeline_runs.c.status == "running")
            ).all()
        dead = [
            r
            for r in rows
            if r.status != "RUNNING"
            or r.heartbeat_at < now - self._timeout_ms
            or (r.host == self._host and not pid_alive(r.pid))
        ]
        for row in dead:
            reason = (
                f"killed: the pipeline's process (pid {row.pid} on {row.host}) ended "
                "while this step was unfinished"
            )
            last = int(row.heartbeat_at)
            with self.db.write() as conn:
                conn.execute(
                    update(pipeline_runs)
                    .where(pipeline_runs.c.run_id == row.id, pipeline_runs.c.status == "running")
                    .values(status="failed", ended_at=last)
                )
                conn.execute(
                    update(pipeline_steps)
                    .where(
                        pipeline_steps.c.pipeline_run_id == row.id,
                        pipeline_steps.c.status.in_(("pending", "running")),
                    )
                    .values(status="failed", ended_at=last, error=reason)
                )
                conn.execute(
                    update(runs)
                    .where(
                        or_(runs.c.id == row.id, runs.c.parent_run_id == row.id),
                        runs.c.status == "RUNNING",
                    )
                    .values(status="KILLED", end_time=last)
                )
        return len(dead)

    # -- reads ----------------------------------------------------------------------

    @staticmethod
    def _output_row(r: Any) -> OutputRow:
        return OutputRow(
            name=r.name,
            digest=r.digest,
            type=r.type,
            materializer=r.materializer,
            manifest=json.loads(r.manifest),
            size=int(r.size),
        )

    def cache_entry(self, cache_key: str) -> CacheEntry | None:
        """The step run that answers ``cache_key`` and its outputs, or None (one query)."""
        with self.db.read() as conn:
            rows = conn.execute(_CACHE_LOOKUP, {"b_key": cache_key}).all()
        if not rows:
            return None
        outputs = {r.name: self._output_row(r) for r in rows if r.name is not None}
        return CacheEntry(cache_key, rows[0].step_run_id, outputs)

    @classmethod
    def _outputs_of(cls, conn: Connection, ids: Sequence[str]) -> dict[str, dict[str, OutputRow]]:
        found: dict[str, dict[str, OutputRow]] = {i: {} for i in ids}
        for r in conn.execute(
            select(pipeline_outputs).where(pipeline_outputs.c.step_run_id.in_(list(ids)))
        ):
            found[r.step_run_id][r.name] = cls._output_row(r)
        return found

    def outputs_of(self, step_run_ids: Sequence[str]) -> dict[str, dict[str, OutputRow]]:
        """Each step run's recorded outputs by name."""
        with self.db.read() as conn:
            return self._outputs_of(conn, step_run_ids)

    def inputs_of(self, step_run_id: str) -> list[InputRow]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(pipeline_inputs)
                .where(pipeline_inputs.c.step_run_id == step_run_id)
                .order_by(pipeline_inputs.c.name)
            ).all()
        return [
            InputRow(r.name, r.digest, r.kind, r.source_step_run_id, r.description) for r in rows
        ]

    @staticmethod
    def _pipeline_row(r: Row[Any]) -> PipelineRunRow:
        return PipelineRunRow(
            run_id=r.run_id,
            pipeline=r.pipeline,
            module=r.module,
            params=json.loads(r.params),
            status=r.status,
            resumed_from=r.resumed_from,
            executor=r.executor,
            started_at=int(r.started_at),
            ended_at=None if r.ended_at is None else int(r.ended_at),
        )

    def pipeline_run(self, run_id: str) -> PipelineRunRow:
        """A pipeline run by id or a unique prefix of 6+ characters."""
        self.reap_dead()
        if not isinstance(run_id, str) or not _HEX.fullmatch(run_id.lower()):
            raise InvalidInputError(
                f"Expected a pipeline run id (hex digits, or a prefix of 6+ of them), got "
                f"{run_id!r}",
                loc="run_id",
            )
        run_id = run_id.lower()
        with self.db.read() as conn:
            if len(run_id) < 32:
                if len(run_id) < 6:
                    raise InvalidInputError(
                        f"Expected a pipeline run id (or a prefix of 6+ characters), got "
                        f"{run_id!r}",
                        loc="run_id",
                    )
                rows = conn.execute(
                    select(pipeline_runs).where(pipeline_runs.c.run_id.like(run_id + "%")).limit(2)
                ).all()
                if len(rows) > 1:
                    raise InvalidInputError(
                        f"Run id prefix {run_id!r} matches several pipeline runs; "
                        "give more characters",
                        loc="run_id",
                    )
            else:
                rows = conn.execute(
                    select(pipeline_runs).where(pipeline_runs.c.run_id == run_id)
                ).all()
        if not rows:
            raise NotFoundError(
                f"No pipeline run with id {run_id!r}. List them with `modelyard pipeline runs`."
            )
        return self._pipeline_row(rows[0])

    def list_pipeline_runs(
        self, pipeline: str | None = None, *, limit: int = 50
    ) -> list[PipelineRunRow]:
        """Pipeline runs, newest first."""
        self.reap_dead()
        query = select(pipeline_runs)
        if pipeline is not None:
            query = query.where(pipeline_runs.c.pipeline == pipeline)
        query = query.order_by(
            pipeline_runs.c.started_at.desc(), pipeline_runs.c.run_id.desc()
        ).limit(limit)
        with self.db.read() as conn:
            return [self._pipeline_row(r) for r in conn.execute(query)]

    def steps_of(self, pipeline_run_id: str) -> list[StepRow]:
        """The steps of a pipeline run, in the order they started."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(*_STEP_COLUMNS)
                .where(pipeline_steps.c.pipeline_run_id == pipeline_run_id)
                .order_by(
                    func.coalesce(pipeline_steps.c.started_at, pipeline_steps.c.ended_at),
                    pipeline_steps.c.step,
                )
            ).all()
        return [_step_row(r) for r in rows]

    def step(self, step_run_id: str) -> StepRow | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(*_STEP_COLUMNS).where(pipeline_steps.c.run_id == step_run_id)
            ).first()
        return None if row is None else _step_row(row)

    def consumers_of(self, digest: str) -> list[InputRow]:
        """Inputs (with their step runs in ``source_step_run_id``'s place) that read ``digest``."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(pipeline_inputs).where(pipeline_inputs.c.digest == digest)
            ).all()
        return [InputRow(r.name, r.digest, r.kind, r.step_run_id, r.description) for r in rows]

    def producers_of(self, digest: str) -> list[tuple[str, OutputRow]]:
        """``(step run id, output)`` of every step run that recorded an output ``digest``."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(pipeline_outputs).where(pipeline_outputs.c.digest == digest)
            ).all()
        return [(r.step_run_id, self._output_row(r)) for r in rows]

    def pipeline_run_of_step(self, step_run_id: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(pipeline_steps.c.pipeline_run_id).where(
                    and_(pipeline_steps.c.run_id == step_run_id)
                )
            ).first()
        return None if row is None else str(row[0])
