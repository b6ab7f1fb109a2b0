"""Tracking under concurrency: processes, threads, forks, exits and kills lose no points.

Child processes are real interpreters (``subprocess``) running small scripts against the
same store as the test, configured through their project's ``modelyard.yaml``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from sqlalchemy import func, select, update

from modelyard.config import Settings, TrackingSettings, init_project, load_settings
from modelyard.store.database import Database, open_database
from modelyard.store.schema import metrics, runs
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus

_CHILD_TIMEOUT_S = 120  # a hung child fails the test instead of hanging the suite


def _project(root: Path, db_url: str, **tracking: float) -> Path:
    """A project whose modelyard.yaml points at ``db_url`` with these tracking settings."""
    init_project(root)
    config = {"name": root.name, "db_url": db_url, "tracking": tracking}
    (root / "modelyard.yaml").write_text(yaml.safe_dump(config))
    return root


def _child_env() -> dict[str, str]:
    """This environment without MODELYARD_* variables, so the yaml alone decides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}


def _spawn(script: str, *args: object, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill a child the test left running (a failed assertion) and wait for it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _run_script(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=_CHILD_TIMEOUT_S,
        check=False,
    )


def _lines(out: str, tag: str) -> list[list[str]]:
    """The words after ``tag`` on each stdout line that starts with it."""
    return [line.split()[1:] for line in out.splitlines() if line.startswith(tag + " ")]


def _count_points(db: Database, run_id: str | None = None) -> int:
    query = select(func.count()).select_from(metrics)
    if run_id is not None:
        query = query.where(metrics.c.run_id == run_id)
    with db.read() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def raw_db(settings: Settings) -> Iterator[Database]:
    """The test's metadata store, read directly with SQL (not through the client)."""
    db = open_database(settings.db_url)
    yield db
    db.close()


def _tuned(settings: Settings, **tracking: Any) -> Settings:
    return msgspec.structs.replace(settings, tracking=TrackingSettings(**tracking))


# -- (a) several processes, one store ---------------------------------------------------

_WRITER = """
import sys
from modelyard import TrackingClient, load_settings

project, index, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = TrackingClient(load_settings(project))
run = client.start_run("load", name=f"writer-{index}")
print("RUN", run.id, flush=True)
sys.stdin.readline()  # wait until every writer is up, so that all of them write at once
for step in range(points):
    run.log_metric("value", index * 1_000_000 + step + 0.25, step=step)
    run.log_metric("auto", step * 0.5)  # automatic steps: 0, 1, 2, ...
run.end()
client.close()
print("DONE", flush=True)
"""


def test_processes_writing_one_store_lose_nothing(tmp_path: Path, db_url: str) -> None:
    writers, points = 4, 2000
    # small batches and a short interval: many concurrent write transactions per writer;
    # the store is fresh, so the writers also race to migrate it
    project = _project(tmp_path / "p", db_url, flush_points=50, flush_interval_ms=20)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(_spawn(_WRITER, project, i, points, stdin=True))
            for i in range(writers)
        ]
        for proc in procs:
            stack.callback(_reap, proc)
        run_ids = []
        for proc in procs:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("RUN "), first + proc.communicate(timeout=30)[1]
            run_ids.append(first.split()[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=_CHILD_TIMEOUT_S)
            assert proc.returncode == 0, err
            assert "DONE" in out

    with TrackingClient(load_settings(project, environ={})) as reader:
        for index, run_id in enumerate(run_ids):
            run = reader.get_run(run_id)
            assert (run.name, run.status) == (f"writer-{index}", RunStatus.FINISHED)
            values = reader.get_metric_history(run_id, "value")
            assert [m.step for m in values] == list(range(points))
            assert [m.value for m in values] == [
                index * 1_000_000 + step + 0.25 for step in range(points)
            ]
            auto = reader.get_metric_history(run_id, "auto")
            assert [(m.step, m.value) for m in auto] == [(s, s * 0.5) for s in range(points)]
            assert run.metrics == {
                "auto": (points - 1) * 0.5,
                "value": index * 1_000_000 + points - 1 + 0.25,
            }
        db = open_database(db_url)
        try:
            assert _count_points(db) == writers * points * 2  # nothing written twice
        finally:
            db.close()


# -- (b) threads sharing one client ------------------------------------------------------


def test_threads_sharing_a_client_lose_nothing(settings: Settings, raw_db: Database) -> None:
    threads, points = 8, 300
    client = TrackingClient(_tuned(settings, flush_points=64, flush_interval_ms=10))
    try:
        shared = client.start_run("threads", name="shared")
        barrier = threading.Barrier(threads)

        def work(index: int) -> str:
            barrier.wait()  # every thread starts its run and logs at the same moment
            run = client.start_run("threads", name=f"thread-{index}")
            for step in range(points):
                run.log_metric("own", index + step / 1000, step=step)
                client.log_metric(shared.id, "shared", float(index * points + step))
                client.log_metric(shared.id, f"t{index}", float(step), step=step)
            run.end()
            return run.id

        with ThreadPoolExecutor(threads) as pool:
            own_ids = list(pool.map(work, range(threads)))  # re-raises a thread's error
        shared.end()

        assert len(set(own_ids)) == threads
        for index, run_id in enumerate(own_ids):
            history = client.get_metric_history(run_id, "own")
            assert [(m.step, m.value) for m in history] == [
                (s, index + s / 1000) for s in range(points)
            ]
            assert client.get_run(run_id).status is RunStatus.FINISHED
            per_thread = client.get_metric_history(shared.id, f"t{index}")
            assert [(m.step, m.value) for m in per_thread] == [(s, float(s)) for s in range(points)]

        # automatic steps on one key from 8 threads: every step once, every value once
        pooled = client.get_metric_history(shared.id, "shared")
        assert [m.step for m in pooled] == list(range(threads * points))
        assert sorted(m.value for m in pooled) == [float(v) for v in range(threads * points)]
        for index in range(threads):
            # one thread's points got increasing steps, in the order it logged them
            mine = [m for m in pooled if index * points <= m.value < (index + 1) * points]
            assert [m.value for m in mine] == [float(index * points + s) for s in range(points)]
        assert _count_points(raw_db) == threads * points * 3
        assert len(client.search_runs("threads")) == threads + 1
    finally:
        client.close()


# -- (c) buffering ------------------------------------------------------------------------


def test_points_wait_in_the_buffer_until_flush_or_end(settings: Settings, raw_db: Database) -> None:
    # the flusher thread would wake after ~17 minutes: every write here is an explicit one
    client = TrackingClient(_tuned(settings, flush_points=1_000_000, flush_interval_ms=10**6))
    try:
        run = client.start_run("buffer")
        for step in range(500):
            run.log_metric("loss", 1.0 / (step + 1))
        assert _count_points(raw_db) == 0
        assert client.get_run(run.id).metrics == {}
        client.flush()
        assert _count_points(raw_db, run.id) == 500
        assert client.get_run(run.id).metrics == {"loss": pytest.approx(1 / 500)}

        run.log_metrics({"a": 1.0, "b": 2.0}, step=9)
        run.log_metric("loss", 0.0)
        assert _count_points(raw_db) == 500
        run.end()
        assert _count_points(raw_db) == 503
        stored = client.get_run(run.id)
        assert stored.status is RunStatus.FINISHED
        assert stored.metrics == {"a": 1.0, "b": 2.0, "loss": 0.0}
        assert [m.step for m in client.get_metric_history(run.id, "loss")] == list(range(501))
    finally:
        client.close()


def test_a_full_buffer_flushes_at_flush_points(settings: Settings, raw_db: Database) -> None:
    client = TrackingClient(_tuned(settings, flush_points=100, flush_interval_ms=10**6))
    try:
        run = client.start_run("buffer")
        for step in range(99):
            run.log_metric("x", float(step))
        assert _count_points(raw_db) == 0
        run.log_metric("x", 99.0)  # the 100th point fills the buffer
        assert _count_points(raw_db) == 100
        for step in range(100, 250):
            run.log_metric("x", float(step))
        assert _count_points(raw_db) == 200  # 50 still waiting
        run.log_metrics({f"k{i}": float(i) for i in range(50)})  # 100 again, in one call
        assert _count_points(raw_db) == 300
        run.end()
        assert _count_points(raw_db) == 300
        assert [m.value for m in client.get_metric_history(run.id, "x")] == [
            float(s) for s in range(250)
        ]
    finally:
        client.close()


# -- (d) the interpreter exits ------------------------------------------------------------

_EXITER = """
import sys
import modelyard as my

project, mode = sys.argv[1], sys.argv[2]
run = my.start_run(experiment="exit", project=project)
print("RUN", run.id, flush=True)
my.log_param("mode", mode)
for step in range(250):
    my.log_metric("loss", 1.0 / (step + 1))
if mode == "raise":
    raise RuntimeError("training diverged")
# no end_run: the interpreter's exit has to flush and end the run
"""


@pytest.mark.parametrize(
    ("mode", "returncode", "status"),
    [("clean", 0, RunStatus.FINISHED), ("raise", 1, RunStatus.FAILED)],
)
def test_interpreter_exit_flushes_and_ends_the_run(
    tmp_path: Path, db_url: str, mode: str, returncode: int, status: RunStatus
) -> None:
    # nothing is written before exit unless the exit hook writes it
    project = _project(tmp_path / "p", db_url, flush_points=10**6, flush_interval_ms=10**6)
    done = _run_script(_EXITER, project, mode)
    assert done.returncode == returncode, done.stderr
    assert ("RuntimeError: training diverged" in done.stderr) == (mode == "raise")
    assert "could not flush" not in done.stderr
    [[run_id]] = _lines(done.stdout, "RUN")
    with TrackingClient(load_settings(project, environ={})) as reader:
        run = reader.get_run(run_id)
        assert run.status is status
        assert run.end_time is not None
        assert run.params == {"mode": mode}
        history = reader.get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(250)]


