"""The fluent API at the package root: ``modelyard.start_run``, ``modelyard.log_metric``, ..."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import modelyard as my
from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import ConflictError, FilterSyntaxError, InvalidInputError, NotFoundError
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus

HEAVY = ("pandas", "sklearn", "starlette", "fastapi", "pyarrow", "torch", "onnxruntime")
NO_ACTIVE_RUN = r"No active run\. Start one with `with modelyard\.start_run\(\.\.\.\):`\."


@pytest.fixture(autouse=True)
def _fresh_fluent_state() -> Iterator[None]:
    """Each test starts with no fluent client and leaves no run active behind it."""
    my.set_client(None)
    yield
    while my.active_run() is not None:
        my.end_run(RunStatus.KILLED)
    my.set_client(None)


@pytest.fixture
def fluent(client: TrackingClient) -> TrackingClient:
    """The fluent calls of this test go through ``client`` (SQLite, then PostgreSQL)."""
    my.set_client(client)
    return client


def test_start_run_records_params_metrics_tags_inputs_and_artifacts(
    fluent: TrackingClient, settings: Settings, tmp_path: Path
) -> None:
    model = tmp_path / "model.txt"
    model.write_text("weights")
    table = pa.table({"age": [31, 45, 27], "churned": [False, True, False]})
    # the fixture's client serves this project: start_run must not open another one
    with my.start_run(
        experiment="churn", project=settings.project_dir, name="baseline", tags={"team": "risk"}
    ) as run:
        assert my.get_client() is fluent
        assert my.active_run() is run
        my.log_param("model", "hgb")
        my.log_params({"max_depth": 6, "lr": 0.1})
        for loss in (0.9, 0.5, 0.25):
            my.log_metric("loss", loss)
        my.log_metric("auc", 0.81, step=7)
        my.log_metrics({"precision": 0.7, "recall": 0.6}, step=2)
        my.set_tag("stage", "dev")
        my.set_tags({"stage": "review", "owner": "ana"})
        entry = my.log_artifact(model, "models/model.txt")
        dataset = my.log_input(table, name="train", source="warehouse.churn")
    assert my.active_run() is None

    stored = fluent.get_run(run.id)
    assert (stored.experiment, stored.name, stored.status) == (
        "churn",
        "baseline",
        RunStatus.FINISHED,
    )
    assert stored.params == {"lr": "0.1", "max_depth": "6", "model": "hgb"}
    assert stored.tags == {"owner": "ana", "stage": "review", "team": "risk"}
    assert stored.metrics == {"auc": 0.81, "loss": 0.25, "precision": 0.7, "recall": 0.6}
    history = fluent.get_metric_history(run.id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert [m.step for m in fluent.get_metric_history(run.id, "recall")] == [2]
    assert entry.path == "models/model.txt"
    assert fluent.list_artifacts(run.id) == [entry]
    assert fluent.load_artifact_bytes(run.id, "models/model.txt") == b"weights"
    assert fluent.list_inputs(run.id) == [dataset]
    assert (dataset.name, dataset.context, dataset.num_rows) == ("train", "training", 3)
    assert dataset.source == "warehouse.churn"
    assert [c["name"] for c in dataset.schema] == ["age", "churned"]


def test_log_artifacts_and_input_errors_name_the_problem(
    fluent: TrackingClient, tmp_path: Path
) -> None:
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "roc.txt").write_text("roc")
    (folder / "sub" / "pr.txt").write_text("pr")
    with my.start_run(experiment="churn") as run:
        entries = my.log_artifacts(folder, "plots")
        with pytest.raises(InvalidInputError, match=r"Expected a context .*, got 'bogus'"):
            my.log_input(pa.table({"x": [1]}), name="train", context="bogus")
        with pytest.raises(NotFoundError, match="No file at"):
            my.log_artifact(tmp_path / "missing.txt")
    assert [e.path for e in entries] == ["plots/roc.txt", "plots/sub/pr.txt"]
    assert fluent.load_artifact_bytes(run.id, "plots/sub/pr.txt") == b"pr"
    assert fluent.list_inputs(run.id) == []


def test_end_run_ends_the_innermost_run_with_a_status(fluent: TrackingClient) -> None:
    run = my.start_run(experiment="churn")
    assert my.active_run() is run
    assert fluent.get_run(run.id).status is RunStatus.RUNNING
    my.end_run(RunStatus.FAILED)
    assert my.active_run() is None
    assert fluent.get_run(run.id).status is RunStatus.FAILED
    with pytest.raises(NotFoundError, match=NO_ACTIVE_RUN):
        my.end_run()


def test_an_exception_fails_the_run_and_deactivates_it(fluent: TrackingClient) -> None:
    with pytest.raises(ZeroDivisionError), my.start_run(experiment="churn") as run:
        my.log_metric("loss", 0.5)
        _ = 1 / 0
    assert my.active_run() is None
    stored = fluent.get_run(run.id)
    assert stored.status is RunStatus.FAILED
    assert stored.metrics == {"loss": 0.5}


def test_nested_runs_need_nested_true(fluent: TrackingClient) -> None:
    with my.start_run(experiment="churn", name="parent") as parent:
        with pytest.raises(
            ConflictError,
            match=rf"Run {parent.id} is already active\. End it first, or pass nested=True",
        ):
            my.start_run(experiment="churn", name="refused")
        assert my.active_run() is parent
        with my.start_run(experiment="churn", name="child", nested=True) as child:
            assert my.active_run() is child
            my.log_metric("loss", 0.1)  # goes to the innermost run
            with my.start_run(experiment="churn", name="grandchild", nested=True) as grandchild:
                assert my.active_run() is grandchild
            assert my.active_run() is child
        assert my.active_run() is parent
        my.log_metric("loss", 0.9)
    assert my.active_run() is None

    by_name = {r.name: r for r in fluent.search_runs("churn")}
    assert set(by_name) == {"parent", "child", "grandchild"}  # the refused run never existed
    assert by_name["parent"].parent_run_id is None
    assert by_name["child"].parent_run_id == parent.id
    assert by_name["grandchild"].parent_run_id == child.id
    assert by_name["parent"].metrics == {"loss": 0.9}
    assert by_name["child"].metrics == {"loss": 0.1}
    assert all(r.status is RunStatus.FINISHED for r in by_name.values())


def test_active_run_is_per_thread(fluent: TrackingClient) -> None:
    def worker() -> tuple[bool, str]:
        assert my.active_run() is None  # the main thread's run is not active here
        with pytest.raises(NotFoundError, match=NO_ACTIVE_RUN):
            my.log_metric("x", 1.0)
        my.set_client(fluent)  # a thread starts without the main thread's client, too
        # not nested: this thread has no active run, whatever the main thread does
        with my.start_run(experiment="threads", name="worker") as run:
            my.log_metric("x", 2.0)
            same = my.active_run() is run
        return same, run.id

    with my.start_run(experiment="threads", name="main") as main_run:
        with ThreadPoolExecutor(1) as pool:
            same, worker_id = pool.submit(worker).result()
        assert same
        assert my.active_run() is main_run
        my.log_metric("x", 1.0)

    worker_run = fluent.get_run(worker_id)
    assert worker_run.parent_run_id is None
    assert worker_run.metrics == {"x": 2.0}
    assert fluent.get_run(main_run.id).metrics == {"x": 1.0}


def test_active_run_is_per_asyncio_task(fluent: TrackingClient) -> None:
    async def job(name: str, mine: asyncio.Event, other: asyncio.Event) -> str:
        with my.start_run(experiment="tasks", name=name) as run:
            mine.set()
            await other.wait()  # both runs are open at the same time
            assert my.active_run() is run
            my.log_metric("x", float(len(name)))
        return run.id

    async def both() -> list[str]:
        a, b = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(job("a", a, b), job("bb", b, a)))

    ids = asyncio.run(both())
    runs = {r.name: r for r in fluent.search_runs("tasks")}
    assert sorted(r.id for r in runs.values()) == sorted(ids)
    assert runs["a"].metrics == {"x": 1.0}
    assert runs["bb"].metrics == {"x": 2.0}
    assert runs["a"].parent_run_id is None
    assert runs["bb"].parent_run_id is None
    assert my.active_run() is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: my.log_metric("x", 1.0),
        lambda: my.log_metrics({"x": 1.0}),
        lambda: my.log_param("p", 1),
        lambda: my.log_params({"p": 1}),
        lambda: my.set_tag("t", "v"),
        lambda: my.set_tags({"t": "v"}),
        lambda: my.log_artifact("model.txt"),
        lambda: my.log_input([1, 2], name="train"),
        my.end_run,
    ],
    ids=[
        "log_metric",
        "log_metrics",
        "log_param",
        "log_params",
        "set_tag",
        "set_tags",
        "log_artifact",
        "log_input",
        "end_run",
    ],
)
def test_logging_without_an_active_run_says_how_to_start_one(call: Callable[[], Any]) -> None:
    with pytest.raises(NotFoundError, match=NO_ACTIVE_RUN):
        call()


def test_experiment_defaults_to_the_environment_then_default(
    fluent: TrackingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_EXPERIMENT", "from-env")
    with my.start_run() as run:
        pass
    assert fluent.get_run(run.id).experiment == "from-env"
    monkeypatch.delenv("MODELYARD_EXPERIMENT")
    with my.start_run() as run:
        pass
    assert fluent.get_run(run.id).experiment == "default"


def test_start_run_with_run_id_resumes_it(fluent: TrackingClient) -> None:
    with my.start_run(experiment="churn") as first:
        my.log_metric("loss", 0.9)
        my.log_metric("loss", 0.7)
        my.log_param("model", "hgb")
    # a new process resumes the run: a fresh client on the same store
    later = TrackingClient(fluent.settings)
    try:
        my.set_client(later)
        with my.start_run(run_id=first.id) as resumed:
            assert resumed.id == first.id
            assert later.get_run(first.id).status is RunStatus.RUNNING
            my.log_metric("loss", 0.5)
            with pytest.raises(ConflictError, match="Param 'model'"):
                my.log_param("model", "rf")
        stored = later.get_run(first.id)
        assert stored.status is RunStatus.FINISHED
        assert stored.metrics == {"loss": 0.5}
        history = later.get_metric_history(first.id, "loss")
        assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.5)]
    finally:
        later.close()
    my.set_client(fluent)
    with pytest.raises(NotFoundError, match="No run with id 'feedfacefeedface"):
        my.start_run(run_id="feedfacefeedfacefeedfacefeedface")


def test_search_runs_through_the_fluent_api(fluent: TrackingClient, settings: Settings) -> None:
    for experiment, name, auc in (
        ("churn", "low", 0.70),
        ("churn", "mid", 0.82),
        ("churn", "high", 0.91),
        ("fraud", "other", 0.95),
    ):
        with my.start_run(experiment=experiment, name=name):
            my.log_metric("auc", auc)
            my.log_param("model", "hgb" if auc > 0.8 else "logreg")

    found = my.search_runs("churn", filter="metrics.auc > 0.8", order_by=["metrics.auc DESC"])
    assert [r.name for r in found] == ["high", "mid"]
    assert [r.name for r in my.search_runs(order_by=["metrics.auc"])] == [
        "low",
        "mid",
        "high",
        "other",
    ]
    both = my.search_runs(["churn", "fraud"], filter="params.model = 'hgb'")
    assert {r.name for r in both} == {"mid", "high", "other"}
    assert len(my.search_runs("churn", max_results=1)) == 1
    assert {r.name for r in my.search_runs("fraud", project=settings.project_dir)} == {"other"}
    with pytest.raises(NotFoundError, match=r"No experiment named 'chrun'\. Did you mean 'churn'"):
        my.search_runs("chrun")
    with pytest.raises(FilterSyntaxError, match=r"(?s)metrics\.auc >> 1.*\n\s+\^"):
        my.search_runs("churn", filter="metrics.auc >> 1")


def _project(root: Path) -> Path:
    init_project(root)
    return root


def test_set_client_chooses_the_store(tmp_path: Path) -> None:
    a = TrackingClient(load_settings(_project(tmp_path / "a"), environ={}))
    b = TrackingClient(load_settings(_project(tmp_path / "b"), environ={}))
    try:
        my.set_client(b)
        assert my.get_client() is b
        with my.start_run(experiment="churn", name="in-b") as run:
            my.log_metric("auc", 0.8)
        assert b.get_run(run.id).metrics == {"auc": 0.8}
        with pytest.raises(NotFoundError, match="No run with id"):
            a.get_run(run.id)
        my.set_client(a)
        assert my.get_client() is a
        assert a.list_experiments() == []
        with my.start_run(experiment="churn", name="in-a"):
            pass
        assert [r.name for r in my.search_runs()] == ["in-a"]
        assert [r.name for r in b.search_runs()] == ["in-b"]
    finally:
        a.close()
        b.close()


def test_get_client_opens_the_project_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MODELYARD_DB_URL", "MODELYARD_ARTIFACTS", "MODELYARD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    first = _project(tmp_path / "first")
    second = _project(tmp_path / "second")
    opened = my.get_client(first)
    try:
        assert opened.settings.project_dir == first.resolve()
        assert my.get_client() is opened  # kept for the later calls of this context
        assert my.get_client(first) is opened
        with my.start_run(experiment="churn", project=first) as run:
            pass
        other = my.get_client(second)
        try:
            assert other is not opened
            assert other.settings.project_dir == second.resolve()
            assert other.search_runs() == []
        finally:
            other.close()
        assert [r.id for r in opened.search_runs("churn")] == [run.id]
    finally:
        opened.close()
    monkeypatch.chdir(tmp_path)  # no project here or above: the error says what to do
    my.set_client(None)
    with pytest.raises(NotFoundError, match=r"No modelyard project in .*modelyard init"):
        my.start_run(experiment="churn")


def test_import_modelyard_stays_light(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import modelyard as my

        heavy = {HEAVY!r}
        print("IMPORT", *[m for m in heavy if m in sys.modules])
        my.init_project(Path({str(tmp_path)!r}))
        with my.start_run(experiment="light", project={str(tmp_path)!r}):
            my.log_param("model", "hgb")
            my.log_metric("auc", 0.8)
        print("TRACKED", *[m for m in heavy if m in sys.modules])
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["IMPORT", "TRACKED"]
