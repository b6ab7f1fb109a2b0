"""Where steps run: the :class:`Executor` protocol, a local process pool and inline.

The runner hands an executor a :class:`StepTask` (picklable: the step's function by
``module:qualname`` plus the project folder and module file to import it from, its
parameters, its inputs as :class:`StoredOutput` records, the settings and the step's run
id) and gets back a future of a :class:`StepOutcome`. :func:`run_task` is what runs in a
worker: it loads the inputs, calls the function with the step's run as the active
tracking run (so ``modelyard.log_metric`` and ``modelyard.log_model`` inside a step go to
it), stores the outputs (every blob is in the artifact store before the outcome names
it), captures what the step printed and never writes the pipeline tables: the parent does.

``ProcessExecutor`` ("local") forks a pool of worker processes once per pipeline run
(the workers inherit the imported pipeline module, so a step defined in a script runs
too), at most ``max_workers`` (default ``min(4, cpu count)``) steps at once; what a
step prints is captured at the file-descriptor level (C extensions and subprocesses
included). ``InlineExecutor`` ("inline") runs each step in this process, one after
another, capturing Python-level ``print`` output: for debugging with breakpoints.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.models.flavors.base import LoadOptions
from modelyard.pipelines.context import RecordedInput, StepContext, step_context
from modelyard.pipelines.graph import OutputSpec
from modelyard.pipelines.materializers import StoredOutput, load_output, save_output
from modelyard.pipelines.steps import Step, StepResources
from modelyard.store.database import Database
from modelyard.tracking.client import ActiveRun, TrackingClient
from modelyard.tracking.fluent import use_run

__all__ = [
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "StepOutcome",
    "StepTask",
    "check_max_workers",
    "client_for",
    "make_executor",
    "register_live_function",
    "run_task",
]

_MAX_LOG_BYTES = 64 * 2**20  # a step that prints more keeps the last 64 MiB


@dataclass(frozen=True)
class StepTask:
    """Everything a worker needs to run one step (picklable)."""

    step: str  # the node's name
    function: str  # "module:qualname" of the step
    module_file: str | None  # the module's file, to import it where the module is not on the path
    project_dir: str
    params: Mapping[str, Any]
    inputs: Mapping[str, StoredOutput]
    outputs: tuple[OutputSpec, ...]
    run_id: str  # the step's child run
    pipeline_run_id: str
    experiment: str
    settings: Settings
    #: what the step reserves on a Ray cluster (``@step(num_cpus=...)``)
    resources: StepResources = field(default_factory=StepResources)


def model_load_options(settings: Settings) -> LoadOptions:
    """The project's model trust settings, for model outputs read back as inputs."""
    return LoadOptions(
        trusted_types=tuple(settings.models.trusted_types),
        trust_code=settings.models.trust_code,
    )


@dataclass(frozen=True)
class StepOutcome:
    """What running a step produced; the parent records it."""

    run_id: str
    step: str
    ok: bool
    outputs: Mapping[str, StoredOutput]
    recorded_inputs: tuple[RecordedInput, ...]
    error: str | None  # one line: "ValueError: ..."; the traceback is in the logs
    logs_sha256: str | None  # None when the step printed nothing
    started_at: int
    ended_at: int
    logs_size: int = 0


@runtime_checkable
class Executor(Protocol):
    """Runs steps: ``submit`` a task, get a future of its outcome; ``shutdown`` at the end."""

    name: str

    def submit(self, task: StepTask) -> Future[StepOutcome]: ...

    def shutdown(self) -> None: ...


# -- clients and functions known to this process ------------------------------------------

_clients: dict[tuple[str, str], TrackingClient] = {}
_locks = {"clients": threading.Lock()}  # in a dict: a forked child replaces it
_live: dict[str, Callable[..., Any]] = {}


def client_for(settings: Settings) -> TrackingClient:
    """This process's tracking client for a project's stores (kept for the next step).

    One client per metadata and artifact store; opening another closes the oldest
    beyond two, so a process that runs pipelines of many projects holds few connections.
    """
    ident = (settings.db_url, settings.artifacts)
    with _locks["clients"]:
        found = _clients.get(ident)
        if found is not None and not found.closed:
            return found
        client = TrackingClient(settings)
        _clients[ident] = client
        while len(_clients) > 2:
            oldest = next(iter(_clients))
            _clients.pop(oldest).close()
        return client


def register_live_function(function_id: str, fn: Callable[..., Any]) -> None:
    """Remember the function of a step this process built, for inline runs and forked
    workers (a step defined in a script or a test function need not be importable)."""
    _live[function_id] = fn


