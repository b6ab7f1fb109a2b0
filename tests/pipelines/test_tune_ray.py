"""``tune(..., engine="ray")`` on a real two-node Ray cluster (``ray_address``).

The oracle is the local engine: the same objective, seed and ``n_jobs`` on ``engine=
"local"`` (forked processes, the same ordered driver) must give exactly the same trials
(parameters, values, states, intermediate values) as on Ray. Each trial is also checked
against its child run in the tracking store. One module, one cluster: what the tests
build is small (a dozen trials of a closed-form objective each).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import optuna
import pytest
from optuna.pruners import MedianPruner
from optuna.trial import TrialState

import modelyard
from modelyard.config import Settings, load_settings
from modelyard.errors import InvalidInputError
from modelyard.pipelines import studies
from modelyard.pipelines.trials import INTERMEDIATE_KEY, trial_run_id
from modelyard.pipelines.tuning import TuneResult, tune
from modelyard.tracking.fluent import get_client, set_client

pytestmark = pytest.mark.ray
# the objectives below travel to the workers by value: the tests folder is not on their path
cloudpickle.register_pickle_by_value(sys.modules[__name__])
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"x": (-3.0, 3.0), "d": (1, 6), "k": ["a", "b"]}


def quadratic(params: dict[str, Any]) -> float:
    time.sleep(0.01 * params["d"])  # unequal durations: finishing order varies
    return (params["x"] - 1.0) ** 2 + params["d"] + (params["k"] == "a")


def quadratic_where(params: dict[str, Any], trial: optuna.Trial) -> float:
    """``quadratic``, recording the process and the Ray task (if any) that ran it."""
    import ray

    task = ray.get_runtime_context().get_task_id() if ray.is_initialized() else None
    trial.set_user_attr("where", [os.getpid(), task])
    return quadratic(params)


def stepped(params: dict[str, Any], trial: optuna.Trial) -> float:
    """Reports 5 steps; trials worse than the median of earlier ones at a step are pruned."""
    value = 0.0
    for step in range(5):
        value = (params["x"] - 1.0) ** 2 + 5.0 / (step + 1)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
        time.sleep(0.005)
    return value


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, ray_address: str) -> Iterator[Path]:
    """One project on SQLite (one machine: allowed) whose engine setting points at the cluster."""
    root = tmp_path_factory.mktemp("tune-ray") / "project"
    modelyard.init_project(root)
    config = root / "modelyard.yaml"
    config.write_text(config.read_text() + f"\nray:\n  address: {ray_address}\n")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MODELYARD_DB")}
    yield root
    client = get_client(root)
    set_client(None)
    client.close()
    studies.close_study_storages()
    os.environ.update(saved)


def _settings(project: Path) -> Settings:
    return load_settings(project, environ={})


def _trials(result: TuneResult) -> list[tuple[Any, ...]]:
    return [
        (t.number, t.state, t.params, t.value, dict(t.intermediate_values))
        for t in result.study.get_trials(deepcopy=False)
    ]


def _children(project: Path, result: TuneResult) -> dict[str, Any]:
    client = get_client(project)
    client.flush()
    return {
        r.id: r
        for r in client.search_runs(max_results=5000)
        if r.parent_run_id == result.parent_run_id
    }


def test_the_same_seed_gives_the_same_trials_on_ray_as_locally(project: Path) -> None:
    runs = {
        engine: tune(quadratic_where, space=SPACE, n_trials=12, n_jobs=2, seed=11,
                     study=f"same-{engine}", engine=engine, project=project)
        for engine in ("local", "ray")
    }  # fmt: skip
    local, ray = runs["local"], runs["ray"]
    assert _trials(ray) == _trials(local)
    assert (ray.best_value, ray.best_params) == (local.best_value, local.best_params)
    assert ray.n_complete == 12
    where = [t.user_attrs["where"] for t in ray.study.get_trials(deepcopy=False)]
    assert all(pid != os.getpid() and task for pid, task in where)  # in Ray tasks
    # every trial was run by a Ray worker (another process), told there, recorded here
    children = _children(project, ray)
    assert len(children) == 12
    for trial in ray.study.get_trials(deepcopy=False):
        run = children[trial_run_id(ray.study_name, trial)]
        assert run.tags["modelyard.trial_state"] == "COMPLETE"
        assert run.metrics["value"] == trial.value
    parent = get_client(project).get_run(ray.parent_run_id)
    assert parent.params["engine"] == "ray"


def test_a_second_call_resumes_the_study_and_stays_deterministic(project: Path) -> None:
    first = tune(quadratic, space=SPACE, n_trials=6, n_jobs=2, seed=5, study="resume-ray",
                 engine="ray", project=project)  # fmt: skip
    assert first.n_complete == 6
    again = tune(quadratic, space=SPACE, n_trials=10, n_jobs=2, seed=5, study="resume-ray",
                 engine="ray", project=project)  # fmt: skip
    assert again.n_complete == 10
    whole = tune(quadratic, space=SPACE, n_trials=10, n_jobs=2, seed=5, study="resume-local",
                 engine="local", project=project)  # fmt: skip
    assert [t[2] for t in _trials(again)[:6]] == [t[2] for t in _trials(whole)[:6]]


def test_pruning_is_intact_and_identical_on_ray(project: Path) -> None:
    pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    runs = {
        engine: tune(stepped, space={"x": (-3.0, 3.0)}, n_trials=12, n_jobs=2, seed=3,
                     pruner=pruner, study=f"prune-{engine}", engine=engine, project=project)
        for engine in ("local", "ray")
    }  # fmt: skip
    local, ray = runs["local"], runs["ray"]
    assert _trials(ray) == _trials(local)
    assert ray.n_pruned > 0 and ray.n_complete + ray.n_pruned == 12
    children = _children(project, ray)
    for trial in ray.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        run = children[trial_run_id(ray.study_name, trial)]
        assert run.tags["modelyard.trial_state"] == "PRUNED"
        history = get_client(project).get_metric_history(run.id, INTERMEDIATE_KEY)
        assert {m.step: m.value for m in history} == trial.intermediate_values


def _fails_above_zero(params: dict[str, Any]) -> float:
    if params["x"] > 0:
        raise ValueError(f"x={params['x']:.3f} is too big")
    return params["x"] ** 2


def test_a_failing_objective_is_raised_recorded_or_caught(project: Path) -> None:
    with pytest.raises(ValueError, match="is too big"):
        tune(_fails_above_zero, space={"x": (-1.0, 1.0)}, n_trials=20, n_jobs=2, seed=1,
             study="fail-ray", engine="ray", project=project)  # fmt: skip
    study = optuna.load_study(
        study_name="fail-ray", storage=studies.open_study_storage(_settings(project).db_url)
    )
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all("too big" in t.system_attrs["modelyard.error"] for t in failed)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # in-flight trials finished
    caught = tune(
        _fails_above_zero, space={"x": (-1.0, 1.0)}, n_trials=8, n_jobs=2, seed=1,
        study="caught-ray", engine="ray", catch=(ValueError,), project=project,
    )  # fmt: skip
    assert caught.n_complete == 8 and caught.n_failed > 0
    assert all(t.params["x"] <= 0 for t in caught.study.get_trials(states=(TrialState.COMPLETE,)))


def test_register_keeps_the_best_model_from_the_workers(project: Path) -> None:
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])

    def fit(params: dict[str, Any]) -> tuple[float, Any]:
        model = LogisticRegression(C=params["C"]).fit(frame, y)
        return model.score(frame, y), model

    result = tune(
        fit, space={"C": (1e-4, 10.0, "log")}, n_trials=6, n_jobs=2, seed=2,
        direction="maximize", register="clf-ray", study="reg-ray",
        register_kwargs={"training_frame": frame}, engine="ray", project=project,
    )  # fmt: skip
    assert result.model == "clf-ray/1"
    best = result.study.trials[result.model_trial]
    assert best.value == result.study.best_value
    loaded = modelyard.get_registry(project).load("clf-ray/1")
    expected = LogisticRegression(C=best.params["C"]).fit(frame, y).predict(frame)
    assert (loaded.predict(frame) == expected).all()


def test_the_engine_setting_is_the_default_and_bad_engines_are_named(project: Path) -> None:
    config = project / "modelyard.yaml"
    before = config.read_text()
    config.write_text(before + "engine: ray\n")
    try:
        set_client(None)
        result = tune(quadratic, space=SPACE, n_trials=3, seed=0, study="default-engine",
                      project=project)  # fmt: skip
    finally:
        config.write_text(before)
        set_client(None)
    parent = get_client(project).get_run(result.parent_run_id)
    assert parent.params["engine"] == "ray"
    with pytest.raises(InvalidInputError, match="local or ray") as refused:
        tune(quadratic, space=SPACE, n_trials=1, engine="spark", project=project)
    assert refused.value.loc == "engine"


def test_an_in_memory_store_cannot_tune_on_ray(tmp_path: Path) -> None:
    root = tmp_path / "mem"
    modelyard.init_project(root)
    settings = msgspec.structs.replace(_settings(root), db_url="sqlite://")
    from modelyard.tracking.client import TrackingClient

    client = TrackingClient(settings)
    set_client(client)
    try:
        with pytest.raises(InvalidInputError, match="in-memory") as refused:
            tune(quadratic, space=SPACE, n_trials=1, engine="ray")
        assert refused.value.loc == "engine"
    finally:
        set_client(None)
        client.close()


OBJECTIVE_FILE = """
SPACE = {"x": (-3.0, 3.0), "k": ["a", "b"]}