# -- (e) a killed process -----------------------------------------------------------------

_VICTIM = """
import sys, time
from modelyard import TrackingClient, load_settings

project, points = sys.argv[1], int(sys.argv[2])
settings = load_settings(project)
client = TrackingClient(settings)
run = client.start_run("kill", name="victim")
for step in range(points):
    run.log_metric("loss", float(step), step=step)
# ten flush intervals: the background flusher has written every point by now
time.sleep(10 * settings.tracking.flush_interval_ms / 1000)
print("READY", run.id, flush=True)
time.sleep(3600)
"""


def test_killed_process_keeps_flushed_points_and_shows_killed(tmp_path: Path, db_url: str) -> None:
    points = 300
    project = _project(tmp_path / "p", db_url, flush_points=10**6, flush_interval_ms=100)
    with _spawn(_VICTIM, project, points) as proc:
        try:
            _check_killed(proc, project, points)
        finally:
            _reap(proc)


def _check_killed(proc: subprocess.Popen[str], project: Path, points: int) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), line + proc.communicate(timeout=30)[1]
    run_id = line.split()[1]
    settings = load_settings(project, environ={})
    with TrackingClient(settings) as reader:
        # alive and heard from: a reader must not mistake it for a dead run
        assert reader.get_run(run_id).status is RunStatus.RUNNING
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # reaped: its pid is gone

    # a new reader, as the next `modelyard runs list` would be
    with TrackingClient(settings) as reader:
        run = reader.get_run(run_id)
        assert run.status is RunStatus.KILLED
        assert run.end_time is not None and run.end_time >= run.start_time
        history = reader.get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(points)]
        killed = reader.search_runs("kill", filter="status = 'KILLED'")
        assert [r.id for r in killed] == [run_id]
        assert reader.search_runs("kill", filter="status = 'RUNNING'") == []