def _resolve(task: StepTask) -> Callable[..., Any]:
    live = _live.get(task.function)
    if live is not None:
        return live
    module_name, _, qualname = task.function.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        if task.project_dir not in sys.path:
            sys.path.insert(0, task.project_dir)
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if not task.module_file or not Path(task.module_file).is_file():
                raise
            spec = importlib.util.spec_from_file_location(module_name, task.module_file)
            if spec is None or spec.loader is None:
                raise
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise NotFoundError(
                f"Step {task.step!r}: no {qualname!r} in module {module_name!r} (was it "
                "renamed or defined inside a function? Run it with executor='inline')"
            )
    fn = found.fn if isinstance(found, Step) else found
    if not callable(fn):
        raise InvalidInputError(
            f"Expected {task.function} to be a step function, got {type(fn).__name__}",
            loc="function",
        )
    return fn


# -- running one step ----------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    line = f"{name}: {text}" if text else name
    return line if len(line) <= 2000 else line[:1997] + "..."


def _split_outputs(task: StepTask, value: Any) -> dict[str, Any]:
    specs = task.outputs
    if not specs:
        return {}
    if len(specs) == 1:
        return {specs[0].name: value}
    names = [s.name for s in specs]
    if not isinstance(value, tuple | list) or len(value) != len(specs):
        got = (
            f"a {type(value).__name__} of {len(value)}"
            if isinstance(value, tuple | list)
            else f"a {type(value).__name__}"
        )
        raise InvalidInputError(
            f"Step {task.step!r} declares {len(specs)} outputs ({', '.join(names)}) and must "
            f"return a tuple of {len(specs)}, got {got}",
            loc=f"{task.step}.return",
        )
    return dict(zip(names, value, strict=True))


@contextlib.contextmanager
def _capture_fds() -> Iterator[Callable[[], bytes]]:
    """Send this process's stdout and stderr to a temporary file: file descriptors 1 and 2
    (C code, subprocesses) and ``sys.stdout``/``sys.stderr`` (which a host such as pytest
    may have pointed elsewhere)."""
    with tempfile.TemporaryFile(prefix="modelyard-step-") as tmp:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = (os.dup(1), os.dup(2))
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        # same open file (one offset): writes through either path land in order
        text = io.TextIOWrapper(
            io.FileIO(os.dup(tmp.fileno()), "w"),
            encoding="utf-8",
            errors="replace",
            write_through=True,
        )
        streams = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = text
        done: list[bytes] = []
        try:
            yield lambda: done[0] if done else b""
        finally:
            sys.stdout, sys.stderr = streams
            with contextlib.suppress(Exception):
                text.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            size = tmp.seek(0, os.SEEK_END)
            tmp.seek(max(0, size - _MAX_LOG_BYTES))
            done.append(tmp.read())


@contextlib.contextmanager
def _capture_python() -> Iterator[Callable[[], bytes]]:
    """Send ``print`` and ``sys.stdout``/``sys.stderr`` writes to a buffer (inline runs)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield lambda: buffer.getvalue().encode("utf-8", "replace")[-_MAX_LOG_BYTES:]


def run_task(task: StepTask, *, capture: str = "fd") -> StepOutcome:
    """Run one step here: load inputs, call it as its run, store outputs and logs.

    Never raises for the step's own failure: the outcome says ``ok=False`` with the
    error's first line, and the traceback is at the end of the logs.
    """
    started = _now_ms()
    client = client_for(task.settings)
    store = client.artifacts
    context = StepContext(
        run_id=task.run_id,
        pipeline_run_id=task.pipeline_run_id,
        step=task.step,
        settings=task.settings,
        input_names=frozenset(task.inputs) | frozenset(task.params),
    )
    outputs: dict[str, StoredOutput] = {}
    error: str | None = None
    capturing = _capture_fds() if capture == "fd" else _capture_python()
    with capturing as logs:
        try:
            fn = _resolve(task)
            kwargs = dict(task.params)
            for name, stored in task.inputs.items():
                kwargs[name] = load_output(
                    stored,
                    store,
                    where=f"step {task.step!r} input {name!r}",
                    model_options=model_load_options(task.settings),
                )
            run = ActiveRun(client, task.run_id, task.experiment, task.step)
            with use_run(run), step_context(context):
                value = fn(**kwargs)
            for name, item in _split_outputs(task, value).items():
                spec = next(s for s in task.outputs if s.name == name)
                outputs[name] = save_output(
                    item, store, declared=spec.type, where=f"step {task.step!r} output {name!r}"
                )
            client.flush()  # the step's metrics are in the store before it is completed
        except Exception as exc:
            error = _one_line(exc)
            outputs = {}
            print(
                "".join(traceback.format_exception(exc)).rstrip()
                + f"\nmodelyard: step {task.step!r} failed: {error}",
                file=sys.stderr,
            )
    data = logs()
    logs_sha = None
    if data:
        try:
            logs_sha = store.put_bytes(data).sha256
        except Exception as exc:  # the step's result stands; say the logs were lost
            if error is None:
                error = f"the step's logs could not be stored: {_one_line(exc)}"
                outputs = {}
    return StepOutcome(
        run_id=task.run_id,
        step=task.step,
        ok=error is None,
        outputs=outputs,
        recorded_inputs=tuple(context.recorded),
        error=error,
        logs_sha256=logs_sha,
        started_at=started,
        ended_at=_now_ms(),
        logs_size=len(data) if logs_sha else 0,
    )


def _run_in_worker(task: StepTask) -> StepOutcome:
    return run_task(task, capture="fd")


# -- executors -----------------------------------------------------------------------------


class InlineExecutor:
    """Each step in this process, one after another (debugging; Python-level capture)."""

    name = "inline"

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        future: Future[StepOutcome] = Future()
        try:
            future.set_result(run_task(task, capture="python"))
        except Exception as exc:  # the machinery failed (a store), not the step
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        return None


#: databases of this process whose connections a forked worker must not use
_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def forget_in_workers(db: Database) -> None:
    """Make forked workers drop (without closing) the parent's connections of ``db``."""
    _databases.add(db)


