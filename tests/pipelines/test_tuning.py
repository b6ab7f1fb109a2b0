"""``modelyard.tune``: studies beside the metadata store, trials as child runs, parallel
processes, resume after SIGKILL, pruning, seeded determinism, registering the best model.

Every case runs on SQLite and PostgreSQL (``db_url``) unless it says why not; oracles are
Optuna itself (a plain in-memory study, Optuna's own storage reading our study back) and
the tracking store's own reads.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

import modelyard
from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError
from modelyard.pipelines import studies
from modelyard.pipelines.space import parse_space
from modelyard.pipelines.trials import INTERMEDIATE_KEY, trial_run_id
from modelyard.pipelines.tuning import tune
from modelyard.store.database import open_database
from modelyard.store.schema import HEAD_REVISION
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.fluent import get_client, set_client

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKER = Path(__file__).with_name("tune_worker.py")
SPACE = {"x": (-3.0, 3.0), "d": (2, 10), "k": ["a", "b"]}


def quadratic(params: dict[str, Any]) -> float:
    return (params["x"] - 1.0) ** 2 + params["d"] + (params["k"] == "a")


@pytest.fixture
def project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project whose store is ``db_url``, as the fluent API and subprocesses find it."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_") and "_TEST_" not in k]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    yield settings.project_dir
    client = get_client(settings.project_dir)
    set_client(None)
    client.close()
    studies.close_study_storages()  # before the test database is dropped


def tune_client(project: Path) -> TrackingClient:
    return get_client(project)


def tune_children(project: Path, parent: str) -> list[Any]:
    client = tune_client(project)
    client.flush()
    return [r for r in client.search_runs(max_results=5000) if r.parent_run_id == parent]


def tune_study(db_url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=studies.open_study_storage(db_url))


# -- where the study lives --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_our_alembic_version_stays_at_head_and_optunas_storage_reads_the_study(
    project: Path, db_url: str, kind: str
) -> None:
    result = tune(
        quadratic, space=SPACE, n_trials=4, seed=1, study="apart", storage=kind, project=project
    )
    assert result.n_complete == 4
    engine = create_engine(db_url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert versions == [HEAD_REVISION]
    db = open_database(db_url)  # our migrations see nothing to do, and nothing foreign
    assert db.revision() == HEAD_REVISION
    db.close()
    location = studies.study_location(db_url)
    if kind == "rdb":  # Optuna's own storage, opened afresh, reads the study back
        options = (
            {}
            if location.startswith("sqlite")
            else {"connect_args": {"options": f"-csearch_path={studies.PG_SCHEMA}"}}
        )
        storage = RDBStorage(location, engine_kwargs=options)
        theirs = optuna.load_study(study_name="apart", storage=storage)
        assert [t.params for t in theirs.trials] == [t.params for t in result.study.trials]
        assert storage.get_current_version() == storage.get_head_version()
        storage.engine.dispose()
    else:  # a fresh journal replays to the same trials
        backend = studies.DatabaseJournal(db_url)
        theirs = optuna.load_study(
            study_name="apart", storage=optuna.storages.JournalStorage(backend)
        )
        assert [t.params for t in theirs.trials] == [t.params for t in result.study.trials]
        backend.close()
    # and a second study in the same place works after our store was reopened
    again = tune(
        quadratic, space=SPACE, n_trials=2, seed=2, study="apart-2", storage=kind, project=project
    )
    assert again.n_complete == 2


def test_sqlite_studies_live_in_a_sibling_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"
    assert studies.study_location(url) == f"sqlite:///{tmp_path / 'meta' / 'modelyard.optuna.db'}"
    assert studies.study_location("sqlite://") == "sqlite://"
    pg = "postgresql+psycopg://u:secret@h:5432/db"
    assert studies.study_location(pg) == pg


# -- trials as child runs -----------------------------------------------------------------


def test_every_trial_is_a_child_run_with_its_params_and_value(project: Path, db_url: str) -> None:
    result = tune(quadratic, space=SPACE, n_trials=12, seed=3, study="runs", project=project)
    trials = result.study.trials
    children = {r.tags["modelyard.trial"]: r for r in tune_children(project, result.parent_run_id)}
    assert sorted(children) == sorted(str(t.number) for t in trials)
    for trial in trials:
        run = children[str(trial.number)]
        assert run.id == trial_run_id("runs", trial)
        assert run.status.value == "FINISHED"
        assert run.params == {k: str(v) for k, v in trial.params.items()}
        assert run.metrics == {"value": trial.value}
        assert run.tags["modelyard.study"] == "runs"
        assert run.tags["modelyard.trial_state"] == "COMPLETE"
        assert run.experiment == "runs"
    parent = tune_client(project).get_run(result.parent_run_id)
    assert parent.status.value == "FINISHED"
    assert parent.metrics["best_value"] == result.best_value
    assert parent.tags["modelyard.best_run"] == result.best_run_id
    assert result.best_value == min(t.value for t in trials)


def test_trials_are_written_in_a_few_transactions_not_one_per_trial(
    project: Path, db_url: str
) -> None:
    from modelyard.tracking.store import SQLTrackingStore

    calls: list[int] = []
    original = SQLTrackingStore.insert_ended_runs

    def counting(self: SQLTrackingStore, *args: Any, **kwargs: Any) -> list[str]:
        calls.append(len(args[1]))
        return original(self, *args, **kwargs)

    SQLTrackingStore.insert_ended_runs = counting  # type: ignore[method-assign]
    try:
        result = tune(quadratic, space=SPACE, n_trials=30, seed=4, study="few", project=project)
    finally:
        SQLTrackingStore.insert_ended_runs = original  # type: ignore[method-assign]
    assert result.n_complete == 30
    written = [n for n in calls if n]
    assert sum(written) >= 30 and len(written) < 30  # batched (at most one per second)


def test_inside_a_run_the_trials_are_its_children(project: Path) -> None:
    with modelyard.start_run(experiment="outer", project=project) as run:
        result = tune(quadratic, space=SPACE, n_trials=5, seed=5, study="nested")
    assert result.parent_run_id == run.id
    children = tune_children(project, run.id)
    assert len(children) == 5 and {c.experiment for c in children} == {"outer"}


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_inside_a_pipeline_step_the_trials_are_the_steps_children(
    project: Path, settings: Settings, executor: str
) -> None:
    from tests.pipelines.tune_flows import tuned

    run = tuned.run({"n": 5}, settings=settings, executor=executor)
    step_run = run.steps["search"].run_id
    children = tune_children(project, step_run)
    assert len(children) == 5
    assert {c.tags["modelyard.study"] for c in children} == {"in-step"}


# -- seeded determinism -------------------------------------------------------------------


@hsettings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**31 - 1), n_params=st.integers(1, 3))
def test_same_seed_same_params_as_plain_optuna(project: Path, seed: int, n_params: int) -> None:
    space = dict(
        list({"x": (-2.0, 2.0), "lr": (1e-3, 0.3, "log"), "k": ["a", "b", "c"]}.items())[:n_params]
    )

    def objective(params: dict[str, Any]) -> float:
        return sum(v if isinstance(v, float) else len(str(v)) for v in params.values())

    ours = tune(
        objective, space=space, n_trials=12, seed=seed, study=uuid.uuid4().hex, project=project
    )
    oracle = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

    def plain(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, entry in space.items():
            if isinstance(entry, list):
                params[name] = trial.suggest_categorical(name, entry)
            else:
                params[name] = trial.suggest_float(name, entry[0], entry[1], log=len(entry) == 3)
        return objective(params)

    oracle.optimize(plain, n_trials=12)
    assert [t.params for t in ours.study.trials] == [t.params for t in oracle.trials]


# -- the space ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        (0, 1, "log"),
        (3, 1),
        "x",
        [],
        [object()],
        (1, 2, 3, 4),
        (math.nan, 1.0),
        (True, 3),
        (0.0, 1.0, -0.5),
        (1.0, math.inf),
        {"low": 1},
    ],
)
def test_a_bad_space_entry_names_its_key(project: Path, entry: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        tune(quadratic, space={"x": (0.0, 1.0), "bad_key": entry}, n_trials=1, project=project)
    assert caught.value.loc == "space.bad_key"
    assert "bad_key" in str(caught.value)
    assert (
        optuna.get_all_study_names(studies.open_study_storage(os.environ["MODELYARD_DB_URL"])) == []
    )


numbers = st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
)


@hsettings(max_examples=200, deadline=None)
@given(low=numbers, high=numbers, option=st.one_of(st.none(), st.just("log"), numbers))
def test_ranges_parse_as_optuna_builds_them_or_name_the_key(
    low: float, high: float, option: Any
) -> None:
    entry = (low, high) if option is None else (low, high, option)
    log = option == "log"
    step = None if option is None or log else option
    integral = isinstance(low, int) and isinstance(high, int)
    expected: Any
    # the oracle: Optuna's own constructors, plus our rules: low <= high, step > 0, and no
    # range that Optuna would silently narrow (it warns: the step does not divide it)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            if low > high or (step is not None and step <= 0):
                raise ValueError("refused")
            if integral and (step is None or isinstance(step, int)):
                expected = IntDistribution(low, high, log=log, step=step or 1)  # type: ignore[arg-type]
            else:
                expected = FloatDistribution(
                    float(low), float(high), log=log, step=None if step is None else float(step)
                )
        except (ValueError, ArithmeticError, UserWarning):
            expected = None
    if expected is None:
        with pytest.raises(InvalidInputError) as caught:
            parse_space({"p": entry})
        assert caught.value.loc == "space.p"
    else:
        assert parse_space({"p": entry}) == {"p": expected}


@given(
    choices=st.lists(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
        min_size=1,
        max_size=6,
        unique=True,
    )
)
def test_lists_are_choices(choices: list[Any]) -> None:
    assert parse_space({"c": choices}) == {"c": CategoricalDistribution(choices)}


def test_the_objective_gets_the_trial_when_it_asks_for_it_and_a_trial_without_space(
    project: Path,
) -> None:
    seen: list[Any] = []

    def with_trial(params: dict[str, Any], trial: optuna.Trial) -> float:
        seen.append((dict(params), trial.number))
        return params["x"]

    tune(with_trial, space={"x": (0.0, 1.0)}, n_trials=2, study="kw", project=project)
    assert [n for _, n in seen] == [0, 1]

    def raw(trial: optuna.Trial) -> float:
        return trial.suggest_float("y", 0.0, 1.0)

    result = tune(raw, n_trials=3, project=project)
    assert result.study_name.startswith("raw-") and list(result.best_params) == ["y"]


# -- pruning ------------------------------------------------------------------------------


def test_pruned_trials_are_killed_runs_with_their_intermediate_values(
    project: Path, db_url: str
) -> None:
    def learning(params: dict[str, Any], trial: optuna.Trial) -> float:
        value = 0.0
        for step in range(6):
            value = abs(params["x"]) + 1.0 / (step + 1)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    result = tune(
        learning,
        space={"x": (-3.0, 3.0)},
        n_trials=20,
        seed=6,
        pruner=pruner,
        study="pruning",
        project=project,
    )
    assert result.n_pruned > 0 and result.n_complete == 20 - result.n_pruned
    client = tune_client(project)
    by_number = {t.number: t for t in result.study.trials}
    children = tune_children(project, result.parent_run_id)
    assert len(children) == 20
    for run in children:
        trial = by_number[int(run.tags["modelyard.trial"])]
        pruned = trial.state is TrialState.PRUNED
        assert run.status.value == ("KILLED" if pruned else "FINISHED")
        assert run.tags["modelyard.trial_state"] == trial.state.name
        history = client.get_metric_history(run.id, INTERMEDIATE_KEY)
        assert {m.step: m.value for m in history} == trial.intermediate_values
        assert ("value" in run.metrics) is (not pruned)


def test_a_failing_objective_is_a_failed_run_and_raises(project: Path) -> None:
    def broken(params: dict[str, Any]) -> float:
        if params["x"] > 0.5:
            raise ZeroDivisionError("boom")
        return params["x"]

    result = tune(
        broken,
        space={"x": (0.0, 1.0)},
        n_trials=10,
        seed=7,
        catch=(ZeroDivisionError,),
        study="failing",
        project=project,
    )
    failed = [r for r in tune_children(project, result.parent_run_id) if r.status.value == "FAILED"]
    assert len(failed) == result.n_failed > 0
    assert all("boom" in r.tags["modelyard.error"] for r in failed)
    with pytest.raises(ZeroDivisionError):
        tune(lambda p: 1 / 0, space={"x": (0.0, 1.0)}, n_trials=3, study="raising", project=project)
    runs = tune_client(project).search_runs("raising")
    assert {r.status.value for r in runs} == {"FAILED"} and len(runs) == 2  # parent + trial


# -- parallel and resumed studies ---------------------------------------------------------


def tune_spawn(
    project: Path, study: str, n_trials: int, sleep_s: float, *gate: str
) -> subprocess.Popen[str]:
    """``tune_worker.py`` in its own process; ``gate``: (folder, peers) to start together."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(project), study, str(n_trials), str(sleep_s), *gate],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tune_check_union(project: Path, db_url: str, study: str, n: int, workers: int) -> None:
    trials = tune_study(db_url, study).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicates
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n <= len(done) <= n + workers - 1
    runs = [
        r
        for r in tune_client(project).search_runs(max_results=5000)
        if r.tags.get("modelyard.study") == study and "modelyard.trial" in r.tags
    ]
    finished = [t.number for t in trials if t.state.is_finished()]  # failed ones too
    assert sorted(int(r.tags["modelyard.trial"]) for r in runs) == sorted(finished)


