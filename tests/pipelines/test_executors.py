"""Executors, the worker's view of a step (current_step, fluent runs, log_model), the
shape of outputs, and the pieces the runner stands on (verify, task pickling)."""

from __future__ import annotations

import json
import pickle
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest

from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError, StepFailedError
from modelyard.pipelines import StepEvent, pipeline, run_pipeline, step
from modelyard.pipelines.context import StepContext
from modelyard.pipelines.executors import (
    InlineExecutor,
    ProcessExecutor,
    StepOutcome,
    StepTask,
    client_for,
    make_executor,
    run_task,
)
from modelyard.pipelines.materializers import register_materializer, unregister_materializer
from modelyard.pipelines.records import PipelineRecords
from modelyard.registry.client import ModelRegistry
from modelyard.store.artifacts import ArtifactStore
from tests.pipelines import run_flows


class ThreadExecutor:
    """A user-supplied executor: steps on threads of this process."""

    name = "threads"

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(2)
        self.tasks: list[str] = []
        self.shut = False

    def submit(self, task: StepTask) -> Future[StepOutcome]:
        self.tasks.append(task.step)
        return self.pool.submit(run_task, task, capture="python")

    def shutdown(self) -> None:
        self.shut = True
        self.pool.shutdown()


def test_a_custom_executor_runs_the_steps_and_is_not_shut_down(settings: Settings) -> None:
    executor = ThreadExecutor()
    run = run_pipeline(run_flows.diamond, settings=settings, executor=executor)
    try:
        assert {s.status for s in run.steps.values()} == {"completed"}
        assert sorted(executor.tasks) == ["combine", "left", "numbers", "right"]
        assert not executor.shut  # the caller's: it shuts it down
        assert PipelineRecords(client_for(settings).db).pipeline_run(run.run_id).executor == (
            "threads"
        )
    finally:
        executor.shutdown()


def test_executor_names_and_workers_are_checked() -> None:
    assert isinstance(make_executor("local"), ProcessExecutor)
    assert isinstance(make_executor("inline"), InlineExecutor)
    assert make_executor("local", 3).max_workers == 3  # type: ignore[attr-defined]
    with pytest.raises(
        InvalidInputError, match=r"Expected an executor \(local, inline, ray\), got 'spark'"
    ):
        make_executor("spark")
    with pytest.raises(InvalidInputError, match="or an object with name, submit"):
        make_executor(object())  # type: ignore[arg-type]
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidInputError, match="max_workers"):
            ProcessExecutor(bad)  # type: ignore[arg-type]


def test_a_task_pickles_for_a_worker(settings: Settings) -> None:
    graph = run_flows.diamond.build()
    node = graph.nodes["left"]
    task = StepTask(
        step="left",
        function=node.step.function_id,
        module_file=run_flows.__file__,
        project_dir=str(settings.project_dir),
        params=dict(node.params),
        inputs={},
        outputs=node.outputs,
        run_id="r" * 32,
        pipeline_run_id="p" * 32,
        experiment="diamond",
        settings=settings,
    )
    assert pickle.loads(pickle.dumps(task)) == task


