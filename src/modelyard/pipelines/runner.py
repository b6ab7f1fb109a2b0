"""Running a pipeline: :func:`run_pipeline`, the step cache, resume and events.

A pipeline run is a tracked run (experiment: the pipeline's name unless given) with a
``pipeline_runs`` row; each step is a child run with a ``pipeline_steps`` row. Steps are
scheduled as their dependencies finish, independent ones in parallel. For each step the
runner computes its cache key from the digests of its inputs; a key answered by an earlier
run whose output blobs are all intact makes the step ``cached`` (a child run pointing at
the run it reuses, ``cached_from``); otherwise the step runs on the executor. The runner
(this process) is the only writer of the pipeline tables: one transaction per step
transition, and the ``step_cache`` row is written in the transaction that marks a step
completed, after its outputs are stored. A failed step fails its run, its dependents are
``skipped``, independent branches finish, then :class:`StepFailedError` is raised.

``resume=RUN_ID`` runs with RUN's parameters (overrides allowed) and reuses RUN's finished
steps whose key is unchanged, so only the failed step and what follows run again; it
works after the whole process was killed (a ``running`` run whose process is gone is
recorded failed first).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from modelyard.config import Settings, load_settings
from modelyard.errors import (
    InvalidInputError,
    NotFoundError,
    StepFailedError,
)
from modelyard.models.flavors.base import LoadOptions
from modelyard.pipelines.cache import CacheKey, cache_key
from modelyard.pipelines.context import keying
from modelyard.pipelines.definition import Pipeline
from modelyard.pipelines.executors import (
    Executor,
    ProcessExecutor,
    StepOutcome,
    StepTask,
    client_for,
    forget_in_workers,
    make_executor,
    model_load_options,
    register_live_function,
)
from modelyard.pipelines.graph import Graph, StepNode
from modelyard.pipelines.materializers import (
    StoredOutput,
    get_materializer,
    load_output,
    materializer_for,
)
from modelyard.pipelines.ray_executor import RayExecutor
from modelyard.pipelines.records import (
    DONE,
    CachedStep,
    InputRow,
    NewRun,
    OutputRow,
    PipelineRecords,
    PipelineRunRow,
    now_ms,
    param_text,
)
from modelyard.store.artifacts import ArtifactStore
from modelyard.tracking.environment import RunEnvironment, capture_environment, git_state

__all__ = [
    "PipelineRun",
    "StepEvent",
    "StepResult",
    "load_pipeline_run",
    "run_pipeline",
]

log = logging.getLogger(__name__)

_GIT_TTL_S = 5.0
_git_cache: dict[Path, tuple[float, tuple[str | None, bool | None]]] = {}


@dataclass(frozen=True)
class StepEvent:
    """A step changed state: ``running``, ``completed``, ``cached``, ``failed``, ``skipped``."""

    step: str
    status: str
    run_id: str
    duration_s: float | None
    message: str | None


@dataclass(frozen=True)
class StepResult:
    """How one step of a pipeline run ended."""

    name: str
    run_id: str
    status: str  # completed | cached | failed | skipped
    cached_from: str | None
    duration_s: float | None
    cache_key: str | None
    outputs: Mapping[str, StoredOutput]
    error: str | None


@dataclass
class PipelineRun:
    """A finished pipeline run: its status, parameters and each step's result."""

    run_id: str
    pipeline: str
    status: str  # completed | failed | running
    params: Mapping[str, Any]
    steps: Mapping[str, StepResult]
    resumed_from: str | None
    _artifacts: ArtifactStore | None = field(default=None, repr=False, compare=False)
    _model_options: LoadOptions | None = field(default=None, repr=False, compare=False)

    def load(self, step: str, output: str | None = None) -> Any:
        """The value of a step's output, read back from the artifact store and verified."""
        found = self.steps.get(step)
        if found is None:
            raise NotFoundError(
                f"Pipeline run {self.run_id} has no step {step!r}; its steps: "
                f"{', '.join(self.steps) or 'none'}"
            )
        if not found.outputs:
            raise NotFoundError(
                f"Step {step!r} of pipeline run {self.run_id} has no stored outputs "
                f"(status {found.status})"
            )
        if output is None:
            if len(found.outputs) != 1:
                raise InvalidInputError(
                    f"Step {step!r} has outputs {', '.join(found.outputs)}; say which one: "
                    f"run.load({step!r}, 'NAME')",
                    loc="output",
                )
            output = next(iter(found.outputs))
        stored = found.outputs.get(output)
        if stored is None:
            raise NotFoundError(
                f"Step {step!r} has no output {output!r}; its outputs: {', '.join(found.outputs)}"
            )
        if self._artifacts is None:
            raise NotFoundError("This PipelineRun was made without an artifact store to read from")
        return load_output(
            stored,
            self._artifacts,
            where=f"step {step!r} output {output!r}",
            model_options=self._model_options,
        )


