"""SQL for tracking: every read and write of runs, params, tags, metrics and inputs."""

from __future__ import annotations

import functools
import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from modelyard.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    did_you_mean,
)
from modelyard.store.database import Database
from modelyard.store.processes import pid_alive
from modelyard.store.schema import (
    experiments,
    latest_metrics,
    metric_batches,
    metrics,
    params,
    run_artifacts,
    run_inputs,
    run_tags,
    runs,
)
from modelyard.tracking.buffer import Point, RejectedPointsError
from modelyard.tracking.entities import (
    ArtifactEntry,
    DatasetInput,
    Experiment,
    Metric,
    Run,
    RunStatus,
)
from modelyard.tracking.environment import RunEnvironment
from modelyard.tracking.filters import compile_filter, compile_order

__all__ = ["EndedRun", "SQLTrackingStore"]

_MAX_RESULTS = 50_000
# the order _load_runs reads them by position
_RUN_COLUMNS = (
    runs.c.id,
    runs.c.experiment_id,
    runs.c.name,
    runs.c.status,
    runs.c.start_time,
    runs.c.end_time,
    runs.c.parent_run_id,
    runs.c.git_commit,
    runs.c.git_dirty,
    runs.c.python_version,
    runs.c.packages,
    runs.c.host,
    runs.c.user,
    runs.c.source,
    experiments.c.name,
)
_FROM_RUNS = select(*_RUN_COLUMNS).join(experiments, experiments.c.id == runs.c.experiment_id)
_BY_ID = _FROM_RUNS.where(runs.c.id == bindparam("run_id"))
_TEXT_RECORDS = (
    select(literal(0).label("slot"), params.c.run_id, params.c.key, params.c.value)
    .where(params.c.run_id.in_(bindparam("ids", expanding=True)))
    .union_all(
        select(literal(1), run_tags.c.run_id, run_tags.c.key, run_tags.c.value).where(
            run_tags.c.run_id.in_(bindparam("ids", expanding=True))
        )
    )
)
_LATEST_METRICS = select(
    latest_metrics.c.run_id, latest_metrics.c.key, latest_metrics.c.value
).where(latest_metrics.c.run_id.in_(bindparam("ids", expanding=True)))