def bowl(params):
    return (params["x"] - 0.5) ** 2 + (params["k"] == "b")
"""


def test_the_command_line_runs_a_study_on_either_engine(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from modelyard.cli.app import main

    file = tmp_path / "objective.py"
    file.write_text(OBJECTIVE_FILE)

    def cli(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--project", str(project), "tune", "run", *args])
        out, err = capsys.readouterr()
        return code, out + err

    found = {}
    for engine in ("local", "ray"):
        code, out = cli(f"{file}:bowl", "--n-trials", "6", "--n-jobs", "2", "--seed", "4",
                        "--study", f"cli-{engine}", "--engine", engine, "--json")  # fmt: skip
        assert code == 0, out
        found[engine] = json.loads(out)
        assert found[engine]["engine"] == engine and found[engine]["complete"] == 6
    assert found["ray"]["best_params"] == found["local"]["best_params"]
    assert found["ray"]["best_value"] == found["local"]["best_value"]
    for args, expected in (
        ((f"{file}:bowl", "--engine", "spark"), "local or ray"),
        ((f"{file}:nothing",), "Expected a function 'nothing'"),
        (("no_such_module_h2:f",), "Cannot import 'no_such_module_h2'"),
        (("bowl",), "FILE.py:NAME or module:NAME"),
        ((f"{file}:bowl", "--space", "OTHER"), "Expected a dict 'OTHER'"),
    ):
        code, out = cli(*args)
        assert code == 2, out
        assert expected in out and "Traceback" not in out, out


def test_the_same_trials_on_postgresql(
    pg_database: str, tmp_path: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study in PostgreSQL's ``modelyard_optuna`` schema, shared by driver and tasks."""
    root = tmp_path / "pg-project"
    modelyard.init_project(root)
    config = root / "modelyard.yaml"
    config.write_text(config.read_text() + f"\nray:\n  address: {ray_address}\n")
    monkeypatch.setenv("MODELYARD_DB_URL", pg_database)
    try:
        runs = {
            engine: tune(quadratic, space=SPACE, n_trials=8, n_jobs=2, seed=13,
                         study=f"pg-{engine}", engine=engine, project=root)
            for engine in ("local", "ray")
        }  # fmt: skip
        assert get_client(root).settings.db_url == pg_database
        assert _trials(runs["ray"]) == _trials(runs["local"])
        assert len(_children(root, runs["ray"])) == 8
    finally:
        client = get_client(root)
        set_client(None)
        client.close()
        studies.close_study_storages()  # before the test database is dropped


def test_an_objective_module_edited_between_studies_runs_as_it_is_now(project: Path) -> None:
    """Ray reuses its worker processes: a worker that imported the objective's module for
    one study must not run that old code for the next study after the file changed."""
    import importlib

    module_file = project / "edited_objective.py"
    module_file.write_text("def value(params):\n    return 1.0\n")
    sys.path.insert(0, str(project))
    try:
        module = importlib.import_module("edited_objective")
        first = tune(module.value, space=SPACE, n_trials=6, n_jobs=2, seed=1,
                     study="edited-1", engine="ray", project=project)  # fmt: skip
        assert {t.value for t in first.study.trials} == {1.0}
        # a different size too: a stale .pyc of the same size and second is not read
        module_file.write_text("def value(params):\n    return 22.0 + params['d']\n")
        importlib.invalidate_caches()
        module = importlib.reload(module)
        second = tune(module.value, space=SPACE, n_trials=6, n_jobs=2, seed=1,
                      study="edited-2", engine="ray", project=project)  # fmt: skip
        assert {t.value for t in second.study.trials} == {
            22.0 + t.params["d"] for t in second.study.trials
        }
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("edited_objective", None)