def _stored(row: OutputRow) -> StoredOutput:
    return StoredOutput(row.digest, row.type, row.materializer, dict(row.manifest), row.size)


def _row(name: str, stored: StoredOutput) -> OutputRow:
    return OutputRow(
        name, stored.digest, stored.type, stored.materializer, dict(stored.manifest), stored.size
    )


def _environment(project_dir: Path) -> RunEnvironment:
    now = time.monotonic()
    cached = _git_cache.get(project_dir)
    if cached is None or now - cached[0] > _GIT_TTL_S:
        cached = _git_cache[project_dir] = (now, git_state(project_dir))
    return capture_environment(cached[1])


def _jsonable(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _in_project(value: Any, project_dir: Path) -> Any:
    """Path parameters as the step reads them: relative ones from the project folder (where
    the cache key digested them), whatever the worker's working directory."""
    if isinstance(value, PurePath):
        return value if Path(value).is_absolute() else project_dir / value
    if isinstance(value, list | tuple):
        return type(value)(_in_project(v, project_dir) for v in value)
    if isinstance(value, dict):
        return {k: _in_project(v, project_dir) for k, v in value.items()}
    return value


def _module_file(fn: Callable[..., Any]) -> str | None:
    module = getattr(fn, "__module__", None)
    found = getattr(sys.modules.get(module or ""), "__file__", None)
    return None if found is None else str(found)


@dataclass
class _State:
    """One pipeline run in progress (the runner's bookkeeping)."""

    run_id: str
    graph: Graph
    settings: Settings
    records: PipelineRecords
    store: ArtifactStore
    experiment: str
    experiment_id: str
    env: RunEnvironment
    use_cache: bool
    prior: dict[str, Any]  # node -> the resumed run's StepRow
    on_event: Callable[[StepEvent], None] | None
    results: dict[str, StepResult] = field(default_factory=dict)
    keys: dict[str, CacheKey] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    running_ids: dict[str, str] = field(default_factory=dict)  # node -> its run, while it runs
    first_failure: StepResult | None = None
    cached: list[CachedStep] = field(default_factory=list)  # not yet written (see flush)

    def flush_cached(self) -> None:
        """Write the steps answered from the cache so far (one transaction), then say so."""
        if not self.cached:
            return
        batch, self.cached = self.cached, []
        self.records.steps_cached(batch, pipeline_run_id=self.run_id)
        for c in batch:
            self.emit(StepEvent(c.step, "cached", c.run.run_id, 0.0, f"from run {c.cached_from}"))

    def emit(self, event: StepEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a progress display's bug must not lose the run's records
            log.exception("on_event raised for %s %s; the run goes on", event.step, event.status)


def _new_run(state: _State, node: StepNode, key: CacheKey | None) -> NewRun:
    tags = {
        "modelyard.pipeline": state.graph.pipeline,
        "modelyard.pipeline_run": state.run_id,
        "modelyard.step": node.name,
    }
    if key is not None:
        tags["modelyard.cache_parts"] = key.parts_json()
    return NewRun(
        run_id=uuid.uuid4().hex,
        experiment_id=state.experiment_id,
        name=node.name,
        parent_run_id=state.run_id,
        env=state.env,
        params={k: param_text(v) for k, v in node.params.items()},
        tags=tags,
    )


def _file_inputs(node: StepNode, key: CacheKey) -> list[InputRow]:
    rows = []
    parts = key.parts.get("params", {}) if isinstance(key.parts, Mapping) else {}
    for name, value in node.params.items():
        if not isinstance(value, PurePath):
            continue
        digest = _path_digest(parts.get(name))
        if digest is None:  # a path that does not exist (yet): nothing was read
            continue
        rows.append(InputRow(name, digest, "file", None, str(value)))
    return rows


def _path_digest(part: Any) -> str | None:
    """The content digest the cache key's parts hold for a Path parameter, if any."""
    if isinstance(part, str) and len(part) == 64:
        return part
    if isinstance(part, Mapping):
        for field_name in ("digest", "sha256"):
            found = part.get(field_name)
            if isinstance(found, str) and len(found) == 64:
                return found
    return None


def _readable(outputs: Mapping[str, OutputRow], node: StepNode) -> bool:
    """The recorded outputs are the node's, by materializers this process can read (the
    same name and version: an output of an older materializer version is made again)."""
    if set(outputs) != {o.name for o in node.outputs}:
        return False
    for row in outputs.values():
        try:
            m = get_materializer(row.materializer)
        except NotFoundError:
            return False
        if row.manifest.get("version") != m.version:
            return False
    return True


def _intact(state: _State, outputs: Mapping[str, OutputRow]) -> bool:
    """Every blob of the outputs is in the store with its bytes (a corrupted one is
    deleted, so that running the step again restores it)."""
    for row in outputs.values():
        files = row.manifest.get("files", {})
        if not isinstance(files, Mapping):
            return False
        for sha in files.values():
            if not state.store.verify(str(sha), remove_corrupted=True):
                return False
    return True


def _reusable(
    state: _State, node: StepNode, key: CacheKey
) -> tuple[str, dict[str, OutputRow]] | None:
    """``(the producing step run, its outputs)`` this node may reuse, or None."""
    prior = state.prior.get(node.name)
    if prior is not None and prior.status in DONE and prior.cache_key == key.value:
        source = prior.cached_from or prior.run_id
        outputs = state.records.outputs_of([prior.run_id])[prior.run_id]
        if _readable(outputs, node) and _intact(state, outputs):
            return source, outputs
    if not (state.use_cache and node.step.cache):
        return None
    entry = state.records.cache_entry(key.value)
    if entry is None or not _readable(entry.outputs, node):
        return None
    if _intact(state, entry.outputs):
        return entry.step_run_id, entry.outputs
    # a blob is gone or corrupted: this entry can answer nothing, the step runs again
    state.records.forget_cache(key.value, entry.step_run_id)
    log.warning(
        "step %r: the cached outputs of run %s are missing or corrupted; running it again",
        node.name,
        entry.step_run_id,
    )
    return None


def _skip(state: _State, names: list[str], reason_of: Mapping[str, str]) -> None:
    if not names:
        return
    now = now_ms()
    new = []
    for name in names:
        node = state.graph.nodes[name]
        run = _new_run(state, node, None)
        new.append(
            (
                run,
                name,
                node.step.function_id,
                node.step.source_hash(state.settings.project_dir),
                reason_of[name],
            )
        )
        state.results[name] = StepResult(name, run.run_id, "skipped", None, None, None, {}, None)
    state.records.steps_skipped(new, pipeline_run_id=state.run_id, now=now)
    for run, name, *_rest, reason in new:
        state.emit(StepEvent(name, "skipped", run.run_id, None, reason))


def _fail(
    state: _State, name: str, run_id: str, key: str | None, error: str, dur: float | None
) -> None:
    result = StepResult(name, run_id, "failed", None, dur, key, {}, error)
    state.results[name] = result
    if state.first_failure is None:
        state.first_failure = result
    state.emit(StepEvent(name, "failed", run_id, dur, error))


def _record_outcome(state: _State, node: StepNode, outcome: StepOutcome) -> None:
    key = state.keys[node.name]
    state.running_ids.pop(node.name, None)
    started = state.started.pop(node.name, outcome.started_at)
    now = now_ms()
    duration = (now - started) / 1000
    recorded = [
        InputRow(r.name, r.digest, r.kind, None, r.description) for r in outcome.recorded_inputs
    ]
    if outcome.ok and set(outcome.outputs) == {o.name for o in node.outputs}:
        state.records.step_completed(
            outcome.run_id,
            cache_key=key.value,
            write_cache=node.step.cache,
            started_at=started,
            outputs=[_row(n, s) for n, s in outcome.outputs.items()],
            inputs=recorded,
            logs_sha256=outcome.logs_sha256,
            logs_size=outcome.logs_size,
            now=now,
        )
        state.results[node.name] = StepResult(
            node.name,
            outcome.run_id,
            "completed",
            None,
            duration,
            key.value,
            dict(outcome.outputs),
            None,
        )
        state.emit(StepEvent(node.name, "completed", outcome.run_id, duration, None))
        return
    error = outcome.error or (
        f"the step returned outputs {sorted(outcome.outputs)}, expected "
        f"{sorted(o.name for o in node.outputs)}"
    )
    state.records.step_failed(
        outcome.run_id,
        cache_key=key.value,
        started_at=started,
        error=error,
        inputs=recorded,
        logs_sha256=outcome.logs_sha256,
        logs_size=outcome.logs_size,
        now=now,
    )
    _fail(state, node.name, outcome.run_id, key.value, error, duration)


def _crashed(state: _State, node: StepNode, run_id: str, exc: BaseException) -> None:
    """The executor could not run the step (a worker died, the store failed)."""
    key = state.keys.get(node.name)
    state.running_ids.pop(node.name, None)
    started = state.started.pop(node.name, now_ms())
    now = now_ms()
    kind = type(exc).__name__
    if kind == "BrokenProcessPool":
        error = (
            "the worker process running the step died (killed, out of memory or a crash in "
            "native code)"
        )
    else:
        error = f"{kind}: {' '.join(str(exc).split())}"
    state.records.step_failed(
        run_id,
        cache_key=None if key is None else key.value,
        started_at=started,
        error=error,
        inputs=[],
        logs_sha256=None,
        now=now,
    )
    _fail(
        state, node.name, run_id, None if key is None else key.value, error, (now - started) / 1000
    )


def _start(
    state: _State, node: StepNode, executor: Executor
) -> tuple[Future[StepOutcome], str] | None:
    """Cache the node or submit it; the future and run id when it was submitted."""
    inputs: dict[str, StoredOutput] = {}
    rows: list[InputRow] = []
    for arg, ref in node.inputs.items():
        upstream = state.results[ref.node]
        stored = upstream.outputs[ref.output]
        inputs[arg] = stored
        rows.append(
            InputRow(arg, stored.digest, "output", upstream.run_id, f"{ref.node}.{ref.output}")
        )
    project = state.settings.project_dir
    try:
        with keying(state.settings):  # a fingerprint hook reads this run's stores
            key = cache_key(node, {a: s.digest for a, s in inputs.items()}, project_dir=project)
        rows.extend(_file_inputs(node, key))
        source_hash = str(key.parts.get("source") or node.step.source_hash(project))
    except Exception as exc:  # a fingerprint hook that raised, an unreadable Path parameter
        error = f"computing its cache key: {type(exc).__name__}: {' '.join(str(exc).split())}"
        run = _new_run(state, node, None)
        now = now_ms()
        state.records.step_running(
            run,
            pipeline_run_id=state.run_id,
            step=node.name,
            function=node.step.function_id,
            source_hash="",
            cache_key=None,
            inputs=[],
            now=now,
        )
        state.records.step_failed(
            run.run_id,
            cache_key=None,
            started_at=now,
            error=error,
            inputs=[],
            logs_sha256=None,
            now=now,
        )
        _fail(state, node.name, run.run_id, None, error, 0.0)
        return None
    state.keys[node.name] = key
    run = _new_run(state, node, key)
    reuse = _reusable(state, node, key)
    if reuse is not None:
        source, outputs = reuse
        state.cached.append(
            CachedStep(
                run=run,
                step=node.name,
                function=node.step.function_id,
                source_hash=source_hash,
                cache_key=key.value,
                cached_from=source,
                inputs=rows,
                outputs=list(outputs.values()),
                at=now_ms(),
            )
        )
        state.results[node.name] = StepResult(
            node.name,
            run.run_id,
            "cached",
            source,
            0.0,
            key.value,
            {n: _stored(r) for n, r in outputs.items()},
            None,
        )
        return None
    state.flush_cached()  # records in the order things happened
    now = now_ms()
    state.records.step_running(
        run,
        pipeline_run_id=state.run_id,
        step=node.name,
        function=node.step.function_id,
        source_hash=source_hash,
        cache_key=key.value,
        inputs=rows,
        now=now,
    )
    state.started[node.name] = now
    state.running_ids[node.name] = run.run_id
    task = StepTask(
        step=node.name,
        function=node.step.function_id,
        module_file=_module_file(node.step.fn),
        project_dir=str(project),
        params={k: _in_project(v, project) for k, v in node.params.items()},
        inputs=inputs,
        outputs=tuple(node.outputs),
        run_id=run.run_id,
        pipeline_run_id=state.run_id,
        experiment=state.experiment,
        settings=state.settings,
        resources=node.step.resources,
    )
    state.emit(StepEvent(node.name, "running", run.run_id, None, None))
    try:
        future = executor.submit(task)
    except Exception as exc:
        _crashed(state, node, run.run_id, exc)
        return None
    return future, run.run_id


def _schedule(state: _State, executor: Executor) -> None:
    graph = state.graph
    position = {name: i for i, name in enumerate(graph.order())}
    waiting = {name: len(graph.upstream(name)) for name in graph.nodes}
    downstream: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for name in graph.nodes:
        for up in graph.upstream(name):
            downstream[up].append(name)
    ready = [position[n] for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = graph.order()
    running: dict[Future[StepOutcome], tuple[str, str]] = {}

    def finished(name: str) -> None:
        for down in downstream[name]:
            waiting[down] -= 1
            if waiting[down] == 0:
                heapq.heappush(ready, position[down])

    while ready or running:
        skipped: list[str] = []
        reasons: dict[str, str] = {}
        while ready:
            name = names[heapq.heappop(ready)]
            bad = [
                up
                for up in sorted(graph.upstream(name))
                if state.results[up].status in ("failed", "skipped")
            ]
            if bad:
                skipped.append(name)
                first = state.results[bad[0]]
                reasons[name] = f"skipped: step {bad[0]!r} {first.status}"
                continue
            if skipped:  # record skips in order before anything else happens
                _skip(state, skipped, reasons)
                for s in skipped:
                    finished(s)
                skipped = []
            started = _start(state, graph.nodes[name], executor)
            if started is None:
                finished(name)
            else:
                running[started[0]] = (name, started[1])
        if skipped:
            _skip(state, skipped, reasons)
            for s in skipped:
                finished(s)
            continue
        if not running:
            continue
        state.flush_cached()
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        broken = False
        for future in done:
            name, run_id = running.pop(future)
            node = graph.nodes[name]
            try:
                outcome = future.result()
            except Exception as exc:
                broken = broken or type(exc).__name__ == "BrokenProcessPool"
                _crashed(state, node, run_id, exc)
            else:
                _record_outcome(state, node, outcome)
            finished(name)
        if broken and isinstance(executor, ProcessExecutor) and not running:
            executor.restart()
    state.flush_cached()


class _Heartbeat:
    """Marks the pipeline run and its running steps alive every ``every`` seconds, from a
    thread, so that a long step (an inline one too) is never taken for a dead one."""

    def __init__(self, records: PipelineRecords, run_id: str, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(records, run_id, every),
            name="modelyard-pipeline-heartbeat",
            daemon=True,
        )

    def _run(self, records: PipelineRecords, run_id: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                records.heartbeat(run_id, now_ms())
            except Exception as exc:  # the next beat may pass; a dead store fails the run itself
                log.warning("pipeline run %s: heartbeat failed: %s", run_id, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _abort(state: _State, exc: BaseException) -> None:
    """The runner itself stopped (Ctrl-C, a store failure): record what is unfinished."""
    now = now_ms()
    with contextlib.suppress(Exception):
        state.flush_cached()
    reason = f"interrupted: {type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(": ")
    for name, run_id in list(state.running_ids.items()):
        key = state.keys.get(name)
        with contextlib.suppress(Exception):
            state.records.step_failed(
                run_id,
                cache_key=None if key is None else key.value,
                started_at=state.started.get(name, now),
                error=reason,
                inputs=[],
                logs_sha256=None,
                now=now,
            )
    with contextlib.suppress(Exception):
        state.records.finish_pipeline(state.run_id, status="failed", now=now)


def _check_shared(settings: Settings, executor: str = "local") -> None:
    """Worker processes must reach the same stores: no in-memory ones."""
    db = settings.db_url
    if db.startswith("sqlite") and (
        db.rstrip("/") in ("sqlite:", "sqlite://") or ":memory:" in db or "mode=memory" in db
    ):
        raise InvalidInputError(
            "Expected a metadata store that worker processes can open (a file or a server) for "
            f"the {executor} executor, got the in-memory {db!r}; use executor='inline' or a file",
            loc="db_url",
        )
    if settings.artifacts.startswith("memory://"):
        raise InvalidInputError(
            "Expected an artifact store that worker processes can reach (a folder or an object "
            f"store) for the {executor} executor, got {settings.artifacts!r}; use "
            "executor='inline' or a folder",
            loc="artifacts",
        )


def _preload(graph: Graph) -> None:
    """Let the materializers of the declared outputs import what they need before the
    pool forks, so that each worker does not import it again (seconds for skops)."""
    for node in graph.nodes.values():
        for spec in node.outputs:
            with contextlib.suppress(Exception):  # a preload is only ever a speed-up
                preload = getattr(materializer_for(spec.type), "preload", None)
                if preload is not None:
                    preload(spec.type)


#: tags the runner writes itself on a pipeline's run
_RUNNER_TAGS = ("modelyard.pipeline", "modelyard.executor", "modelyard.resumed_from")


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's tags for the pipeline's run: text keys (<= 250) and values, none of ours."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInputError(
            f"Expected a mapping of text to text, got {type(tags).__name__}", loc="tags"
        )
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > 250:
            raise InvalidInputError(
                f"Expected a tag name of 1 to 250 characters, got {key!r}"[:300], loc="tags"
            )
        if key in _RUNNER_TAGS:
            raise InvalidInputError(
                f"Expected a tag other than the runner's own ({', '.join(_RUNNER_TAGS)}), "
                f"got {key!r}",
                loc=f"tags.{key}",
            )
        if not isinstance(value, str):
            raise InvalidInputError(
                f"Expected a text value, got {type(value).__name__}", loc=f"tags.{key}"
            )
    return dict(tags)


def run_pipeline(
    pipeline: Pipeline,
    params: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    project: str | Path | None = None,
    cache: bool = True,
    resume: str | None = None,
    executor: str | Executor | None = None,
    max_workers: int | None = None,
    experiment: str | None = None,
    on_event: Callable[[StepEvent], None] | None = None,
    tags: Mapping[str, str] | None = None,
) -> PipelineRun:
    """Run ``pipeline`` with ``params``; the finished :class:`PipelineRun`.

    ``cache=False`` runs every step (their results still answer later runs);
    ``resume=RUN_ID`` reuses that run's parameters (``params`` override them) and its
    finished steps whose key is unchanged. ``executor`` is ``"local"`` (a process pool of
    ``max_workers``), ``"inline"``, ``"ray"`` (Ray tasks) or an :class:`Executor`; by
    default the project's ``pipelines.executor``, else its ``engine``. ``on_event`` is
    called with each :class:`StepEvent`.
    ``tags`` are recorded on the pipeline's run beside the runner's own (a caller finds
    its runs by them: ``modelyard agent`` tags each run of an action with its id).
    Raises :class:`StepFailedError` (after everything is recorded) when a step failed.
    """
    extra_tags = _check_tags(tags)
    if settings is None:
        settings = load_settings(project)
    client = client_for(settings)
    records = PipelineRecords(client.db, heartbeat_timeout_s=settings.tracking.heartbeat_timeout_s)
    forget_in_workers(client.db)
    records.reap_dead()
    prior_steps: dict[str, Any] = {}
    resumed_from = None
    if resume is not None:
        prior = records.pipeline_run(resume)
        if prior.pipeline != pipeline.name:
            raise InvalidInputError(
                f"Run {prior.run_id} is a run of pipeline {prior.pipeline!r}, not "
                f"{pipeline.name!r}; resume it with its own pipeline",
                loc="resume",
            )
        if prior.status == "running":
            raise InvalidInputError(
                f"Pipeline run {prior.run_id} is still running (pid alive); wait for it or "
                "stop it before resuming",
                loc="resume",
            )
        resumed_from = prior.run_id
        merged = {k: v for k, v in prior.params.items() if k in pipeline.params}
        merged.update(params or {})
        params = merged
        prior_steps = {s.step: s for s in records.steps_of(prior.run_id)}
    graph = pipeline.build(params)
    chosen = make_executor(
        settings.pipeline_executor if executor is None else executor,
        settings.pipelines.max_workers if max_workers is None else max_workers,
    )
    if isinstance(chosen, RayExecutor):
        _check_shared(settings, chosen.name)
        chosen.connect(settings)
    if isinstance(chosen, ProcessExecutor):
        _check_shared(settings, chosen.name)
        chosen.before_fork = lambda: _preload(graph)
    experiment_name = experiment or pipeline.name
    run_id = uuid.uuid4().hex
    env = _environment(settings.project_dir)
    experiment_id = client.create_experiment(experiment_name).id
    started = now_ms()
    tags = {**extra_tags, "modelyard.pipeline": pipeline.name, "modelyard.executor": chosen.name}
    if resumed_from is not None:
        tags["modelyard.resumed_from"] = resumed_from
    records.start_pipeline(
        NewRun(
            run_id=run_id,
            experiment_id=experiment_id,
            name=time.strftime(f"{pipeline.name}-%Y%m%d-%H%M%S", time.gmtime(started / 1000)),
            parent_run_id=None,
            env=env,
            params={k: param_text(v) for k, v in graph.params.items()},
            tags=tags,
        ),
        pipeline=pipeline.name,
        module=pipeline.function_id,
        params_json=json.dumps(_jsonable(dict(graph.params)), sort_keys=True),
        executor=chosen.name,
        resumed_from=resumed_from,
        now=started,
    )
    state = _State(
        run_id=run_id,
        graph=graph,
        settings=settings,
        records=records,
        store=client.artifacts,
        experiment=experiment_name,
        experiment_id=experiment_id,
        env=env,
        use_cache=cache,
        prior=prior_steps,
        on_event=on_event,
    )
    for node in graph.nodes.values():  # before the pool forks: its workers inherit them
        register_live_function(node.step.function_id, node.step.fn)
    every = max(0.5, settings.tracking.heartbeat_timeout_s / 4)
    try:
        with _Heartbeat(records, run_id, every):
            _schedule(state, chosen)
    except BaseException as exc:
        if isinstance(chosen, ProcessExecutor | RayExecutor):
            chosen.terminate()  # Ctrl-C or a store failure: do not wait for running steps
        _abort(state, exc)
        raise
    finally:
        if chosen is not executor:  # ours: made here from a name
            chosen.shutdown()
    status = "failed" if state.first_failure is not None else "completed"
    records.finish_pipeline(run_id, status=status, now=now_ms())
    result = PipelineRun(
        run_id=run_id,
        pipeline=pipeline.name,
        status=status,
        params=dict(graph.params),
        steps={name: state.results[name] for name in graph.order()},
        resumed_from=resumed_from,
        _artifacts=client.artifacts,
        _model_options=model_load_options(settings),
    )
    failure = state.first_failure
    if failure is not None:
        raise StepFailedError(
            f"Step {failure.name!r} of pipeline {pipeline.name!r} failed (run {run_id}): "
            f"{failure.error}. What it printed and the traceback: artifact logs.txt of step run "
            f"{failure.run_id} (`modelyard runs show {failure.run_id}`); after a fix, "
            f"`modelyard pipeline run {pipeline.name} --resume {run_id}`",
            run_id=run_id,
            step=failure.name,
            error=failure.error or "",
        )
    return result


def load_pipeline_run(
    run_id: str, *, settings: Settings | None = None, project: str | Path | None = None
) -> PipelineRun:
    """A recorded pipeline run (a dead ``running`` one is reported failed)."""
    if settings is None:
        settings = load_settings(project)
    client = client_for(settings)
    records = PipelineRecords(client.db, heartbeat_timeout_s=settings.tracking.heartbeat_timeout_s)
    row: PipelineRunRow = records.pipeline_run(run_id)
    steps = records.steps_of(row.run_id)
    outputs = records.outputs_of([s.run_id for s in steps])
    return PipelineRun(
        run_id=row.run_id,
        pipeline=row.pipeline,
        status=row.status,
        params=row.params,
        steps={
            s.step: StepResult(
                s.step,
                s.run_id,
                s.status,
                s.cached_from,
                s.duration_s,
                s.cache_key,
                {n: _stored(o) for n, o in outputs.get(s.run_id, {}).items()},
                s.error,
            )
            for s in steps
        },
        resumed_from=row.resumed_from,
        _artifacts=client.artifacts,
        _model_options=model_load_options(settings),
    )