@functools.lru_cache(maxsize=256)
def _search_query(filter: str, order_by: tuple[str, ...], by_experiment: bool) -> Any:
    """The statement for a search; built once per filter and order (statements are immutable).

    Limit, offset and experiment ids stay bound parameters, so SQLAlchemy's compiled
    cache serves every page and every experiment with the same SQL.
    """
    query = _FROM_RUNS
    if by_experiment:
        query = query.where(runs.c.experiment_id.in_(bindparam("experiment_ids", expanding=True)))
    where = compile_filter(filter)
    if where is not None:
        query = query.where(where)
    return (
        query.order_by(*compile_order(order_by), runs.c.start_time.desc(), runs.c.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


@dataclass(frozen=True)
class EndedRun:
    """A run recorded after it ended (a tuning trial): ``insert_ended_runs`` writes many."""

    id: str
    name: str
    status: RunStatus
    start_time: int
    end_time: int
    parent_run_id: str | None
    params: Mapping[str, str]
    tags: Mapping[str, str]


class SQLTrackingStore:
    """Runs and their records in the metadata database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._dialect = db.dialect

    # -- experiments -------------------------------------------------------------

    def _experiment(self, row: Row[Any]) -> Experiment:
        return Experiment(row.id, row.name, row.created_at, row.description)

    def get_experiment(self, name: str) -> Experiment | None:
        with self.db.read() as conn:
            row = conn.execute(select(experiments).where(experiments.c.name == name)).first()
        return None if row is None else self._experiment(row)

    def list_experiments(self) -> list[Experiment]:
        with self.db.read() as conn:
            rows = conn.execute(select(experiments).order_by(experiments.c.name)).all()
        return [self._experiment(r) for r in rows]

    def get_or_create_experiment(self, name: str, now: int) -> Experiment:
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidInputError(
                f"Expected an experiment name of 1-255 characters, got {name!r}", loc="experiment"
            )
        found = self.get_experiment(name)
        if found is not None:
            return found
        try:
            with self.db.write() as conn:
                conn.execute(
                    insert(experiments).values(id=uuid.uuid4().hex, name=name, created_at=now)
                )
        except sa_exc.IntegrityError:
            pass  # another process created it first; read theirs
        found = self.get_experiment(name)
        assert found is not None  # just inserted, by us or by a concurrent process
        return found

    def require_experiment(self, name: str) -> Experiment:
        found = self.get_experiment(name)
        if found is None:
            known = [e.name for e in self.list_experiments()]
            raise NotFoundError(
                f"No experiment named {name!r}.{did_you_mean(name, known, 'experiments')}"
            )
        return found

    # -- runs --------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        name: str,
        env: RunEnvironment,
        parent_run_id: str | None,
        tags: Mapping[str, str],
        now: int,
    ) -> str:
        run_id = uuid.uuid4().hex
        with self.db.write() as conn:
            if parent_run_id is not None:
                self._require_run(conn, parent_run_id)
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    experiment_id=experiment_id,
                    name=name,
                    status=RunStatus.RUNNING.value,
                    start_time=now,
                    end_time=None,
                    heartbeat_at=now,
                    parent_run_id=parent_run_id,
                    git_commit=env.git_commit,
                    git_dirty=env.git_dirty,
                    python_version=env.python_version,
                    packages=json.dumps(env.packages, sort_keys=True),
                    host=env.host,
                    pid=env.pid,
                    user=env.user,
                    source=env.source,
                )
            )
            if tags:
                conn.execute(
                    insert(run_tags),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                )
        return run_id

    def insert_ended_runs(
        self, experiment_id: str, ended: Sequence[EndedRun], env: RunEnvironment
    ) -> list[str]:
        """Insert runs that already ended, with params and tags, in one transaction.

        Idempotent: a run id already stored is skipped (a batch retried after a lost
        commit answer writes nothing twice). Returns the ids inserted now.
        """
        if not ended:
            return []
        packages = json.dumps(env.packages, sort_keys=True)
        with self.db.write() as conn:
            present = set(
                conn.execute(select(runs.c.id).where(runs.c.id.in_([r.id for r in ended])))
                .scalars()
                .all()
            )
            fresh = [r for r in ended if r.id not in present]
            if not fresh:
                return []
            conn.execute(
                insert(runs),
                [
                    {
                        "id": r.id,
                        "experiment_id": experiment_id,
                        "name": r.name,
                        "status": r.status.value,
                        "start_time": r.start_time,
                        "end_time": r.end_time,
                        "heartbeat_at": r.end_time,
                        "parent_run_id": r.parent_run_id,
                        "git_commit": env.git_commit,
                        "git_dirty": env.git_dirty,
                        "python_version": env.python_version,
                        "packages": packages,
                        "host": env.host,
                        "pid": env.pid,
                        "user": env.user,
                        "source": env.source,
                    }
                    for r in fresh
                ],
            )
            param_rows = [
                {"run_id": r.id, "key": k, "value": v} for r in fresh for k, v in r.params.items()
            ]
            if param_rows:
                conn.execute(insert(params), param_rows)
            tag_rows = [
                {"run_id": r.id, "key": k, "value": v} for r in fresh for k, v in r.tags.items()
            ]
            if tag_rows:
                conn.execute(insert(run_tags), tag_rows)
        return [r.id for r in fresh]

    def _require_run(self, conn: Connection, run_id: str) -> Row[Any]:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"No run with id {run_id!r}. List runs with `modelyard runs list`.")
        return row

    def set_status(self, run_id: str, status: RunStatus, now: int) -> None:
        with self.db.write() as conn:
            self._require_run(conn, run_id)
            end = None if status is RunStatus.RUNNING else now
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status.value, end_time=end, heartbeat_at=now)
            )

    def heartbeat(self, run_ids: Iterable[str], now: int) -> None:
        ids = list(run_ids)
        if ids:
            with self.db.write() as conn:
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(ids), runs.c.status == RunStatus.RUNNING.value)
                    .values(heartbeat_at=now)
                )

    def reap_dead_runs(self, *, now: int, timeout_ms: int, host: str) -> int:
        """Mark as KILLED the running runs whose process is gone; return how many."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.host, runs.c.pid, runs.c.heartbeat_at).where(
                    runs.c.status == RunStatus.RUNNING.value
                )
            ).all()
        dead = [
            (r.id, r.heartbeat_at)
            for r in rows
            if r.heartbeat_at < now - timeout_ms or (r.host == host and not pid_alive(r.pid))
        ]
        if dead:
            with self.db.write() as conn:
                for run_id, last_seen in dead:
                    conn.execute(
                        update(runs)
                        .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
                        .values(status=RunStatus.KILLED.value, end_time=last_seen)
                    )
        return len(dead)

    # -- params and tags -------------------------------------------------------------

    def log_params(self, run_id: str, values: Mapping[str, str]) -> None:
        """Insert params; the same value again is fine, a different one is a ConflictError."""
        if not values:
            return
        with self.db.write() as conn:
            self._require_run(conn, run_id)
            existing = dict(
                conn.execute(
                    select(params.c.key, params.c.value).where(
                        params.c.run_id == run_id, params.c.key.in_(list(values))
                    )
                ).all()
            )
            clashes = [
                (k, existing[k], v) for k, v in values.items() if k in existing and existing[k] != v
            ]
            if clashes:
                key, old, new = clashes[0]
                raise ConflictError(
                    f"Param {key!r} of run {run_id} is already {old!r}; cannot change it to "
                    f"{new!r}. Params are logged once: start a new run to try another value."
                )
            new_rows = [
                {"run_id": run_id, "key": k, "value": v}
                for k, v in values.items()
                if k not in existing
            ]
            if new_rows:
                conn.execute(insert(params), new_rows)

    def set_tags(self, run_id: str, values: Mapping[str, str]) -> None:
        if not values:
            return
        with self.db.write() as conn:
            self._require_run(conn, run_id)
            conn.execute(
                delete(run_tags).where(
                    run_tags.c.run_id == run_id, run_tags.c.key.in_(list(values))
                )
            )
            conn.execute(
                insert(run_tags),
                [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()],
            )

    # -- metrics -----------------------------------------------------------------

    def write_metrics(self, batch_id: str, points: Sequence[Point]) -> None:
        """Append points to the history and move each key's latest value forward, once.

        The batch's id is recorded in the same transaction: a batch retried after a
        commit whose answer was lost is found and not written again. A point the
        database refuses (a number out of range, a run that does not exist) is a
        ``RejectedPointsError``, and nothing of the batch is written.
        """
        nan_as_null = self._dialect == "sqlite"  # SQLite stores NaN as NULL anyway
        history: list[dict[str, Any]] = [
            {
                "run_id": run_id,
                "key": key,
                "value": None if nan_as_null and math.isnan(value) else value,
                "step": step,
                "timestamp": ts,
            }
            for run_id, key, value, step, ts in points
        ]
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in history:
            ident: tuple[str, str] = (row["run_id"], row["key"])
            seen = latest.get(ident)
            if seen is None or (row["step"], row["timestamp"]) >= (seen["step"], seen["timestamp"]):
                latest[ident] = row
        run_ids = sorted({row["run_id"] for row in history})
        now = time.time_ns() // 1_000_000
        ins: Any = sqlite.insert if self._dialect == "sqlite" else postgresql.insert
        with self.db.write() as conn:
            claimed = conn.execute(
                ins(metric_batches)
                .values(id=batch_id, written_at=now)
                .on_conflict_do_nothing()
                .returning(metric_batches.c.id)
            ).first()
            if claimed is None:
                return  # written before: this is a retry
            try:
                conn.execute(insert(metrics), history)
                upsert = ins(latest_metrics)
                current = latest_metrics.c
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[current.run_id, current.key],
                        set_={
                            "value": upsert.excluded.value,
                            "step": upsert.excluded.step,
                            "timestamp": upsert.excluded.timestamp,
                        },
                        where=or_(
                            current.step < upsert.excluded.step,
                            and_(
                                current.step == upsert.excluded.step,
                                current.timestamp <= upsert.excluded.timestamp,
                            ),
                        ),
                    ),
                    list(latest.values()),
                )
                # a write is news from the run: a killed run ends no earlier than its last one
                larger = func.max if self._dialect == "sqlite" else func.greatest
                conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(run_ids), runs.c.status == RunStatus.RUNNING.value)
                    .values(heartbeat_at=larger(runs.c.heartbeat_at, now))
                )
            except (sa_exc.DataError, sa_exc.IntegrityError) as exc:
                raise RejectedPointsError(
                    f"The metric store refused the batch: {_first_line(exc.orig or exc)}",
                    loc="metrics",
                ) from exc
            except (OverflowError, ValueError, TypeError) as exc:  # the driver, on a value
                raise RejectedPointsError(
                    f"The metric store refused the batch: {type(exc).__name__}: {exc}",
                    loc="metrics",
                ) from exc

    def metric_batch_written(self, batch_id: str) -> bool:
        """Whether the batch with this id was committed."""
        with self.db.read() as conn:
            found = conn.execute(
                select(metric_batches.c.id).where(metric_batches.c.id == batch_id)
            ).first()
        return found is not None

    def run_exists(self, run_id: str) -> bool:
        with self.db.read() as conn:
            return conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is not None

    def latest_steps(self, run_id: str) -> dict[str, int]:
        """The step of each metric's latest point."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(latest_metrics.c.key, latest_metrics.c.step).where(
                    latest_metrics.c.run_id == run_id
                )
            ).all()
        return {r.key: int(r.step) for r in rows}

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        with self.db.read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(
                select(metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.timestamp)
                .where(metrics.c.run_id == run_id, metrics.c.key == key)
                .order_by(metrics.c.step, metrics.c.timestamp, metrics.c.id)
            ).all()
        return [Metric(r.key, _float(r.value), r.step, r.timestamp) for r in rows]

    # -- inputs and artifacts ---------------------------------------------------------

    def log_input(self, run_id: str, dataset: DatasetInput, now: int) -> None:
        values = {
            "run_id": run_id,
            "name": dataset.name,
            "context": dataset.context,
            "digest": dataset.digest,
            "schema": json.dumps(dataset.schema),
            "num_rows": dataset.num_rows,
            "source": dataset.source,
            "created_at": now,
        }
        with self.db.write() as conn:
            self._require_run(conn, run_id)
            old = conn.execute(
                select(run_inputs.c.digest).where(
                    run_inputs.c.run_id == run_id,
                    run_inputs.c.name == dataset.name,
                    run_inputs.c.context == dataset.context,
                )
            ).first()
            if old is not None and old.digest != dataset.digest:
                raise ConflictError(
                    f"Run {run_id} already read a different {dataset.context!r} data set "
                    f"named {dataset.name!r} (digest {old.digest[:12]}..., now "
                    f"{dataset.digest[:12]}...). Log it under another name or context."
                )
            if old is None:
                conn.execute(insert(run_inputs).values(**values))

    def list_inputs(self, run_id: str) -> list[DatasetInput]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(run_inputs).where(run_inputs.c.run_id == run_id).order_by(run_inputs.c.id)
            ).all()
        return [
            DatasetInput(r.name, r.context, r.digest, json.loads(r.schema), r.num_rows, r.source)
            for r in rows
        ]

    def add_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry], now: int) -> None:
        with self.db.write() as conn:
            self._require_run(conn, run_id)
            paths = [e.path for e in entries]
            conn.execute(
                delete(run_artifacts).where(
                    run_artifacts.c.run_id == run_id, run_artifacts.c.path.in_(paths)
                )
            )
            conn.execute(
                insert(run_artifacts),
                [
                    {
                        "run_id": run_id,
                        "path": e.path,
                        "sha256": e.sha256,
                        "size": e.size,
                        "created_at": now,
                    }
                    for e in entries
                ],
            )

    def list_artifacts(self, run_id: str) -> list[ArtifactEntry]:
        with self.db.read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(
                select(run_artifacts)
                .where(run_artifacts.c.run_id == run_id)
                .order_by(run_artifacts.c.path)
            ).all()
        return [ArtifactEntry(r.path, r.sha256, r.size) for r in rows]

    # -- reading runs --------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        with self.db.read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(_BY_ID, {"run_id": run_id}).all()
            return self._with_records(conn, rows)[0]

    def find_run_ids(self, prefix: str) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(select(runs.c.id).where(runs.c.id.like(f"{prefix}%")).limit(3))
                .scalars()
                .all()
            )

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None,
        order_by: Sequence[str],
        max_results: int,
        offset: int = 0,
    ) -> list[Run]:
        if not 1 <= max_results <= _MAX_RESULTS:
            raise InvalidInputError(
                f"Expected max_results between 1 and {_MAX_RESULTS}, got {max_results}",
                loc="max_results",
            )
        if offset < 0:
            raise InvalidInputError(f"Expected offset >= 0, got {offset}", loc="offset")
        query = _search_query(filter or "", tuple(order_by), experiment_ids is not None)
        bind: dict[str, Any] = {"limit": max_results, "offset": offset}
        if experiment_ids is not None:
            bind["experiment_ids"] = list(experiment_ids)
        with self.db.read() as conn:
            return self._with_records(conn, conn.execute(query, bind).all())

    def _with_records(self, conn: Connection, rows: Sequence[Any]) -> list[Run]:
        """Runs from rows of ``_RUN_COLUMNS``, with params, tags and latest metrics."""
        if not rows:
            return []
        ids = [r[0] for r in rows]
        extra: dict[str, tuple[dict[str, str], dict[str, str], dict[str, float]]] = {
            i: ({}, {}, {}) for i in ids
        }
        for slot, run_id, key, value in conn.execute(_TEXT_RECORDS, {"ids": ids}).all():
            extra[run_id][slot][key] = value
        for run_id, key, value in conn.execute(_LATEST_METRICS, {"ids": ids}).all():
            extra[run_id][2][key] = _float(value)
        result = []
        packages: dict[str, dict[str, str]] = {}  # runs of one environment share the text
        for row in rows:
            p, t, m = extra[row[0]]
            if row[10] not in packages:
                packages[row[10]] = json.loads(row[10])
            result.append(
                Run(
                    id=row[0],
                    experiment_id=row[1],
                    name=row[2],
                    status=RunStatus(row[3]),
                    start_time=row[4],
                    end_time=row[5],
                    parent_run_id=row[6],
                    git_commit=row[7],
                    git_dirty=row[8],
                    python_version=row[9],
                    packages=dict(packages[row[10]]),
                    host=row[11],
                    user=row[12],
                    source=row[13],
                    experiment=row[14],
                    params=dict(sorted(p.items())),
                    tags=dict(sorted(t.items())),
                    metrics=dict(sorted(m.items())),
                )
            )
        return result

    def count_runs(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)
