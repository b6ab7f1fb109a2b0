"""The agent's retrain stage on real pipeline runs (SQLite; the tag query on PostgreSQL too).

A tiny project: pipeline ``retrain`` makes rows from a seed, fits a LogisticRegression
and registers it as ``toy`` (optionally moving ``production`` itself, or dying right
after registering: a process killed between the registration and the step's record).
Killed runs are real: a forked child runs ``run_retrain`` and is SIGKILLed (by the
step, or by the ``retrain-mid`` / ``retrain-done`` checkpoints); the parent then runs
the same action again and must reach what an uncrashed run reaches.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import select

from modelyard.agent.faults import CRASH_ENV
from modelyard.agent.records import Action
from modelyard.agent.retrain import ACTION_TAG, pipeline_runs_of, retrain_params, run_retrain
from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.pipelines import load_pipelines, run_pipeline
from modelyard.pipelines.runner import load_pipeline_run
from modelyard.registry.client import ModelRegistry
from modelyard.store.schema import run_tags

PIPELINES = """
import os
import signal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import modelyard
from modelyard import get_registry, pipeline, step


@step
def rows(seed: int, window_start: str | None, window_end: str | None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=200), "x2": rng.normal(size=200)})
    frame["y"] = (frame.x1 + 0.5 * frame.x2 + rng.normal(size=200) > 0).astype(int)
    return frame


@step
def train(frame: pd.DataFrame, c: float, promote: bool) -> dict[str, str]:
    model = LogisticRegression(C=c).fit(frame[["x1", "x2"]], frame.y)
    logged = modelyard.log_model(model, name="toy", training_frame=frame[["x1", "x2"]])
    if os.environ.get("H2_DIE_AFTER_REGISTER"):
        os.kill(os.getpid(), signal.SIGKILL)
    if promote:
        get_registry().set_alias(str(logged.ref), "production", reason="the pipeline promotes")
    return {"ref": str(logged.ref)}


@step
def check(result: dict[str, str], fail: bool) -> dict[str, str]:
    if fail:
        raise RuntimeError("the evaluation step broke")
    return result


@pipeline
def retrain(
    seed: int = 0,
    c: float = 1.0,
    promote: bool = False,
    fail: bool = False,
    window_start: str | None = None,
    window_end: str | None = None,
) -> None:
    frame = rows(seed, window_start=window_start, window_end=window_end)
    check(train(frame, c=c, promote=promote), fail=fail)


@pipeline
def start_only(seed: int = 0, window_start: str | None = None) -> None:
    rows(seed, window_start=window_start, window_end=None)


@pipeline
def no_window(seed: int = 0) -> None:
    rows(seed, window_start=None, window_end=None)
"""

END = datetime(2013, 6, 1, tzinfo=UTC)
START = END - timedelta(days=90)


def us(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def make_project(root: Path, db_url: str) -> Settings:
    init_project(root)
    (root / CONFIG_FILE).write_text(f"db_url: {db_url}\npipelines:\n  executor: inline\n")
    (root / "pipelines.py").write_text(textwrap.dedent(PIPELINES))
    return load_settings(root, environ={})


def champion_run(settings: Settings, **params: Any) -> int:
    """Run the pipeline by hand with promote=True: v1 in production, like a user's first run."""
    run_pipeline(
        load_pipelines(settings)["retrain"], {"promote": True, **params}, settings=settings
    )
    with ModelRegistry(settings) as registry:
        return registry.get_version("toy@production").version


def make_action(**fields: Any) -> Action:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "model": "toy",
        "kind": "retrain",
        "state": "training",
        "incident_id": 1,
        "incident_opened_us": us(END),
        "rule": "toy-auc",
        "champion_version": 1,
        "candidate_version": None,
        "pipeline": "retrain",
        "params": {"seed": 7},
        "window_start_us": us(START),
        "window_end_us": us(END),
        "pipeline_run_id": None,
        "gate_evaluation_id": None,
        "canary_started_us": None,
        "decision": None,
        "reason": None,
        "detail": {},
        "created_us": us(END),
        "updated_us": us(END),
        "recorded_us": us(END),
        "created_by": "test",
    }
    base.update(fields)
    return Action(**base)


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("base") / "p"
    settings = make_project(root, f"sqlite:///{root / 'meta.db'}")
    assert champion_run(settings) == 1
    return settings