def test_a_step_returning_the_wrong_shape_fails_naming_its_outputs(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(run_flows.wrong_shape, settings=settings, executor="local")
    assert caught.value.step == "halves"
    assert "declares 2 outputs (low, high) and must return a tuple of 2, got a list of 4" in (
        caught.value.error
    )


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_log_model_inside_a_step_links_the_version_to_the_step_run(
    settings: Settings, executor: str
) -> None:
    pytest.importorskip("sklearn")
    run = run_pipeline(run_flows.trains, settings=settings, executor=executor)
    ref = run.load("fit")
    registry = ModelRegistry(settings)
    try:
        version = registry.get_version(ref)
    finally:
        registry.close()
    assert version.run_id == run.steps["fit"].run_id


def test_record_input_checks_what_it_is_given(settings: Settings) -> None:
    here = StepContext("r" * 32, "p" * 32, "train", settings, input_names=frozenset({"frame"}))
    here.record_input("features", "ab" * 32)
    here.record_input("features", "ab" * 32)  # the same again: nothing new
    assert len(here.recorded) == 1
    with pytest.raises(ConflictError, match="already recorded input 'features'"):
        here.record_input("features", "cd" * 32)
    with pytest.raises(ConflictError, match="already has an input named 'frame'"):
        here.record_input("frame", "cd" * 32)
    with pytest.raises(InvalidInputError, match=r"record_input\.digest"):
        here.record_input("x", "not hex")
    with pytest.raises(InvalidInputError, match=r"record_input\.kind"):
        here.record_input("x", "ab" * 32, kind="output")
    with pytest.raises(InvalidInputError, match=r"record_input\.name"):
        here.record_input("", "ab" * 32)


def test_verify_finds_missing_and_corrupted_objects(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    ref = store.put_bytes(b"hello world")
    assert store.verify(ref.sha256)
    assert not store.verify("0" * 64)
    path = tmp_path / "store" / "objects" / ref.sha256[:2] / ref.sha256[2:]
    path.write_bytes(b"hello World")
    assert not store.verify(ref.sha256)
    assert path.exists()  # only looked at
    assert not store.verify(ref.sha256, remove_corrupted=True)
    assert not path.exists()
    assert store.put_bytes(b"hello world") == ref and store.verify(ref.sha256)


def test_an_on_event_that_raises_loses_no_record(settings: Settings) -> None:
    seen: list[StepEvent] = []
    lock = threading.Lock()

    def broken(event: StepEvent) -> None:
        with lock:
            seen.append(event)
        raise RuntimeError("the progress bar broke")

    run = run_pipeline(run_flows.diamond, settings=settings, executor="inline", on_event=broken)
    assert run.status == "completed" and len(seen) == 8
    rows = PipelineRecords(client_for(settings).db).steps_of(run.run_id)
    assert {r.status for r in rows} == {"completed"}


@pytest.mark.parametrize(
    ("field", "value"), [("db_url", "sqlite://"), ("artifacts", "memory://runner-test")]
)
def test_the_local_executor_refuses_stores_its_workers_cannot_reach(
    settings: Settings, field: str, value: str
) -> None:
    changed = msgspec.structs.replace(settings, **{field: value})
    with pytest.raises(
        InvalidInputError, match=f"use executor='inline' or a (file|folder) - at {field}"
    ):
        run_pipeline(run_flows.diamond, settings=changed, executor="local")
    run = run_pipeline(run_flows.diamond, settings=changed, executor="inline")
    values = range(5)  # diamond's default n
    assert run.load("combine") == {
        "total": sum(v + 1 for v in values) + sum(v + 2 for v in values),
        "count": 10,
    }


class BoxMaterializer:
    name = "test.box"

    def __init__(self, version: int) -> None:
        self.version = version

    def handles(self, tp: object) -> bool:
        return tp is run_flows.Box

    def save(self, value: run_flows.Box, folder: Path) -> dict[str, int]:
        (folder / "box.json").write_text(json.dumps({"value": value.value}))
        return {}

    def load(self, folder: Path, meta: object, tp: object) -> run_flows.Box:
        return run_flows.Box(json.loads((folder / "box.json").read_text())["value"])


@pytest.mark.parametrize("flow", ["boxes", "boxes_untyped"])
def test_an_output_of_an_older_materializer_version_is_made_again(
    settings: Settings, flow: str
) -> None:
    """Declared types put the materializer's version in the key; an untyped output's
    materializer is chosen by value, so the runner checks the recorded version itself."""
    pipe = getattr(run_flows, flow)
    register_materializer(BoxMaterializer(1))
    try:
        first = run_pipeline(pipe, settings=settings, executor="inline")
        assert first.load("open_box") == 30
        unregister_materializer("test.box")
        register_materializer(BoxMaterializer(2))  # its files changed: version 2 cannot read 1
        second = run_pipeline(pipe, settings=settings, executor="inline")
        assert {n: r.status for n, r in second.steps.items()} == {
            "make_box": "completed",
            "open_box": "completed",
        }
        assert second.load("open_box") == 30
        assert second.load("make_box") == run_flows.Box(3)
        assert second.steps["make_box"].outputs["output"].manifest["version"] == 2
    finally:
        unregister_materializer("test.box")


def test_steps_defined_inside_a_function_run_in_the_local_pool(settings: Settings) -> None:
    """Not importable by name: the forked workers inherit them from the run's process."""

    @step
    def local_numbers(n: int = 3) -> list[int]:
        return list(range(n))

    @step
    def local_total(values: list[int]) -> int:
        return sum(values) * 7

    @pipeline
    def local_flow(n: int = 3) -> None:
        local_total(local_numbers(n))

    run = run_pipeline(local_flow, {"n": 4}, settings=settings, executor="local")
    assert run.load("local_total") == sum(range(4)) * 7
