"""The tracking client: the explicit, thread-safe API every other entry point wraps.

>>> import tempfile, pathlib
>>> from modelyard.config import init_project, load_settings
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_project(root)
>>> client = TrackingClient(load_settings(root, environ={}))
>>> with client.start_run("churn", name="baseline") as run:
...     run.log_param("model", "hgb")
...     for step in range(3):
...         run.log_metric("loss", 1.0 / (step + 1))
>>> [r.metrics["loss"] for r in client.search_runs("churn", filter="params.model = 'hgb'")]
[0.3333333333333333]
>>> client.close()
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError, StorageError
from modelyard.store.artifacts import ArtifactStore, check_artifact_path
from modelyard.store.database import Database, open_database
from modelyard.tracking.buffer import MetricBuffer, Point
from modelyard.tracking.entities import (
    ArtifactEntry,
    DatasetInput,
    Experiment,
    Metric,
    Run,
    RunStatus,
)
from modelyard.tracking.environment import RunEnvironment, capture_environment, git_state
from modelyard.tracking.store import SQLTrackingStore
from modelyard.tracking.validation import (
    MAX_INT64,
    MIN_INT64,
    check_key,
    check_run_id,
    metric_value,
    param_value,
    step_value,
    timestamp_value,
)

__all__ = ["ActiveRun", "TrackingClient"]

_GIT_TTL_S = 5.0
_REAP_EVERY_S = 1.0
_CONTEXTS = ("training", "validation", "test", "evaluation", "inference", "other")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TrackingClient:
    """Experiments and runs in one project's metadata and artifact stores.

    Metric points are buffered and written in batches (see ``MetricBuffer``);
    everything else is written when it is called. One client may be shared by
    threads; each process should have its own (a forked child resets itself).

    Once ``log_metric`` returns, the point is the buffer's: a store that is briefly
    unavailable is retried with backoff (and logged once), not raised to the caller.
    At most ``max_buffered_points`` wait in memory; beyond that ``log_metric`` blocks
    for up to ``full_buffer_wait_s`` and then raises ``StorageError`` without keeping
    the point, so an error always means "not kept".
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        artifacts: ArtifactStore | None = None,
        max_buffered_points: int = 1_000_000,
        full_buffer_wait_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self._db = db or open_database(settings.db_url)
        self._store = SQLTrackingStore(self._db)
        self._artifacts = artifacts
        self._host = socket.gethostname()
        self._active: dict[str, int] = {}  # run id -> next automatic step
        self._known_runs: set[str] = set()  # runs seen in the store (never deleted)
        self._flush_wait_s = full_buffer_wait_s
        self._steps: dict[tuple[str, str], int] = {}
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._git: tuple[float, tuple[str | None, bool | None]] | None = None
        tracking = settings.tracking
        self._heartbeat_every_ms = max(10, int(tracking.heartbeat_timeout_s * 1000 / 4))
        self._last_heartbeat = _now_ms()
        self._buffer = MetricBuffer(
            self._store,
            max_points=tracking.flush_points,
            # wake often enough to send heartbeats too, whatever the flush interval
            interval_ms=min(tracking.flush_interval_ms, self._heartbeat_every_ms),
            on_tick=self._tick,
            capacity=max_buffered_points,
            full_wait_s=full_buffer_wait_s,
        )
        self._last_reap = -math.inf
        self._experiment_ids: dict[str, str] = {}
        self._closed = False
        ref = weakref.ref(self)
        self._atexit = lambda: _close_at_exit(ref)
        atexit.register(self._atexit)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- lifecycle -----------------------------------------------------------------

    def _tick(self) -> None:
        now = _now_ms()
        if now - self._last_heartbeat >= self._heartbeat_every_ms:
            self._last_heartbeat = now
            self._store.heartbeat(list(self._active), now)

    @property
    def db(self) -> Database:
        """The metadata database this client writes to."""
        return self._db

    @property
    def closed(self) -> bool:
        return self._closed

    def _require_open(self) -> None:
        if self._closed:
            raise StorageError(
                "This TrackingClient is closed; open a new one (or use modelyard.get_client())"
            )

    def flush(self) -> None:
        """Write every buffered metric point now.

        While the store is unavailable this waits (up to ``full_buffer_wait_s``) and
        then raises ``StorageError``; the points stay buffered and are written later.
        """
        self._buffer.flush()

    def close(self) -> None:
        """Flush, end this client's running runs as FINISHED, and release the store."""
        if self._closed:
            return
        self._end_all(RunStatus.FINISHED)
        self._buffer.stop()
        self._closed = True
        atexit.unregister(self._atexit)
        self._db.close()

    def _end_all(self, status: RunStatus) -> None:
        for run_id in list(self._active):
            self.end_run(run_id, status)

    def __enter__(self) -> TrackingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- experiments ---------------------------------------------------------------

    def create_experiment(self, name: str) -> Experiment:
        """The experiment called ``name``, created if it does not exist yet."""
        self._require_open()
        return self._store.get_or_create_experiment(name, _now_ms())

    def _experiment_id(self, name: str) -> str:
        # experiments are never renamed or deleted, so their ids can be remembered
        found = self._experiment_ids.get(name)
        if found is None:
            found = self._experiment_ids[name] = self._store.require_experiment(name).id
        return found

    def get_experiment(self, name: str) -> Experiment:
        self._require_open()
        return self._store.require_experiment(name)

    def list_experiments(self) -> list[Experiment]:
        self._require_open()
        return self._store.list_experiments()

    # -- runs --------------------------------------------------------------------

    def _environment(self) -> RunEnvironment:
        now = time.monotonic()
        if self._git is None or now - self._git[0] > _GIT_TTL_S:
            # two git calls cost ~10 ms: a loop starting many runs asks every few seconds,
            # a notebook that edits code between runs still sees a fresh dirty flag
            self._git = (now, git_state(self.settings.project_dir))
        return capture_environment(self._git[1])

    def start_run(
        self,
        experiment: str = "default",
        *,
        name: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> ActiveRun:
        """Start a run; use it as a context manager to end it (FAILED on an exception)."""
        self._require_open()
        exp = self.create_experiment(experiment)
        clean_tags = {check_key(k, "tag"): param_value(k, v) for k, v in (tags or {}).items()}
        now = _now_ms()
        run_name = name or time.strftime("run-%Y%m%d-%H%M%S", time.gmtime(now / 1000))
        if not isinstance(run_name, str) or len(run_name) > 255:
            raise InvalidInputError(
                f"Expected a run name of at most 255 characters, got {run_name!r}", loc="name"
            )
        run_id = self._store.create_run(
            exp.id,
            name=run_name,
            env=self._environment(),
            parent_run_id=parent_run_id,
            tags=clean_tags,
            now=now,
        )
        with self._lock:
            self._active[run_id] = 0
        self._buffer.start()
        return ActiveRun(self, run_id, exp.name, run_name)

    def resume_run(self, run_id: str) -> ActiveRun:
        """Reopen a finished, failed or killed run to log more to it."""
        self._require_open()
        run = self.get_run(run_id)
        self._store.set_status(run.id, RunStatus.RUNNING, _now_ms())
        last_steps = self._store.latest_steps(run.id)
        with self._lock:
            self._active[run.id] = 0
            # automatic steps go on after the ones already logged
            for key, step in last_steps.items():
                self._steps[(run.id, key)] = step + 1
        self._buffer.start()
        return ActiveRun(self, run.id, run.experiment, run.name)

    def end_run(self, run_id: str, status: RunStatus | str = RunStatus.FINISHED) -> None:
        """Flush the run's metrics and record how it ended."""
        self._require_open()
        try:
            final = RunStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in RunStatus if s is not RunStatus.RUNNING)
            raise InvalidInputError(
                f"Expected a status ({allowed}), got {status!r}", loc="status"
            ) from None
        self._buffer.flush()
        self._store.set_status(run_id, final, _now_ms())
        with self._lock:
            self._active.pop(run_id, None)

    def get_run(self, run_id: str) -> Run:
        """A run by id, or by a unique prefix of at least 6 characters."""
        self._require_open()
        self._reap()
        if len(run_id) < 32 and len(run_id) >= 6:
            matches = self._store.find_run_ids(run_id)
            if len(matches) == 1:
                run_id = matches[0]
            elif len(matches) > 1:
                raise InvalidInputError(
                    f"Run id prefix {run_id!r} matches several runs; give more characters",
                    loc="run_id",
                )
        return self._store.get_run(run_id)

    def _reap(self) -> None:
        # at most once a second: a loop of searches should not pay for it every time
        now = time.monotonic()
        if now - self._last_reap < _REAP_EVERY_S:
            return
        self._last_reap = now
        self._store.reap_dead_runs(
            now=_now_ms(),
            timeout_ms=int(self.settings.tracking.heartbeat_timeout_s * 1000),
            host=self._host,
        )

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        *,
        filter: str | None = None,
        order_by: Sequence[str] = (),
        max_results: int = 1000,
        offset: int = 0,
    ) -> list[Run]:
        """Runs matching ``filter``, ordered by ``order_by``; see ``modelyard.tracking.filters``.

        ``experiment`` is a name, a list of names, or None for every experiment.
        """
        self._require_open()
        self._reap()
        ids: list[str] | None = None
        if experiment is not None:
            names = [experiment] if isinstance(experiment, str) else list(experiment)
            ids = [self._experiment_id(n) for n in names]
        if isinstance(order_by, str):
            order_by = [order_by]
        return self._store.search_runs(
            ids, filter=filter, order_by=order_by, max_results=max_results, offset=offset
        )

    # -- params, tags, metrics ----------------------------------------------------------

    def log_param(self, run_id: str, key: str, value: object) -> None:
        self.log_params(run_id, {key: value})

    def log_params(self, run_id: str, values: Mapping[str, object]) -> None:
        """Log params once each; a different value for a logged key is a ConflictError."""
        self._require_open()
        clean = {check_key(k, "param"): param_value(k, v) for k, v in values.items()}
        self._store.log_params(run_id, clean)

    def set_tag(self, run_id: str, key: str, value: object) -> None:
        self.set_tags(run_id, {key: value})

    def set_tags(self, run_id: str, values: Mapping[str, object]) -> None:
        """Set tags; unlike params, a tag may be changed."""
        self._require_open()
        clean = {check_key(k, "tag"): param_value(k, v) for k, v in values.items()}
        self._store.set_tags(run_id, clean)

    def _require_run(self, run_id: str) -> None:
        """Refuse a point for a run that does not exist before it is buffered."""
        if run_id in self._active or run_id in self._known_runs:
            return
        check_run_id(run_id)
        if not self._store.run_exists(run_id):
            raise NotFoundError(f"No run with id {run_id!r}. List runs with `modelyard runs list`.")
        self._known_runs.add(run_id)

    def _point(
        self, run_id: str, key: str, value: object, step: int | None, timestamp: int | None
    ) -> Point:
        self._require_run(run_id)
        if key not in self._keys:
            self._keys.add(check_key(key, "metric"))
        number = metric_value(key, value)
        if timestamp is None:
            timestamp = _now_ms()
        elif type(timestamp) is not int or not 0 <= timestamp <= MAX_INT64:
            timestamp = timestamp_value(key, timestamp)
        if step is None:
            # no step given: each key counts its own points, 0, 1, 2, ... (last: a refused
            # point takes no step)
            ident = (run_id, key)
            with self._lock:
                step = self._steps.get(ident, 0)
                self._steps[ident] = step + 1
        elif type(step) is not int or not MIN_INT64 <= step <= MAX_INT64:
            step = step_value(key, step)
        return (run_id, key, number, step, timestamp)

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Buffer one point; it reaches the store within the flush interval.

        Bad input (a key, a value that is not a number or does not fit a 64-bit float,
        a step or timestamp outside 64 bits) is an ``InvalidInputError``, a run that
        does not exist a ``NotFoundError``: raised here, and the point is not kept.
        Once this returns the buffer owns the point (see the class's docstring).
        """
        self._require_open()
        self._buffer.add(self._point(run_id, key, value, step, timestamp))

    def log_metrics(
        self,
        run_id: str,
        values: Mapping[str, float],
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self._require_open()
        ts = _now_ms() if timestamp is None else timestamp
        self._buffer.extend([self._point(run_id, k, v, step, ts) for k, v in values.items()])

    def log_batch(self, run_id: str, points: Iterable[tuple[str, float, int]]) -> None:
        """Buffer many ``(key, value, step)`` points at once."""
        self._require_open()
        ts = _now_ms()
        self._buffer.extend([self._point(run_id, k, v, s, ts) for k, v, s in points])

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point logged for ``key``, in step order (buffered points are flushed first)."""
        self._require_open()
        self._buffer.flush()
        return self._store.metric_history(run_id, key)

    # -- inputs and artifacts ----------------------------------------------------------

    def log_input(
        self,
        run_id: str,
        data: Any,
        name: str,
        context: str = "training",
        *,
        source: str | None = None,
    ) -> DatasetInput:
        """Record a data set the run read: a digest of all of it, its schema and row count."""
        self._require_open()
        from modelyard.tracking.digest import digest_input

        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidInputError(f"Expected a data set name, got {name!r}", loc="name")
        if context not in _CONTEXTS:
            raise InvalidInputError(
                f"Expected a context ({', '.join(_CONTEXTS)}), got {context!r}", loc="context"
            )
        found = digest_input(data)
        dataset = DatasetInput(
            name=name,
            context=context,
            digest=found.digest,
            schema=found.schema,
            num_rows=found.num_rows,
            source=source or found.source,
        )
        self._store.log_input(run_id, dataset, _now_ms())
        return dataset

    def list_inputs(self, run_id: str) -> list[DatasetInput]:
        self._require_open()
        return self._store.list_inputs(run_id)

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = ArtifactStore(self.settings.artifacts)
        return self._artifacts

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Store one file under the run as ``artifact_path`` (default: its file name)."""
        self._require_open()
        source = Path(local_path)
        if not source.is_file():
            raise NotFoundError(f"No file at {source}; log a folder with log_artifacts")
        path = check_artifact_path(artifact_path or source.name)
        ref = self.artifacts.put_file(source)
        entry = ArtifactEntry(path, ref.sha256, ref.size)
        self._store.add_artifacts(run_id, [entry], _now_ms())
        return entry

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactEntry]:
        """Store every file under a folder, keeping relative paths below ``artifact_path``."""
        self._require_open()
        folder = Path(local_dir)
        if not folder.is_dir():
            raise NotFoundError(f"No folder at {folder}; log a single file with log_artifact")
        prefix = check_artifact_path(artifact_path) + "/" if artifact_path else ""
        entries = []
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            ref = self.artifacts.put_file(file)
            rel = check_artifact_path(prefix + file.relative_to(folder).as_posix())
            entries.append(ArtifactEntry(rel, ref.sha256, ref.size))
        if entries:
            self._store.add_artifacts(run_id, entries, _now_ms())
        return entries

    def list_artifacts(self, run_id: str) -> list[ArtifactEntry]:
        self._require_open()
        return self._store.list_artifacts(run_id)

    def download_artifacts(
        self, run_id: str, dest: str | os.PathLike[str], artifact_path: str | None = None
    ) -> Path:
        """Copy the run's artifacts (or those under ``artifact_path``) to ``dest``, verified."""
        self._require_open()
        target = Path(dest)
        wanted = check_artifact_path(artifact_path) if artifact_path else None
        entries = [
            e
            for e in self.list_artifacts(run_id)
            if wanted is None or e.path == wanted or e.path.startswith(wanted + "/")
        ]
        if not entries:
            raise NotFoundError(f"Run {run_id} has no artifact at {artifact_path!r}")
        for entry in entries:
            self.artifacts.get_file(entry.sha256, target / entry.path, name=entry.path)
        return target / wanted if wanted else target

    def load_artifact_bytes(self, run_id: str, artifact_path: str) -> bytes:
        self._require_open()
        path = check_artifact_path(artifact_path)
        for entry in self.list_artifacts(run_id):
            if entry.path == path:
                return self.artifacts.get_bytes(entry.sha256, name=entry.path)
        raise NotFoundError(f"Run {run_id} has no artifact at {artifact_path!r}")


class ActiveRun:
    """A run being logged to; ``with`` ends it FINISHED, or FAILED on an exception."""

    def __init__(self, client: TrackingClient, run_id: str, experiment: str, name: str) -> None:
        self.client = client
        self.id = run_id
        self.experiment = experiment
        self.name = name

    def __repr__(self) -> str:
        return f"ActiveRun(id={self.id!r}, experiment={self.experiment!r}, name={self.name!r})"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
        self.client.end_run(self.id, status)

    def end(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        self.client.end_run(self.id, status)

    def log_param(self, key: str, value: object) -> None:
        self.client.log_params(self.id, {key: value})

    def log_params(self, values: Mapping[str, object]) -> None:
        self.client.log_params(self.id, values)

    def set_tag(self, key: str, value: object) -> None:
        self.client.set_tags(self.id, {key: value})

    def set_tags(self, values: Mapping[str, object]) -> None:
        self.client.set_tags(self.id, values)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        self.client.log_metric(self.id, key, value, step, timestamp)

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        self.client.log_metrics(self.id, values, step)

    def log_input(
        self, data: Any, name: str, context: str = "training", *, source: str | None = None
    ) -> DatasetInput:
        return self.client.log_input(self.id, data, name, context, source=source)

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactEntry:
        return self.client.log_artifact(self.id, local_path, artifact_path)

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactEntry]:
        return self.client.log_artifacts(self.id, local_dir, artifact_path)

    def info(self) -> Run:
        """The run as stored now (buffered metrics flushed first)."""
        self.client.flush()
        return self.client.get_run(self.id)


def _close_at_exit(ref: weakref.ref[TrackingClient]) -> None:
    client = ref()
    if client is None or client._closed:
        return
    # an uncaught exception on the way out means the work did not finish; Ctrl-C is a kill
    last = getattr(sys, "last_value", None)
    if last is None:
        status = RunStatus.FINISHED
    elif isinstance(last, KeyboardInterrupt):
        status = RunStatus.KILLED
    else:
        status = RunStatus.FAILED
    try:
        client._end_all(status)
        client.close()
    except Exception as exc:  # never mask the exit; say what was lost
        print(f"modelyard: could not flush at exit: {exc}", file=sys.stderr)


def _after_fork(ref: weakref.ref[TrackingClient]) -> None:
    client = ref()
    if client is None:
        return
    client._buffer.reset_after_fork()
    client._active = {}
    client._lock = threading.Lock()
    client._db.engine.dispose(close=False)  # the parent's connections are not ours