def _after_fork_in_child() -> None:
    _locks["clients"] = threading.Lock()  # another thread may have held it at the fork
    for db in list(_databases):
        db.engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


#: the environment variables that size the thread pools of OpenMP and the BLAS libraries
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_LIMITS: list[Any] = []  # threadpoolctl's limits of this worker, kept for its lifetime


def worker_threads(workers: int) -> int:
    """Threads for each of ``workers`` processes: the cores shared out, at least one.

    Each step running at once would otherwise start a thread per core in OpenMP (scikit-
    learn's gradient boosting, LightGBM, XGBoost) or BLAS, and ``workers`` of them on
    the same cores run slower than one: a fit measured 10x slower with two.
    """
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def limit_threads(threads: int) -> None:
    """In a pool worker: cap the native thread pools at ``threads``, unless the user
    sized them."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return  # the user sized them: theirs wins
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)  # for libraries loaded later and child processes
    try:
        import threadpoolctl  # scikit-learn's dependency: present wherever the pools are
    except ImportError:
        return
    _LIMITS.append(threadpoolctl.threadpool_limits(limits=threads))


def check_max_workers(max_workers: int | None) -> None:
    """Refuse a ``max_workers`` that is not None or an integer >= 1, naming it."""
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise InvalidInputError(
            f"Expected max_workers to be an integer >= 1, got {max_workers!r}",
            loc="max_workers",
        )


class ProcessExecutor:
    """A pool of forked worker processes, started on the first step (``"local"``).

    Each worker caps OpenMP and BLAS at its share of the cores (``worker_threads``)
    unless ``OMP_NUM_THREADS`` or its siblings are set.
    """

    name = "local"

    def __init__(self, max_workers: int | None = None) -> None:
        check_max_workers(max_workers)
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        #: called once right before the workers fork (a run that executes no step, all
        #: cached, never forks and never calls it): imports the workers would all need
        self.before_fork: Callable[[], None] | None = None

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        if self._pool is None:
            if self.before_fork is not None:
                self.before_fork()
            self._pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=limit_threads,
                initargs=(worker_threads(self.max_workers),),
            )
        return self._pool.submit(_run_in_worker, task)

    def broken(self) -> bool:
        """True when a worker died and the pool can take no more steps."""
        return bool(self._pool is not None and getattr(self._pool, "_broken", False))

    def restart(self) -> None:
        """A fresh pool after a worker died (the steps in flight then have failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def terminate(self) -> None:
        """Stop now: kill the workers (their steps are lost) and drop the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


#: executors made by name beyond "local" and "inline": ``modelyard.pipelines.ray_executor``
#: adds "ray" (imported with ``modelyard.pipelines``; it imports ray only when used)
NAMED_EXECUTORS: dict[str, Callable[[int | None], Executor]] = {}


def make_executor(kind: str | Executor, max_workers: int | None = None) -> Executor:
    """The executor named ``kind`` ("local", "inline" or "ray"), or ``kind`` itself."""
    names = ", ".join(("local", "inline", *NAMED_EXECUTORS))
    if isinstance(kind, str):
        if kind == "local":
            return ProcessExecutor(max_workers)
        if kind == "inline":
            return InlineExecutor()
        if kind in NAMED_EXECUTORS:
            return NAMED_EXECUTORS[kind](max_workers)
        raise InvalidInputError(f"Expected an executor ({names}), got {kind!r}", loc="executor")
    if not isinstance(kind, Executor):
        raise InvalidInputError(
            f"Expected an executor name ({names}) or an object with name, submit(task) "
            f"and shutdown(), got {type(kind).__name__}",
            loc="executor",
        )
    return kind