@pytest.fixture
def project(base_project: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A private copy of the project with v1 in production (its store, artifacts, cache)."""
    root = tmp_path / "p"
    shutil.copytree(base_project.project_dir, root)
    config = root / CONFIG_FILE
    config.write_text(config.read_text().replace(str(base_project.project_dir), str(root)))
    yield load_settings(root, environ={})


def versions(settings: Settings) -> dict[int, str]:
    with ModelRegistry(settings) as registry:
        return {v.version: v.status for v in registry.list_versions("toy")}


def production(settings: Settings) -> int:
    with ModelRegistry(settings) as registry:
        return registry.get_version("toy@production").version


def killed_child(settings: Settings, action: Action, env: dict[str, str]) -> None:
    """``run_retrain`` in a forked child with ``env``; assert it died of SIGKILL."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.environ.update(env)
            run_retrain(settings, action)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


# -- window params -----------------------------------------------------------------------


def test_window_params_are_iso_utc_and_only_those_declared(project: Settings) -> None:
    action = make_action()
    params = retrain_params(project, action)
    assert params == {
        "seed": 7,
        "window_start": "2013-03-03T00:00:00+00:00",
        "window_end": "2013-06-01T00:00:00+00:00",
    }
    assert retrain_params(project, make_action(pipeline="start_only")) == {
        "seed": 7,
        "window_start": "2013-03-03T00:00:00+00:00",
    }
    no_window = make_action(window_start_us=None, window_end_us=None, pipeline="no_window")
    assert retrain_params(project, no_window) == {"seed": 7}


def test_window_without_declared_params_names_the_setting(project: Settings) -> None:
    with pytest.raises(InvalidInputError) as info:
        retrain_params(project, make_action(pipeline="no_window"))
    assert info.value.loc == "action.retrain.window"
    assert "no_window" in str(info.value) and "window_start" in str(info.value)
    with pytest.raises(InvalidInputError) as twice:
        retrain_params(project, make_action(params={"window_end": "2013-01-01"}))
    assert twice.value.loc == "action.retrain.params.window_end"
    with pytest.raises(InvalidInputError) as unknown:
        run_retrain(project, make_action(pipeline="retrian"))
    assert unknown.value.loc == "action.retrain.pipeline" and "retrain" in str(unknown.value)
    assert versions(project) == {1: "active"}  # nothing ran


@pytest.fixture(scope="module")
def generated_project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("generated")
    return make_project(root / "p", f"sqlite:///{root / 'meta.db'}")


@hyp_settings(max_examples=15, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=4_102_444_800_000_000),
    length=st.integers(min_value=1, max_value=10**13),
)
def test_window_params_round_trip_to_the_microsecond(
    generated_project: Settings, start: int, length: int
) -> None:
    """Generated windows: each parameter parses back to exactly the action's instant."""
    action = make_action(window_start_us=start, window_end_us=start + length)
    params = retrain_params(generated_project, action)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for key, value in (("window_start", start), ("window_end", start + length)):
        parsed = datetime.fromisoformat(params[key])
        assert parsed.utcoffset() == timedelta(0)
        assert (parsed - epoch) // timedelta(microseconds=1) == value


# -- the candidate -----------------------------------------------------------------------


def test_candidate_found_tagged_and_found_again_from_the_cache(project: Settings) -> None:
    action = make_action()
    first = run_retrain(project, action)
    assert first.error is None and first.candidate_version == 2
    assert (first.orphans, first.restored_production) == ([], False)
    assert production(project) == 1  # a retrain never moves production
    run = load_pipeline_run(first.pipeline_run_id, settings=project)
    assert run.params["window_end"] == "2013-06-01T00:00:00+00:00"
    assert run.params["seed"] == 7
    # killed after the pipeline finished: the re-run is answered by the cache
    again = run_retrain(project, action)
    assert again.error is None and again.candidate_version == 2
    assert again.pipeline_run_id != first.pipeline_run_id
    cached = load_pipeline_run(again.pipeline_run_id, settings=project)
    assert {s.status for s in cached.steps.values()} == {"cached"}
    assert runs_of(project, action.id) == [first.pipeline_run_id, cached.run_id]
    assert versions(project) == {1: "active", 2: "active"}


def runs_of(settings: Settings, action_id: str) -> list[str]:
    with ModelRegistry(settings) as registry:
        return pipeline_runs_of(registry.db, action_id)


def tags_of(settings: Settings, run_id: str) -> dict[str, str]:
    with ModelRegistry(settings) as registry, registry.db.read() as conn:
        rows = conn.execute(
            select(run_tags.c.key, run_tags.c.value).where(run_tags.c.run_id == run_id)
        ).all()
    return {r.key: r.value for r in rows}


