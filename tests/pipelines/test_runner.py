"""run_pipeline end to end: records, cache hits, failures, parallel steps, events."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import InvalidInputError, NotFoundError, StepFailedError
from modelyard.pipelines import PipelineRun, StepEvent, current_step, run_pipeline
from modelyard.pipelines.executors import client_for
from modelyard.pipelines.records import PipelineRecords
from modelyard.pipelines.runner import load_pipeline_run
from modelyard.store.schema import pipeline_inputs, pipeline_outputs, runs, step_cache
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_path
from tests.pipelines import run_flows


def _records(settings: Settings) -> PipelineRecords:
    return PipelineRecords(client_for(settings).db)


def _statuses(run: PipelineRun) -> dict[str, str]:
    return {name: result.status for name, result in run.steps.items()}


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_run_records_every_step_and_a_rerun_is_cached(settings: Settings, executor: str) -> None:
    events: list[StepEvent] = []
    first = run_pipeline(
        run_flows.diamond, {"n": 4}, settings=settings, executor=executor, on_event=events.append
    )
    assert first.status == "completed"
    assert _statuses(first) == dict.fromkeys(["numbers", "left", "right", "combine"], "completed")
    # the oracle: the same functions called directly
    values = list(range(4))
    expected = {"total": sum(v + 1 for v in values) + sum(v + 2 for v in values), "count": 8}
    assert first.load("combine") == expected
    assert [(e.step, e.status) for e in events if e.step == "numbers"] == [
        ("numbers", "running"),
        ("numbers", "completed"),
    ]

    records = _records(settings)
    row = records.pipeline_run(first.run_id)
    assert (row.status, row.pipeline, row.params, row.executor) == (
        "completed",
        "diamond",
        {"n": 4, "seconds": 0.0},
        executor,
    )
    steps = {s.step: s for s in records.steps_of(first.run_id)}
    assert set(steps) == {"numbers", "left", "right", "combine"}
    client = TrackingClient(settings)
    try:
        parent = client.get_run(first.run_id)
        assert parent.status == "FINISHED" and parent.experiment == "diamond"
        assert parent.params == {"n": "4", "seconds": "0.0"}
        left = client.get_run(steps["left"].run_id)
        assert left.parent_run_id == first.run_id and left.status == "FINISHED"
        assert left.params == {"seconds": "0.0", "add": "1"}
        parts = json.loads(left.tags["modelyard.cache_parts"])
        assert parts["params"] == {"seconds": 0.0, "add": 1}
        assert parts["inputs"] == {"values": first.steps["numbers"].outputs["output"].digest}
        combined = client.get_run(steps["combine"].run_id)
        assert combined.metrics["total"] == expected["total"]  # log_metric inside the step
    finally:
        client.close()
    # inputs name their producers; outputs and cache rows exist
    with client_for(settings).db.read() as conn:
        inputs = conn.execute(
            select(pipeline_inputs).where(pipeline_inputs.c.step_run_id == steps["combine"].run_id)
        ).all()
        cache_rows = conn.execute(select(step_cache)).all()
    assert {(i.name, i.kind, i.source_step_run_id) for i in inputs} == {
        ("a", "output", steps["left"].run_id),
        ("b", "output", steps["right"].run_id),
    }
    assert {r.step_run_id for r in cache_rows} == {s.run_id for s in steps.values()}

    events.clear()
    second = run_pipeline(
        run_flows.diamond, {"n": 4}, settings=settings, executor=executor, on_event=events.append
    )
    assert _statuses(second) == dict.fromkeys(["numbers", "left", "right", "combine"], "cached")
    assert {e.status for e in events} == {"cached"}
    for name, result in second.steps.items():
        assert result.cached_from == first.steps[name].run_id
        assert result.outputs == first.steps[name].outputs
    assert second.load("combine") == expected
    with client_for(settings).db.read() as conn:
        copied = conn.execute(
            select(pipeline_outputs.c.digest).where(
                pipeline_outputs.c.step_run_id == second.steps["combine"].run_id
            )
        ).scalar_one()
    assert copied == first.steps["combine"].outputs["output"].digest

    third = run_pipeline(
        run_flows.diamond, {"n": 4}, settings=settings, executor=executor, cache=False
    )
    assert set(_statuses(third).values()) == {"completed"}


def test_a_failed_step_skips_its_dependents_and_independent_branches_finish(
    settings: Settings,
) -> None:
    events: list[StepEvent] = []
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(
            run_flows.failing,
            {"message": "the column 'x' is empty"},
            settings=settings,
            executor="local",
            on_event=events.append,
        )
    err = caught.value
    assert err.step == "boom"
    assert err.error == "ValueError: the column 'x' is empty"
    assert err.run_id in str(err) and "boom" in str(err)
    assert "artifact logs.txt of step run" in str(err)
    records = _records(settings)
    assert records.pipeline_run(err.run_id).status == "failed"
    steps = {s.step: s for s in records.steps_of(err.run_id)}
    assert {k: s.status for k, s in steps.items()} == {
        "numbers": "completed",
        "boom": "failed",
        "after_boom": "skipped",
        "side": "completed",
        "combine": "skipped",
    }
    assert steps["boom"].error == "ValueError: the column 'x' is empty"
    assert steps["after_boom"].error == "skipped: step 'boom' failed"
    # the traceback and what the step printed are in its logs
    store = client_for(settings).artifacts
    assert steps["boom"].logs_sha256 is not None
    logs = store.get_bytes(steps["boom"].logs_sha256).decode()
    assert "about to fail" in logs
    assert "Traceback (most recent call last)" in logs and "raise ValueError(message)" in logs
    client = TrackingClient(settings)
    try:
        assert client.get_run(err.run_id).status == "FAILED"
        assert client.get_run(steps["boom"].run_id).status == "FAILED"
        assert client.get_run(steps["side"].run_id).status == "FINISHED"
        # the same logs are the step run's artifact logs.txt (`modelyard runs show`)
        [artifact] = client.list_artifacts(steps["boom"].run_id)
        assert (artifact.path, artifact.sha256) == ("logs.txt", steps["boom"].logs_sha256)
        assert client.load_artifact_bytes(steps["boom"].run_id, "logs.txt").decode() == logs
    finally:
        client.close()
    assert ("after_boom", "skipped") in [(e.step, e.status) for e in events]
    assert ("boom", "failed") in [(e.step, e.status) for e in events]
    # no cache entry for the failed step
    with client_for(settings).db.read() as conn:
        cached_ids = set(conn.execute(select(step_cache.c.step_run_id)).scalars())
    assert steps["boom"].run_id not in cached_ids


def test_two_independent_one_second_steps_run_at_once(settings: Settings) -> None:
    run_pipeline(run_flows.diamond, {"n": 1}, settings=settings, executor="local")  # warm
    started = time.perf_counter()
    run = run_pipeline(
        run_flows.diamond,
        {"n": 2, "seconds": 1.0},
        settings=settings,
        executor="local",
        max_workers=2,
    )
    elapsed = time.perf_counter() - started
    assert _statuses(run)["left"] == "completed" and _statuses(run)["right"] == "completed"
    assert elapsed < 1.8, f"two 1 s steps took {elapsed:.2f} s: they did not run in parallel"


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_logs_metrics_and_recorded_inputs_of_a_step(settings: Settings, executor: str) -> None:
    run = run_pipeline(run_flows.observed, settings=settings, executor=executor)
    records = _records(settings)
    steps = {s.step: s for s in records.steps_of(run.run_id)}
    logs = client_for(settings).artifacts.get_bytes(steps["chatty"].logs_sha256 or "").decode()
    assert "python-level print" in logs
    if executor == "local":  # file-descriptor capture: C code and subprocesses too
        assert "fd-level stdout" in logs and "fd-level stderr" in logs
        assert "from a subprocess" in logs
    recorded = {
        (i.name, i.kind, i.digest, i.description)
        for i in records.inputs_of(steps["records_features"].run_id)
    }
    assert ("training_set", "features", "ab" * 32, "churn:v1") in recorded
    client = TrackingClient(settings)
    try:
        step_run = client.get_run(steps["records_features"].run_id)
    finally:
        client.close()
    assert step_run.metrics == {"rows": 4.0}
    assert step_run.tags["seen_step"] == "records_features"


def test_current_step_outside_a_step_is_a_clear_error() -> None:
    with pytest.raises(NotFoundError, match="No pipeline step is running here"):
        current_step()


def test_a_worker_that_dies_fails_its_step_not_the_runner(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(run_flows.crashing, settings=settings, executor="local")
    assert caught.value.step == "crash"
    assert "worker process" in caught.value.error
    assert _records(settings).pipeline_run(caught.value.run_id).status == "failed"


def test_path_parameters_are_read_from_the_project_and_recorded_as_files(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = settings.project_dir
    (project / "data.txt").write_text("1 2 3")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "data.txt").write_text("100 200")  # a file of the same name in the cwd
    monkeypatch.chdir(other)
    run = run_pipeline(run_flows.fixed, settings=settings, executor="local")
    assert run.load("load") == [1, 2, 3]
    records = _records(settings)
    load_run = run.steps["load"].run_id
    files = [i for i in records.inputs_of(load_run) if i.kind == "file"]
    assert [(i.name, i.digest, i.description) for i in files] == [
        ("path", digest_path(project / "data.txt").digest, "data.txt")
    ]
    with client_for(settings).db.read() as conn:
        status = conn.execute(select(runs.c.status).where(runs.c.id == load_run)).scalar_one()
    assert status == "FINISHED"


def test_a_long_inline_step_is_not_taken_for_a_dead_run(settings: Settings) -> None:
    quick = msgspec.structs.replace(
        settings, tracking=msgspec.structs.replace(settings.tracking, heartbeat_timeout_s=2.0)
    )
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # another reader, reaping dead runs while the step sleeps
        records = PipelineRecords(client_for(quick).db, heartbeat_timeout_s=2.0)
        while not stop.wait(0.2):
            seen.extend(r.status for r in records.list_pipeline_runs("diamond"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run = run_pipeline(
            run_flows.diamond, {"n": 2, "seconds": 3.0}, settings=quick, executor="inline"
        )
    finally:
        stop.set()
        watcher.join()
    assert run.status == "completed"
    # beats every 0.5 s, reaped after 2 s: never seen failed or killed (the watcher may
    # also see the run completed, between its end and the stop)
    assert "running" in seen and set(seen) <= {"running", "completed"}, seen
    assert _records(quick).pipeline_run(run.run_id).status == "completed"


def test_an_interrupted_run_records_its_unfinished_step(settings: Settings) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(run_flows.ctrl_c, settings=settings, executor="inline")
    records = _records(settings)
    [row] = records.list_pipeline_runs("ctrl_c")
    assert row.status == "failed"
    steps = {s.step: s for s in records.steps_of(row.run_id)}
    assert steps["numbers"].status == "completed"
    assert steps["interrupted"].status == "failed"
    assert (steps["interrupted"].error or "").startswith("interrupted: KeyboardInterrupt")


@st.composite
def _dags(draw: st.DrawFn) -> tuple[list[list[int]], list[int]]:
    size = draw(st.integers(1, 7))
    spec = []
    for i in range(size):
        ups = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        spec.append(ups)
    failing = draw(st.lists(st.integers(0, size - 1), max_size=2, unique=True))
    return spec, failing


@hsettings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dag=_dags())
def test_random_graphs_fail_skip_and_cache_as_their_ancestry_says(
    tmp_path_factory: pytest.TempPathFactory, dag: tuple[list[list[int]], list[int]]
) -> None:
    spec, failing = dag
    root = tmp_path_factory.mktemp("dag") / "project"
    init_project(root)
    settings = load_settings(root, environ={})
    ancestors: list[set[int]] = []
    for ups in spec:
        ancestors.append(set(ups).union(*(ancestors[j] for j in ups)))
    expected: dict[str, str] = {}
    values: dict[int, int] = {}
    for i, ups in enumerate(spec):
        if ancestors[i] & set(failing):
            expected[f"n{i}"] = "skipped"
        elif i in failing:
            expected[f"n{i}"] = "failed"
        else:
            expected[f"n{i}"] = "completed"
            values[i] = sum(values[j] for j in ups[:2]) + len(f"n{i}")
    params = {"spec": spec, "failing": failing}

    def run() -> PipelineRun:
        try:
            return run_pipeline(run_flows.random_dag, params, settings=settings, executor="inline")
        except StepFailedError as exc:
            assert failing and exc.step in {f"n{i}" for i in failing}
            return load_pipeline_run(exc.run_id, settings=settings)

    first = run()
    assert _statuses(first) == expected
    assert first.status == ("failed" if failing else "completed")
    for i, value in values.items():
        assert first.load(f"n{i}") == value
    second = run()
    again = {k: ("cached" if v == "completed" else v) for k, v in expected.items()}
    assert _statuses(second) == again
    for i, value in values.items():
        assert second.load(f"n{i}") == value


def test_a_key_that_cannot_be_computed_fails_that_step_only(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(run_flows.bad_fingerprint, settings=settings, executor="inline")
    assert caught.value.step == "fingerprinted"
    assert caught.value.error == "computing its cache key: KeyError: 'feature_store_url'"
    run = load_pipeline_run(caught.value.run_id, settings=settings)
    assert _statuses(run) == {
        "numbers": "completed",
        "fingerprinted": "failed",
        "other": "completed",
    }


@pytest.mark.parametrize("bad", ["abc", "zzzzzzzz", "ab%", "a_b_c_d_e", "", "ab cd ef"])
def test_a_bad_run_id_is_refused_in_one_line(settings: Settings, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="Expected a pipeline run id") as caught:
        _records(settings).pipeline_run(bad)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidInputError):
        run_pipeline(run_flows.diamond, settings=settings, resume=bad)