@pytest.mark.slow
def test_two_processes_on_one_study_share_its_trials(
    project: Path, db_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [tune_spawn(project, "shared", 16, 0.05, str(gate), "2") for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert out.startswith("DONE")
    tune_check_union(project, db_url, "shared", 16, workers=2)
    owners = {t.system_attrs[studies.OWNER_ATTR] for t in tune_study(db_url, "shared").trials}
    assert len(owners) == 2  # both processes ran trials


@pytest.mark.slow
def test_n_jobs_runs_worker_processes_on_one_study(project: Path, db_url: str) -> None:
    def slow(params: dict[str, Any]) -> float:
        time.sleep(0.02)
        return quadratic(params)

    result = tune(slow, space=SPACE, n_trials=16, n_jobs=2, study="pool", project=project)
    tune_check_union(project, db_url, "pool", 16, workers=2)
    owners = {t.system_attrs[studies.OWNER_ATTR] for t in result.study.trials}
    assert len(owners) == 2 and f":{os.getpid()}" not in "".join(owners)


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_to_n_trials(project: Path, db_url: str) -> None:
    proc = tune_spawn(project, "killed", 12, 1.0)  # long trials: the kill lands in one
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = tune_study(db_url, "killed").get_trials(deepcopy=False)
        except KeyError:  # not created yet
            continue
        if (
            sum(t.state is TrialState.COMPLETE for t in trials) >= 2
            and trials[-1].state is TrialState.RUNNING
        ):
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes its pipes
    running = [
        t.number
        for t in tune_study(db_url, "killed").get_trials(deepcopy=False)
        if t.state is TrialState.RUNNING
    ]
    assert running  # killed mid-trial
    result = tune(
        lambda p: (p["x"] - 1.0) ** 2 + p["k"],
        space={"x": (-3.0, 3.0), "k": [0, 1]},
        n_trials=12,
        study="killed",
        project=project,
    )
    assert result.reaped == tuple(running)
    assert result.n_complete == 12  # the dead trial does not count
    states = {t.number: t.state for t in result.study.trials}
    assert all(states[n] is TrialState.FAIL for n in running)
    tune_check_union(project, db_url, "killed", 12, workers=1)  # every trial has its run


# -- registering the best model -----------------------------------------------------------


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_register_logs_the_best_trials_model_in_its_run(project: Path, n_jobs: int) -> None:
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])

    def fit(params: dict[str, Any]) -> tuple[float, Any]:
        model = LogisticRegression(C=params["C"]).fit(frame, y)
        return model.score(frame, y), model

    result = tune(
        fit,
        space={"C": (1e-4, 10.0, "log")},
        n_trials=6,
        n_jobs=n_jobs,
        direction="maximize",
        register="clf",
        study=f"reg{n_jobs}",
        register_kwargs={"training_frame": frame},
        project=project,
    )
    assert result.model == "clf/1"
    registry = modelyard.get_registry(project)
    version = registry.get_version("clf/1")
    assert version.run_id == trial_run_id(
        result.study_name, result.study.trials[result.model_trial]
    )
    best = result.study.best_trial
    assert result.study.trials[result.model_trial].value == best.value
    loaded = registry.load("clf/1")
    C = result.study.trials[result.model_trial].params["C"]
    assert (loaded.predict(frame) == LogisticRegression(C=C).fit(frame, y).predict(frame)).all()


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"timeout": -1}, "timeout"),
        ({"direction": "up"}, "direction"),
        ({"seed": 1, "sampler": optuna.samplers.RandomSampler()}, "seed"),
        ({"storage": "redis"}, "storage"),
        ({"metric": "bad\nkey"}, "metrics"),
    ],
)
def test_bad_arguments_name_the_field(project: Path, kwargs: dict[str, Any], loc: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        tune(quadratic, space=SPACE, project=project, **{"n_trials": 2, **kwargs})
    assert caught.value.loc == loc


def test_an_objective_returning_no_number_is_refused(project: Path) -> None:
    with pytest.raises(InvalidInputError, match="objective to return a number"):
        tune(lambda p: "high", space=SPACE, n_trials=2, study="words", project=project)


def test_a_study_keeps_its_direction(project: Path) -> None:
    tune(quadratic, space=SPACE, n_trials=1, study="dir", project=project)
    with pytest.raises(ConflictError, match="minimize"):
        tune(quadratic, space=SPACE, n_trials=2, study="dir", direction="maximize", project=project)


def test_import_modelyard_does_not_import_optuna() -> None:
    code = (
        "import sys, modelyard; assert 'optuna' not in sys.modules; modelyard.tune; "
        "assert 'optuna' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_n_jobs_needs_a_store_other_processes_can_open(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_DB_URL", "sqlite://")
    set_client(None)
    with pytest.raises(InvalidInputError) as caught:
        tune(quadratic, space=SPACE, n_trials=2, n_jobs=2, study="mem", project=project)
    assert caught.value.loc == "n_jobs"
    result = tune(quadratic, space=SPACE, n_trials=3, study="mem", project=project)
    assert result.n_complete == 3  # one process: an in-memory study works


# -- the journal: every process replays the same gap-free order ---------------------------


def tune_replay(backend: studies.DatabaseJournal, ops: list[int], tag: str) -> list[Any]:
    """Run ``ops`` as JournalStorage would (append k>0 records, or read when k == 0),
    advancing the read position by what each read returned; everything it was given."""
    seen: list[Any] = []
    for i, k in enumerate(ops):
        if k:
            backend.append_logs([{"by": tag, "i": i, "j": j} for j in range(k)])
        seen.extend(backend.read_logs(len(seen)))  # JournalStorage reads after each write
    return seen


@hsettings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plans=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=25), min_size=2, max_size=3),
    fresh=st.sampled_from([0.0, 0.01, 1.0]),
)
def test_concurrent_journals_never_skip_reorder_or_repeat_a_record(
    db_url: str, plans: list[list[int]], fresh: float
) -> None:
    import threading

    backends = [studies.DatabaseJournal(db_url, fresh_s=fresh) for _ in plans]
    first = studies.DatabaseJournal(db_url, fresh_s=0)
    offset = len(list(first.read_logs(0)))  # earlier examples' records
    first.close()
    results: dict[int, list[Any]] = {}

    def work(n: int) -> None:
        results[n] = tune_replay(backends[n], plans[n], f"w{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        tune_check_journals(db_url, plans, fresh, backends, results, offset)
    finally:
        for backend in backends:
            backend.close()


def tune_check_journals(
    db_url: str,
    plans: list[list[int]],
    fresh: float,
    backends: list[studies.DatabaseJournal],
    results: dict[int, list[Any]],
    offset: int,
) -> None:
    truth_reader = studies.DatabaseJournal(db_url, fresh_s=0)
    truth = list(truth_reader.read_logs(0))[offset:]
    truth_reader.close()
    # every record once, each writer's in its own order
    for n, plan in enumerate(plans):
        mine = [r for r in truth if r["by"] == f"w{n}"]
        assert mine == [
            {"by": f"w{n}", "i": i, "j": j} for i, k in enumerate(plan) for j in range(k)
        ]
    assert len(truth) == sum(map(sum, plans))
    for n, backend in enumerate(backends):
        # what a process was given is a prefix of the one true order (it may lag, never
        # skip, reorder or repeat), and it holds at least everything it wrote itself
        got = results[n][offset:] if offset else results[n]
        assert got == truth[: len(got)]
        assert sum(plans[n]) <= sum(r["by"] == f"w{n}" for r in got)
        rest = list(backend.read_logs(offset + len(got))) if fresh == 0 else []
        assert got + rest == truth[: len(got) + len(rest)]


def test_timeout_ends_the_search_and_no_complete_trial_means_no_best(project: Path) -> None:
    def slow(params: dict[str, Any]) -> float:
        time.sleep(0.2)
        return params["x"]

    start = time.monotonic()
    result = tune(
        slow, space={"x": (0.0, 1.0)}, n_trials=1000, timeout=0.5, study="timed", project=project
    )
    assert 1 <= result.n_complete < 10 and time.monotonic() - start < 10

    def pruned(params: dict[str, Any]) -> float:
        raise optuna.TrialPruned()

    empty = tune(pruned, space={"x": (0.0, 1.0)}, n_trials=2, study="none", project=project)
    assert (empty.best_value, empty.best_trial, empty.best_run_id) == (None, None, None)
    assert empty.best_params == {} and empty.n_pruned == 2