_LOGGER_THEN_KILLED = """
import sys, time
from modelyard import TrackingClient, load_settings

client = TrackingClient(load_settings(sys.argv[1]))
run = client.start_run("kill", name="victim")
started = time.monotonic()
step = 0
while time.monotonic() - started < float(sys.argv[2]):
    run.log_metric("loss", float(step))
    step += 1
    time.sleep(0.01)
client.flush()
print("READY", run.id, time.time_ns() // 1_000_000, flush=True)
time.sleep(3600)
"""


def test_a_killed_run_ends_at_its_last_write_not_at_its_start(tmp_path: Path, db_url: str) -> None:
    # heartbeats every 15 s: none is sent while it runs, only its metric writes are news
    logging_s = 2.0
    project = _project(
        tmp_path / "p", db_url, flush_points=10**6, flush_interval_ms=100, heartbeat_timeout_s=60
    )
    with _spawn(_LOGGER_THEN_KILLED, project, logging_s) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("READY "), line + proc.communicate(timeout=30)[1]
            run_id, last_write_ms = line.split()[1], int(line.split()[2])
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            _reap(proc)
    with TrackingClient(load_settings(project, environ={})) as reader:
        run = reader.get_run(run_id)
        assert run.status is RunStatus.KILLED
        assert run.end_time is not None and run.duration_s is not None
        # its end is its last write (the final flush, stamped by the store's clock)
        assert last_write_ms - 1000 <= run.end_time <= last_write_ms + 1000
        assert run.duration_s >= logging_s - 0.5


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_not_heard_from_are_shown_killed(settings: Settings, raw_db: Database) -> None:
    timeout_s = 60.0
    # no flusher tick (and so no heartbeat) can happen during this test
    tuned = _tuned(
        settings, flush_points=1000, flush_interval_ms=10**6, heartbeat_timeout_s=timeout_s
    )
    client = TrackingClient(tuned)
    try:
        stale = client.start_run("hb", name="stale")
        fresh = client.start_run("hb", name="fresh")
        done = client.start_run("hb", name="done")
        ours = client.start_run("hb", name="ours")  # this process: alive
        orphan = client.start_run("hb", name="orphan")  # this host, a pid that has exited
        done.end()
        now = time.time_ns() // 1_000_000
        last_seen = now - int(timeout_s * 1000) - 5_000
        with raw_db.write() as conn:
            elsewhere = runs.c.id.in_([stale.id, fresh.id, done.id])
            conn.execute(update(runs).where(elsewhere).values(host="another-host", pid=1))
            stale_ids = [stale.id, done.id]
            conn.execute(
                update(runs).where(runs.c.id.in_(stale_ids)).values(heartbeat_at=last_seen)
            )
            conn.execute(update(runs).where(runs.c.id == orphan.id).values(pid=_dead_pid()))

        killed = client.get_run(stale.id)
        assert killed.status is RunStatus.KILLED
        assert killed.end_time == last_seen  # ended when it was last heard from
        statuses = {r.name: r.status for r in client.search_runs("hb")}
        assert statuses == {
            "stale": RunStatus.KILLED,
            "fresh": RunStatus.RUNNING,
            "done": RunStatus.FINISHED,
            "ours": RunStatus.RUNNING,
            "orphan": RunStatus.KILLED,
        }
        assert client.get_run(done.id).end_time != last_seen
    finally:
        for run in (fresh, ours):
            client.end_run(run.id)
        client.close()