@pytest.mark.parametrize(
    "env",
    [{"H2_DIE_AFTER_REGISTER": "1"}, {CRASH_ENV: "retrain-mid"}, {CRASH_ENV: "retrain-done"}],
    ids=["in-step-after-register", "retrain-mid", "retrain-done"],
)
def test_a_killed_retrain_run_again_reaches_one_active_candidate(
    project: Settings, env: dict[str, str]
) -> None:
    action = make_action()
    killed_child(project, action, env)
    done = run_retrain(project, action)
    assert done.error is None
    if "H2_DIE_AFTER_REGISTER" in env:
        # v2 was registered by the step that died before its record: an orphan
        assert (done.candidate_version, done.orphans) == (3, [2])
        assert versions(project) == {1: "active", 2: "archived", 3: "active"}
        with ModelRegistry(project) as registry:
            archived = [e for e in registry.history("toy") if e.action == "archive"]
        assert len(archived) == 1 and archived[0].version_from == 2
        assert f"agent: action {action.id}" in (archived[0].reason or "")
    else:
        # the train step finished before the kill: the re-run reuses it from the cache
        assert (done.candidate_version, done.orphans) == (2, [])
        assert versions(project) == {1: "active", 2: "active"}
    assert production(project) == 1
    # and once more (killed before the caller recorded it): the same answer, no new version
    before = versions(project)
    assert run_retrain(project, action) == dataclasses.replace(
        done, pipeline_run_id=runs_of(project, action.id)[-1]
    )
    assert versions(project) == before


def test_production_moved_by_the_pipeline_is_restored_and_audited(project: Settings) -> None:
    action = make_action(params={"seed": 7, "promote": True})
    done = run_retrain(project, action)
    assert (done.candidate_version, done.restored_production, done.error) == (2, True, None)
    assert production(project) == 1
    with ModelRegistry(project) as registry:
        moves = [e for e in registry.history("toy") if e.alias == "production"]
    assert [(e.version_from, e.version_to) for e in moves[-2:]] == [(1, 2), (2, 1)]
    assert (moves[-1].reason or "").startswith(f"agent: action {action.id} restores production")
    # run again (killed after the restore): nothing moves, the restore is reported again
    again = run_retrain(project, action)
    assert (again.candidate_version, again.restored_production) == (2, True)
    with ModelRegistry(project) as registry:
        assert len([e for e in registry.history("toy") if e.alias == "production"]) == len(moves)
    other = run_retrain(project, make_action(params={"seed": 8}))
    assert other.restored_production is False  # another action's restore is not this one's


def test_failed_step_is_an_error_and_its_version_is_archived(project: Settings) -> None:
    action = make_action(params={"seed": 7, "fail": True})
    done = run_retrain(project, action)
    assert done.candidate_version is None
    assert done.error is not None and "the evaluation step broke" in done.error
    assert "\n" not in done.error
    assert done.orphans == [2]
    assert versions(project) == {1: "active", 2: "archived"}
    assert production(project) == 1


def test_candidate_equal_to_the_champion_is_an_error(project: Settings) -> None:
    # the champion's own run had these params: the retrain is answered from its cache
    action = make_action(params={"promote": True}, window_start_us=None, window_end_us=None)
    done = run_retrain(project, action)
    assert done.candidate_version is None
    assert done.error is not None and "is the champion" in done.error
    assert versions(project) == {1: "active"} and production(project) == 1


def test_run_pipeline_records_the_callers_tags_and_refuses_its_own(project: Settings) -> None:
    flow = load_pipelines(project)["no_window"]
    run = run_pipeline(flow, {"seed": 3}, settings=project, tags={ACTION_TAG: "a1", "team": "x"})
    tags = tags_of(project, run.run_id)
    assert tags[ACTION_TAG] == "a1" and tags["team"] == "x"
    assert tags["modelyard.pipeline"] == "no_window"
    for bad, loc in (
        ({"modelyard.pipeline": "x"}, "tags.modelyard.pipeline"),
        ({"k": 1}, "tags.k"),
        ({"": "v"}, "tags"),
    ):
        with pytest.raises(InvalidInputError) as info:
            run_pipeline(flow, {}, settings=project, tags=bad)  # type: ignore[arg-type]
        assert info.value.loc == loc


def test_the_tag_query_on_postgresql(tmp_path: Path, pg_database: str) -> None:
    settings = make_project(tmp_path / "pg", pg_database)
    assert champion_run(settings) == 1
    action = make_action(params={"seed": 7, "promote": True})
    done = run_retrain(settings, action)
    assert (done.candidate_version, done.restored_production) == (2, True)
    assert runs_of(settings, action.id) == [done.pipeline_run_id]
    assert production(settings) == 1
