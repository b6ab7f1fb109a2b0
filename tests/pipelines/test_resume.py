"""Resume after a failure or a SIGKILL; cache entries whose blobs are gone or corrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, PipelineDefinitionError, StepFailedError
from modelyard.pipelines import PipelineRun, run_pipeline
from modelyard.pipelines.executors import client_for
from modelyard.pipelines.records import PipelineRecords
from modelyard.store.processes import pid_alive
from modelyard.tracking.client import TrackingClient
from tests.pipelines import run_flows

ROOT = Path(__file__).resolve().parents[2]


def _statuses(run: PipelineRun) -> dict[str, str]:
    return {name: result.status for name, result in run.steps.items()}


def _chain_oracle() -> list[int]:
    return [v * 2 * 3 * 5 for v in range(6)]


_SCRIPT = """
import msgspec, sys
from modelyard.config import Settings
from modelyard.pipelines import run_pipeline
from tests.pipelines import run_flows
settings = msgspec.json.decode(sys.argv[1].encode(), type=Settings, dec_hook=lambda t, v: t(v))
run_pipeline(run_flows.chain, {"hold": sys.argv[2]}, settings=settings, executor="local")
"""


@pytest.mark.parametrize("kill", ["process", "group"])
def test_a_pipeline_killed_mid_step_resumes_from_its_finished_steps(
    settings: Settings, tmp_path: Path, kill: str
) -> None:
    """``kill -9 PID`` (its pool's worker lives on, orphaned) or the whole process group."""
    hold = tmp_path / "hold"
    hold.write_text("")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            msgspec.json.encode(settings, enc_hook=str).decode(),
            str(hold),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group: the pool's workers die with it
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(str(hold) + ".started").exists():
            assert proc.poll() is None, "the pipeline process ended before step s3 started"
            assert time.monotonic() < deadline, "step s3 never started"
            time.sleep(0.05)
        records = PipelineRecords(client_for(settings).db)
        [row] = records.list_pipeline_runs("chain")
        assert row.status == "running"  # alive: not reaped
        running = {s.step: s.status for s in records.steps_of(row.run_id)}
        assert running == {"numbers": "completed", "s2": "completed", "s3": "running"}
        if kill == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed = records.pipeline_run(row.run_id)  # the dead process is noticed on read
    assert killed.status == "failed"
    steps = {s.step: s for s in records.steps_of(row.run_id)}
    assert steps["s3"].status == "failed" and (steps["s3"].error or "").startswith("killed")
    client = TrackingClient(settings)
    try:
        assert client.get_run(row.run_id).status == "KILLED"
    finally:
        client.close()

    hold.unlink()  # step s3 no longer waits
    resumed = run_pipeline(run_flows.chain, settings=settings, resume=row.run_id[:8])
    assert resumed.resumed_from == row.run_id
    assert resumed.params == {"hold": str(hold)}  # the killed run's parameters
    assert _statuses(resumed) == {
        "numbers": "cached",
        "s2": "cached",
        "s3": "completed",
        "s4": "completed",
    }
    assert resumed.steps["s2"].cached_from == steps["s2"].run_id
    assert resumed.load("s4") == _chain_oracle()
    assert records.pipeline_run(resumed.run_id).resumed_from == row.run_id
    with contextlib.suppress(ProcessLookupError):  # an orphaned worker, if any
        os.killpg(proc.pid, signal.SIGKILL)


def test_resume_after_a_failed_step_reruns_it_and_what_follows(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(run_flows.failing, settings=settings, executor="inline")
    failed_id = caught.value.run_id
    # the same failure again: the finished steps are reused even without the cache
    with pytest.raises(StepFailedError) as again:
        run_pipeline(
            run_flows.failing,
            settings=settings,
            executor="inline",
            resume=failed_id,
            cache=False,
        )
    records = PipelineRecords(client_for(settings).db)
    statuses = {s.step: s.status for s in records.steps_of(again.value.run_id)}
    assert statuses == {
        "numbers": "cached",
        "boom": "failed",
        "after_boom": "skipped",
        "side": "cached",
        "combine": "skipped",
    }
    with pytest.raises(InvalidInputError, match="is a run of pipeline 'failing'"):
        run_pipeline(run_flows.chain, settings=settings, resume=failed_id)


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_a_cache_entry_with_a_damaged_blob_reruns_its_step(settings: Settings, damage: str) -> None:
    first = run_pipeline(run_flows.chain, settings=settings, executor="inline")
    store = client_for(settings).artifacts
    [blob] = first.steps["s2"].outputs["output"].manifest["files"].values()
    path = Path(store.root) / "objects" / blob[:2] / blob[2:]
    if damage == "deleted":
        path.unlink()
    else:
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
        path.write_bytes(bytes(data))
    second = run_pipeline(run_flows.chain, settings=settings, executor="inline")
    # s2 runs again and makes the same bytes, so s3 and s4 still hit the cache
    assert _statuses(second) == {
        "numbers": "cached",
        "s2": "completed",
        "s3": "cached",
        "s4": "cached",
    }
    assert second.load("s2") == [v * 2 for v in range(6)]
    assert second.load("s4") == _chain_oracle()
    assert store.verify(blob)  # the object is whole again
    third = run_pipeline(run_flows.chain, settings=settings, executor="inline")
    assert set(_statuses(third).values()) == {"cached"}
    assert third.steps["s2"].cached_from == second.steps["s2"].run_id


def test_ctrl_c_records_the_interrupted_step_and_stops_the_workers(
    settings: Settings, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            msgspec.json.encode(settings, enc_hook=str).decode(),
            str(hold),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        started = Path(str(hold) + ".started")
        deadline = time.monotonic() + 60
        while not started.exists() or not started.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        worker = int(started.read_text())
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    records = PipelineRecords(client_for(settings).db)
    [row] = records.list_pipeline_runs("chain")
    assert row.status == "failed"
    steps = {s.step: s for s in records.steps_of(row.run_id)}
    assert steps["s3"].status == "failed"
    assert (steps["s3"].error or "").startswith("interrupted: KeyboardInterrupt")
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker), "the step's worker outlived the interrupted run"


def test_resume_with_an_override_reruns_only_the_steps_whose_key_changed(
    settings: Settings, tmp_path: Path
) -> None:
    absent = str(tmp_path / "no-such-hold")  # s3 does not wait: the file is not there
    first = run_pipeline(run_flows.chain, {"hold": absent}, settings=settings, executor="inline")
    resumed = run_pipeline(
        run_flows.chain,
        {"hold": ""},
        settings=settings,
        executor="inline",
        resume=first.run_id,
        cache=False,  # only RUN's own steps may be reused
    )
    assert resumed.params == {"hold": ""}
    # s3's key changed (its hold param); its output did not, so s4 is RUN's again
    assert _statuses(resumed) == {
        "numbers": "cached",
        "s2": "cached",
        "s3": "completed",
        "s4": "cached",
    }
    assert resumed.steps["s4"].cached_from == first.steps["s4"].run_id
    assert resumed.load("s4") == _chain_oracle()
    with pytest.raises(PipelineDefinitionError, match="unknown parameter"):
        run_pipeline(
            run_flows.chain, {"hol": ""}, settings=settings, executor="inline", resume=first.run_id
        )