def test_a_live_run_keeps_its_heartbeat(settings: Settings, raw_db: Database) -> None:
    # heartbeats every 0.375 s; a reader on another host calls a run dead after 1.5 s
    timeout_s = 1.5
    tuned = _tuned(settings, flush_points=1000, flush_interval_ms=25, heartbeat_timeout_s=timeout_s)
    with TrackingClient(tuned) as writer, TrackingClient(tuned) as reader:
        run = writer.start_run("hb")
        with raw_db.write() as conn:
            conn.execute(update(runs).where(runs.c.id == run.id).values(host="another-host"))
        # outlive the timeout: without heartbeats the run would now look dead
        deadline = time.monotonic() + timeout_s + 0.5
        while time.monotonic() < deadline:
            run.log_metric("x", 1.0)
            time.sleep(0.05)
        assert reader.get_run(run.id).status is RunStatus.RUNNING
        run.end()
        assert reader.get_run(run.id).status is RunStatus.FINISHED


# -- (f) a forked child ---------------------------------------------------------------------

_FORKER = """
import os, sys, warnings
from modelyard import TrackingClient, load_settings

# forking with the flusher thread running is what this test is about
warnings.simplefilter("ignore", DeprecationWarning)
project = sys.argv[1]
client = TrackingClient(load_settings(project))
parent = client.start_run("fork", name="parent")
parent.log_param("who", "parent")
for step in range(100):  # still in the buffer when the process forks
    parent.log_metric("loss", float(step), step=step)
pid = os.fork()
if pid == 0:
    child = client.start_run("fork", name="child")
    child.log_param("who", "child")
    for step in range(100):
        child.log_metric("loss", 1000.0 + step, step=step)
    print("CHILD", child.id, flush=True)
    sys.exit(0)  # a normal exit: the child's exit hook ends its own run, not the parent's
_, status = os.waitpid(pid, 0)
print("CHILD_EXIT", os.waitstatus_to_exitcode(status), flush=True)
print("PARENT_STATUS", client.get_run(parent.id).status.value, flush=True)
for step in range(100, 200):
    parent.log_metric("loss", float(step), step=step)
parent.end()
print("PARENT", parent.id, flush=True)
client.close()
"""


def test_forked_child_logs_its_own_run(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path / "p", db_url, flush_points=10**6, flush_interval_ms=10**6)
    done = _run_script(_FORKER, project)
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout, "CHILD_EXIT") == [["0"]], done.stderr
    assert _lines(done.stdout, "PARENT_STATUS") == [["RUNNING"]]
    [[child_id]] = _lines(done.stdout, "CHILD")
    [[parent_id]] = _lines(done.stdout, "PARENT")
    with TrackingClient(load_settings(project, environ={})) as reader:
        parent = reader.get_run(parent_id)
        child = reader.get_run(child_id)
        assert (parent.status, child.status) == (RunStatus.FINISHED, RunStatus.FINISHED)
        assert (parent.params, child.params) == ({"who": "parent"}, {"who": "child"})
        assert child.parent_run_id is None
        # the parent's points buffered at fork time are written once, by the parent
        assert [(m.step, m.value) for m in reader.get_metric_history(parent_id, "loss")] == [
            (s, float(s)) for s in range(200)
        ]
        assert [(m.step, m.value) for m in reader.get_metric_history(child_id, "loss")] == [
            (s, 1000.0 + s) for s in range(100)
        ]
        assert parent.metrics == {"loss": 199.0}
        assert child.metrics == {"loss": 1099.0}
