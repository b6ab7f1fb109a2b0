"""Pipelines on Ray (``executor="ray"``) on the real two-node cluster of ``ray_address``.

One project for the module, on PostgreSQL with a password in its URL (the server trusts
127.0.0.1, so only the restored URL proves what the worker was given) and a local
artifact folder (one machine: allowed). Each case compares with the local executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import create_engine, text

from modelyard.cli.app import main
from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import MissingExtraError, StepFailedError
from modelyard.pipelines import Pipeline, load_pipelines, run_pipeline
from modelyard.pipelines.executors import StepTask, client_for
from modelyard.pipelines.ray_executor import RayExecutor, task_arguments
from modelyard.pipelines.records import PipelineRecords
from modelyard.pipelines.runner import PipelineRun
from modelyard.pipelines.steps import StepResources
from tests.conftest import _need_pg

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

PASSWORD = "h1-Secret+pw/9"

SOURCE = """
import hashlib
import random

from modelyard import log_metric, pipeline, step
from modelyard.pipelines import current_step

SHIFT = 0.0


@step
def sample(n: int = 400, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) + SHIFT for _ in range(n)]


@step(num_cpus=1, memory=64 * 2**20)
def moments(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    log_metric("mean", mean)
    log_metric("var", var)
    return {"mean": mean, "var": var}


@step
def tail(values: list[float], cut: float = 1.0) -> int:
    count = sum(v > cut for v in values)
    log_metric("tail", count)
    return count


@step
def report(stats: dict[str, float], tail: int) -> str:
    print("report", tail)
    return f"{stats['mean']:.12f} {stats['var']:.12f} {tail}"


@step(cache=False)
def seen_store() -> str:
    return hashlib.sha256(current_step().settings.db_url.encode()).hexdigest()


@pipeline
def stats(n: int = 400, seed: int = 7, cut: float = 1.0) -> None:
    values = sample(n, seed)
    report(moments(values), tail(values, cut=cut))


@step
def explode(values: list[float]) -> float:
    print("exploding now")
    raise ValueError(f"no good: {len(values)} values")


@step
def after(x: float) -> float:
    return x


@pipeline
def failing() -> None:
    values = sample(50, 1)
    after(explode(values))
    tail.with_options(id="side")(values)


@pipeline
def secrets() -> None:
    seen_store()


@step(num_cpus=64)
def greedy() -> int:
    return 1


@step(cache=False)
def dies() -> int:
    import os

    os._exit(9)


@pipeline
def dying() -> None:
    dies()


@pipeline
def too_big() -> None:
    greedy()
"""


def _write(root: Path, source: str) -> None:
    """Write pipelines.py as a user edits it (a new mtime, so no stale bytecode)."""
    path = root / "pipelines.py"
    path.write_text(textwrap.dedent(source))
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[str]:
    admin_url = _need_pg()
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    scheme, _, rest = base.partition("://")
    user, _, host = rest.partition("@")
    quoted = PASSWORD.replace("+", "%2B").replace("/", "%2F")
    try:
        yield f"{scheme}://{user}:{quoted}@{host}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, pg_with_password: str, ray_address: str
) -> Path:
    root = tmp_path_factory.mktemp("rayproj") / "proj"
    init_project(root)
    (root / CONFIG_FILE).write_text(f"db_url: {pg_with_password}\nray:\n  address: {ray_address}\n")
    _write(root, SOURCE)
    return root


@pytest.fixture(scope="module")
def settings(project: Path) -> Settings:
    return load_settings(project, environ={})


def _pipelines(settings: Settings) -> dict[str, Pipeline]:
    return load_pipelines(settings)


def _outputs(run: PipelineRun) -> dict[str, Any]:
    return {name: run.load(name) for name, s in run.steps.items() if s.outputs}


def _metrics(settings: Settings, run: PipelineRun) -> dict[str, dict[str, float]]:
    client = client_for(settings)
    return {name: client.get_run(s.run_id).metrics for name, s in run.steps.items()}


def test_a_pipeline_on_ray_gives_the_local_outputs_and_metrics(settings: Settings) -> None:
    flow = _pipelines(settings)["stats"]
    local = run_pipeline(flow, {"seed": 11}, settings=settings, executor="local", cache=False)
    on_ray = run_pipeline(flow, {"seed": 11}, settings=settings, executor="ray", cache=False)
    assert {s.status for s in on_ray.steps.values()} == {"completed"}
    assert _outputs(on_ray) == _outputs(local)  # exact: the same floats
    assert _metrics(settings, on_ray) == _metrics(settings, local)
    assert _metrics(settings, on_ray)["moments"].keys() == {"mean", "var"}
    records = PipelineRecords(client_for(settings).db)
    assert records.pipeline_run(on_ray.run_id).executor == "ray"
    assert records.pipeline_run(local.run_id).executor == "local"


def test_a_cached_step_is_reused_in_a_later_ray_session(settings: Settings) -> None:
    import ray

    flow = _pipelines(settings)["stats"]
    first = run_pipeline(flow, {"seed": 23}, settings=settings, executor="ray")
    assert {s.status for s in first.steps.values()} == {"completed"}
    ray.shutdown()  # a new driver session: nothing of the first one's object store is left
    assert not ray.is_initialized()
    second = run_pipeline(flow, {"seed": 23}, settings=settings, executor="ray")
    assert {s.status for s in second.steps.values()} == {"cached"}
    assert {n: s.cached_from for n, s in second.steps.items()} == {
        n: s.run_id for n, s in first.steps.items()
    }
    assert _outputs(second) == _outputs(first)
    # a changed parameter: the new session's tasks read the cached sample from the store
    third = run_pipeline(flow, {"seed": 23, "cut": 0.5}, settings=settings, executor="ray")
    assert ray.is_initialized()
    statuses = {n: s.status for n, s in third.steps.items()}
    assert statuses == {
        "sample": "cached",
        "moments": "cached",
        "tail": "completed",
        "report": "completed",
    }
    values = first.load("sample")
    assert third.load("tail") == sum(v > 0.5 for v in values)
    # and the local executor reuses what Ray produced: one store, one cache
    fourth = run_pipeline(flow, {"seed": 23}, settings=settings, executor="local")
    assert {s.status for s in fourth.steps.values()} == {"cached"}


def test_a_failing_step_is_reported_like_local(settings: Settings) -> None:
    flow = _pipelines(settings)["failing"]
    failures = {}
    for executor in ("local", "ray"):
        with pytest.raises(StepFailedError) as caught:
            run_pipeline(flow, settings=settings, executor=executor, cache=False)
        failures[executor] = caught.value
    local, on_ray = failures["local"], failures["ray"]
    assert on_ray.step == local.step == "explode"
    assert on_ray.error == local.error == "ValueError: no good: 50 values"
    records = PipelineRecords(client_for(settings).db)
    steps = {
        ex: {s.step: s.status for s in records.steps_of(f.run_id)} for ex, f in failures.items()
    }
    assert steps["ray"] == steps["local"]
    assert steps["ray"]["after"] == "skipped"
    failed = next(s for s in records.steps_of(on_ray.run_id) if s.step == "explode")
    assert failed.logs_sha256 is not None
    logs = client_for(settings).artifacts.get_bytes(failed.logs_sha256).decode()
    assert "exploding now" in logs
    assert "Traceback" in logs
    assert "ValueError: no good: 50 values" in logs


def test_the_worker_restores_the_database_password_it_was_not_sent(settings: Settings) -> None:
    assert PASSWORD.replace("+", "%2B").replace("/", "%2F") in settings.db_url
    run = run_pipeline(_pipelines(settings)["secrets"], settings=settings, executor="ray")
    want = hashlib.sha256(settings.db_url.encode()).hexdigest()
    assert run.load("seen_store") == want
    # what the task is called with holds no secret
    task = StepTask(
        step="seen_store",
        function="pipelines:seen_store",
        module_file=None,
        project_dir=str(settings.project_dir),
        params={},
        inputs={},
        outputs=(),
        run_id="r",
        pipeline_run_id="p",
        experiment="e",
        settings=settings,
        resources=StepResources(),
    )
    arguments = pickle.dumps(task_arguments(task))
    for secret in (PASSWORD, PASSWORD.replace("+", "%2B").replace("/", "%2F")):
        assert secret.encode() not in arguments


def test_an_edited_step_runs_its_new_code_on_reused_workers(settings: Settings) -> None:
    flow = _pipelines(settings)["stats"]
    before = run_pipeline(flow, {"n": 30}, settings=settings, executor="ray")
    try:
        _write(settings.project_dir, SOURCE.replace("SHIFT = 0.0", "SHIFT = 1000.0"))
        after = run_pipeline(
            _pipelines(settings)["stats"], {"n": 30}, settings=settings, executor="ray"
        )
        assert after.steps["sample"].status == "completed"  # the source changed: a new key
        assert after.load("sample") == [v + 1000.0 for v in before.load("sample")]
    finally:
        _write(settings.project_dir, SOURCE)


def test_a_step_no_node_can_hold_fails_naming_what_it_asks(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(_pipelines(settings)["too_big"], settings=settings, executor="ray")
    assert "asks for num_cpus=64" in caught.value.error
    assert "greedy.num_cpus" in caught.value.error


def test_engine_ray_in_the_file_makes_ray_the_default_and_the_cli_takes_engine(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    config = project / CONFIG_FILE
    original = config.read_text()
    records = PipelineRecords(client_for(load_settings(project, environ={})).db)
    try:
        config.write_text(original + "engine: ray\n")
        settings = load_settings(project, environ={})
        assert settings.pipeline_executor == "ray"
        capsys.readouterr()
        code = main(["--project", str(project), "pipeline", "run", "stats", "--json", "-p", "n=12"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0
        assert records.pipeline_run(out["run_id"]).executor == "ray"
        code = main(
            ["--project", str(project), "pipeline", "run", "stats", "--json", "--engine", "local"]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 0
        assert records.pipeline_run(out["run_id"]).executor == "local"
        code = main(["--project", str(project), "pipeline", "run", "stats", "--engine", "spark"])
        err = capsys.readouterr().err
        assert code == 2
        assert "--engine" in err
        assert "Traceback" not in err
    finally:
        config.write_text(original)


def test_the_ray_executor_refuses_a_bad_max_workers() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        RayExecutor(0)


def test_settings_of_a_project_without_ray_keys_keep_local(settings: Settings) -> None:
    plain = msgspec.structs.replace(settings, engine="local")
    assert plain.pipeline_executor == "local"


def test_a_cluster_that_cannot_serve_the_project_is_refused_before_the_run_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = PipelineRecords(client_for(settings).db)
    before = len(records.list_pipeline_runs(limit=1000))
    monkeypatch.setitem(sys.modules, "ray", None)  # the ray extra is not installed
    with pytest.raises(MissingExtraError, match=r"modelyard\[ray\]"):
        run_pipeline(_pipelines(settings)["stats"], settings=settings, executor="ray")
    assert len(records.list_pipeline_runs(limit=1000)) == before  # nothing recorded


def test_a_worker_that_dies_fails_its_step_with_rays_reason(settings: Settings) -> None:
    with pytest.raises(StepFailedError) as caught:
        run_pipeline(_pipelines(settings)["dying"], settings=settings, executor="ray")
    assert caught.value.step == "dies"
    assert caught.value.error.startswith("WorkerCrashedError: ")
    records = PipelineRecords(client_for(settings).db)
    assert records.pipeline_run(caught.value.run_id).status == "failed"
