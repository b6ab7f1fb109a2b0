"""The model registry on every metadata backend: versions, refs, aliases, audit, lineage.

Each test runs on SQLite and on PostgreSQL (the ``settings`` fixture). Concurrency is
tested with real interpreters racing on one store; a stateful Hypothesis test checks
the registry against a plain-Python model of it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sklearn.linear_model import LogisticRegression

import modelyard as my
from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import (
    ArtifactIntegrityError,
    ConflictError,
    InvalidInputError,
    ModelyardError,
    NotFoundError,
)
from modelyard.models.manifest import MANIFEST_NAME, decode_manifest, encode_manifest
from modelyard.models.package import read_manifest, save_package
from modelyard.registry import ModelRef, ModelRegistry, ModelVersion
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import open_database
from modelyard.tracking.client import TrackingClient

_CHILD_TIMEOUT_S = 120  # a hung child fails the test instead of hanging the suite
SEED = 20240601


# -- data and helpers ----------------------------------------------------------------------


def _frame(seed: int = SEED, rows: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"tenure": rng.normal(size=rows), "spend": rng.normal(size=rows)})
    labels = (frame["tenure"] + 0.5 * frame["spend"] > 0).astype(int).to_numpy()
    return frame, labels


def _model(seed: int = SEED, c: float = 1.0) -> tuple[LogisticRegression, pd.DataFrame]:
    frame, labels = _frame(seed)
    return LogisticRegression(C=c).fit(frame, labels), frame


@pytest.fixture
def registry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    reg = ModelRegistry(settings)
    yield reg
    reg.close()


def _log(registry: ModelRegistry, name: str | None = "churn", c: float = 1.0) -> Any:
    model, frame = _model(c=c)
    return registry.log_model(model, name=name, training_frame=frame)


def _object_path(artifacts: str, sha256: str) -> Path:
    """Where a local artifact store keeps the bytes of ``sha256`` (its documented layout)."""
    return Path(artifacts) / "objects" / sha256[:2] / sha256[2:]


def _history(registry: ModelRegistry, name: str) -> list[tuple[Any, ...]]:
    return [
        (e.action, e.alias, e.version_from, e.version_to, e.actor, e.reason)
        for e in registry.history(name)
    ]


# -- logging and versions -------------------------------------------------------------------


def test_log_model_without_a_name_only_packages(registry: ModelRegistry) -> None:
    model, frame = _model()
    logged = registry.log_model(model, training_frame=frame)
    assert (logged.name, logged.version, logged.ref) == (None, None, None)
    assert len(logged.package_id) == 64
    assert registry.list_models() == []
    loaded = registry.load_package(logged.package_id)
    assert loaded.predict(frame).tolist() == model.predict(frame).tolist()
    with pytest.raises(NotFoundError, match=f"No package with id '{'f' * 64}'"):
        registry.load_package("f" * 64)


def test_log_model_with_a_name_registers_consecutive_versions(registry: ModelRegistry) -> None:
    logged = [_log(registry, c=c) for c in (0.1, 1.0, 10.0)]
    assert [(x.name, x.version, x.ref) for x in logged] == [
        ("churn", 1, "churn/1"),
        ("churn", 2, "churn/2"),
        ("churn", 3, "churn/3"),
    ]
    versions = registry.list_versions("churn")
    assert [v.version for v in versions] == [3, 2, 1]  # newest first
    assert [v.package_id for v in versions] == [x.package_id for x in reversed(logged)]
    assert {(v.status, v.created_by, v.run_id) for v in versions} == {("active", "tester", None)}
    [model] = registry.list_models()
    assert (model.name, model.latest_version, model.aliases) == ("churn", 3, {})
    other = _log(registry, name="fraud")
    assert (other.name, other.version) == ("fraud", 1)  # numbering is per model
    assert [m.name for m in registry.list_models()] == ["churn", "fraud"]


def test_versions_are_immutable(registry: ModelRegistry) -> None:
    first = _log(registry)
    before = registry.get_version("churn/1")
    assert before.package_id == first.package_id
    for c in (2.0, 3.0):
        _log(registry, c=c)
    registry.set_alias("churn/2", "production")
    registry.archive("churn/3")
    after = registry.get_version("churn/1")
    assert (after.package_id, after.created_at, after.created_by) == (
        before.package_id,
        before.created_at,
        before.created_by,
    )
    assert registry.manifest("churn/1") == first.manifest
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.package_id = "0" * 64  # type: ignore[misc]


# -- refs -----------------------------------------------------------------------------------


def test_refs_by_version_alias_latest_and_bare_name(registry: ModelRegistry) -> None:
    packages = [_log(registry, c=c).package_id for c in (0.5, 1.0, 2.0)]
    registry.set_alias("churn/2", "production")

    def resolved(ref: str) -> tuple[int, str]:
        version = registry.get_version(ref)
        return version.version, version.package_id

    assert resolved("churn/3") == (3, packages[2])
    assert resolved("churn/1") == (1, packages[0])
    assert resolved("churn@production") == (2, packages[1])
    assert resolved("churn@latest") == (3, packages[2])
    assert resolved("churn") == (3, packages[2])  # a bare name means @latest
    assert resolved(" churn/1 ") == (1, packages[0])
    assert registry.get_version(ModelRef("churn", version=2)).aliases == ["production"]

    registry.archive("churn/3")
    assert resolved("churn@latest") == (2, packages[1])  # latest skips archived versions
    assert resolved("churn") == (2, packages[1])
    archived = registry.get_version("churn/3")  # still reachable by number
    assert archived.status == "archived"
    [model] = registry.list_models()
    assert model.latest_version == 2  # as churn@latest says


def test_latest_of_a_model_with_only_archived_versions(registry: ModelRegistry) -> None:
    _log(registry)
    registry.archive("churn/1")
    with pytest.raises(NotFoundError, match="Model 'churn' has no active version"):
        registry.get_version("churn@latest")
    assert registry.list_models()[0].latest_version is None


def test_unknown_model_suggests_a_close_name(registry: ModelRegistry) -> None:
    _log(registry, name="churn")
    _log(registry, name="fraud")
    expected = r"No model named 'chrun'\. Did you mean 'churn'\? Known models: churn, fraud\."
    for call in (
        lambda: registry.get_version("chrun/1"),
        lambda: registry.get_version("chrun@production"),
        lambda: registry.get_version("chrun"),
        lambda: registry.list_versions("chrun"),
        lambda: registry.history("chrun"),
        lambda: registry.set_alias("chrun/1", "production"),
        lambda: registry.remove_alias("chrun", "production"),
        lambda: registry.rollback("chrun", "production"),
    ):
        with pytest.raises(NotFoundError, match=expected):
            call()
    with pytest.raises(NotFoundError, match=r"No model named 'zzz'\. Known models: churn, fraud"):
        registry.get_version("zzz")


def test_unknown_version_lists_the_versions(registry: ModelRegistry) -> None:
    for c in (1.0, 2.0):
        _log(registry, c=c)
    with pytest.raises(NotFoundError, match=r"Model 'churn' has no version 7; versions: 1, 2$"):
        registry.get_version("churn/7")
    with pytest.raises(NotFoundError, match="has no version 0; versions: 1, 2"):
        registry.set_alias("churn/0", "production")


def test_unknown_alias_lists_the_aliases(registry: ModelRegistry) -> None:
    _log(registry)
    with pytest.raises(NotFoundError, match=r"has no alias 'production'; aliases: none$"):
        registry.get_version("churn@production")
    registry.set_alias("churn/1", "staging")
    registry.set_alias("churn/1", "canary")
    with pytest.raises(
        NotFoundError, match=r"^Model 'churn' has no alias 'prod'; aliases: canary, staging$"
    ):
        registry.get_version("churn@prod")


@pytest.mark.parametrize("ref", ["churn/three", "churn@", "/3", "churn/1/2", "a@b@c", ""])
def test_malformed_refs_name_the_ref(ref: str) -> None:
    with pytest.raises(InvalidInputError, match=r"Expected a model ref like name/3.* - at ref$"):
        ModelRef.parse(ref)


# -- aliases --------------------------------------------------------------------------------


def test_alias_set_and_move_return_the_previous_holder(registry: ModelRegistry) -> None:
    for c in (1.0, 2.0, 3.0):
        _log(registry, c=c)
    assert registry.set_alias("churn/1", "production") is None
    assert registry.set_alias("churn/3", "production") == 1
    assert registry.set_alias("churn@production", "staging") is None  # by alias: v3
    assert registry.set_alias("churn/2", "production") == 3
    assert registry.get_version("churn/2").aliases == ["production"]
    assert registry.get_version("churn/3").aliases == ["staging"]
    assert registry.get_version("churn/1").aliases == []
    assert registry.list_models()[0].aliases == {"production": 2, "staging": 3}
    assert registry.remove_alias("churn", "staging") == 3
    assert registry.list_models()[0].aliases == {"production": 2}
    with pytest.raises(NotFoundError, match="Model 'churn' has no alias 'staging'"):
        registry.remove_alias("churn", "staging")


def test_latest_cannot_be_set(registry: ModelRegistry) -> None:
    _log(registry)
    with pytest.raises(InvalidInputError, match=r"'latest' .* cannot be set - at alias$"):
        registry.set_alias("churn/1", "latest")
    with pytest.raises(InvalidInputError, match=r" - at alias$"):
        registry.rollback("churn", "latest")
    assert registry.history("churn")[-1].action == "register"  # nothing recorded


@pytest.mark.parametrize("alias", ["1prod", "has space", "prod/1", "a@b", "", "x" * 65, "-x"])
def test_bad_alias_names_the_field(registry: ModelRegistry, alias: str) -> None:
    _log(registry)
    with pytest.raises(InvalidInputError, match=rf"got {alias!r} - at alias$"):
        registry.set_alias("churn/1", alias)


@pytest.mark.parametrize("name", ["has space", "-lead", "a/b", "a@b", "", "x" * 256, "é"])
def test_bad_model_names_name_the_field(registry: ModelRegistry, name: str) -> None:
    model, frame = _model()
    with pytest.raises(InvalidInputError, match=r" - at name$"):
        registry.log_model(model, name=name, training_frame=frame)
    logged = registry.log_model(model, training_frame=frame)
    with pytest.raises(InvalidInputError, match=r" - at name$"):
        registry.register(logged.package_id, name)
    assert registry.list_models() == []


def test_an_archived_version_can_hold_no_alias(registry: ModelRegistry) -> None:
    for c in (1.0, 2.0):
        _log(registry, c=c)
    registry.archive("churn/1", reason="superseded")
    with pytest.raises(ConflictError, match=r"churn/1 is archived and can hold no alias"):
        registry.set_alias("churn/1", "production")
    assert registry.list_models()[0].aliases == {}


def test_a_version_holding_aliases_cannot_be_archived(registry: ModelRegistry) -> None:
    _log(registry)
    registry.set_alias("churn/1", "production")
    registry.set_alias("churn/1", "canary")
    with pytest.raises(ConflictError, match=r"churn/1 holds the alias\(es\) canary, production;"):
        registry.archive("churn/1")
    with pytest.raises(ConflictError, match="holds the alias"):
        registry.archive("churn@production")
    assert registry.get_version("churn/1").status == "active"
    registry.remove_alias("churn", "production")
    registry.remove_alias("churn", "canary")
    assert registry.archive("churn/1").status == "archived"
    assert registry.archive("churn/1").status == "archived"  # again: nothing changes
    assert [e.action for e in registry.history("churn")].count("archive") == 1


# -- rollback -------------------------------------------------------------------------------


def test_rollback_points_the_alias_at_the_previous_holder(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for c in (1.0, 2.0, 3.0):
        _log(registry, c=c)
    registry.set_alias("churn/1", "production")
    registry.set_alias("churn/3", "production", reason="better auc")
    monkeypatch.setenv("MODELYARD_ACTOR", "oncall")
    back = registry.rollback("churn", "production")
    assert isinstance(back, ModelVersion)
    assert (back.version, back.aliases) == (1, ["production"])
    assert registry.get_version("churn@production").version == 1
    assert _history(registry, "churn")[-1] == (
        "rollback",
        "production",
        3,
        1,
        "oncall",
        "rollback from 3",
    )
    # rolling back a rollback goes forward again, with the reason given
    again = registry.rollback("churn", "production", reason="false alarm")
    assert again.version == 3
    assert _history(registry, "churn")[-1] == (
        "rollback",
        "production",
        1,
        3,
        "oncall",
        "false alarm",
    )


def test_rollback_without_a_previous_holder_is_a_conflict(registry: ModelRegistry) -> None:
    for c in (1.0, 2.0):
        _log(registry, c=c)
    with pytest.raises(NotFoundError, match=r"no alias 'production'; aliases: none"):
        registry.rollback("churn", "production")
    registry.set_alias("churn/1", "production")
    with pytest.raises(ConflictError, match="churn@production has no previous holder"):
        registry.rollback("churn", "production")
    # removed and set again: the history of the old holder does not count
    registry.set_alias("churn/2", "production")
    registry.remove_alias("churn", "production")
    registry.set_alias("churn/2", "production")
    with pytest.raises(ConflictError, match="no previous holder"):
        registry.rollback("churn", "production")
    assert registry.get_version("churn@production").version == 2


def test_rollback_to_an_archived_version_is_refused(registry: ModelRegistry) -> None:
    for c in (1.0, 2.0):
        _log(registry, c=c)
    registry.set_alias("churn/1", "production")
    registry.set_alias("churn/2", "production")
    registry.archive("churn/1")
    with pytest.raises(ConflictError, match="churn/1 is archived and can hold no alias"):
        registry.rollback("churn", "production")
    assert registry.get_version("churn@production").version == 2
    assert registry.history("churn")[-1].action == "archive"


# -- history --------------------------------------------------------------------------------


def test_history_lists_every_change_in_order(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_ACTOR", "alice")
    for c in (1.0, 2.0, 3.0):
        _log(registry, c=c)
    registry.set_alias("churn/1", "production", reason="first")
    monkeypatch.setenv("MODELYARD_ACTOR", "bob")
    registry.set_alias("churn/2", "production", reason="retrained")
    registry.set_alias("churn/2", "staging")
    registry.rollback("churn", "production", reason="drift")
    monkeypatch.setenv("MODELYARD_ACTOR", "carol")
    registry.remove_alias("churn", "staging", reason="cleanup")
    registry.archive("churn/3", reason="bad data")
    assert _history(registry, "churn") == [
        ("register", None, None, 1, "alice", None),
        ("register", None, None, 2, "alice", None),
        ("register", None, None, 3, "alice", None),
        ("alias", "production", None, 1, "alice", "first"),
        ("alias", "production", 1, 2, "bob", "retrained"),
        ("alias", "staging", None, 2, "bob", None),
        ("rollback", "production", 2, 1, "bob", "drift"),
        ("unalias", "staging", 2, None, "carol", "cleanup"),
        ("archive", None, 3, None, "carol", "bad data"),
    ]
    entries = registry.history("churn")
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert {e.name for e in entries} == {"churn"}
    assert registry.get_version("churn/1").created_by == "alice"
    assert entries[0].to_dict()["actor"] == "alice"


def test_actor_defaults_to_the_login_name(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import getpass

    monkeypatch.delenv("MODELYARD_ACTOR")
    _log(registry)
    assert registry.history("churn")[0].actor == getpass.getuser()


# -- register from a run ---------------------------------------------------------------------


def test_register_a_runs_last_model(settings: Settings, registry: ModelRegistry) -> None:
    tracking = TrackingClient(settings)
    try:
        with tracking.start_run("churn") as run:
            first, frame = _model(c=0.1)
            second, _ = _model(c=10.0)
            one = registry.log_model(first, training_frame=frame, run_id=run.id)
            two = registry.log_model(second, training_frame=frame, run_id=run.id)
        assert one.package_id != two.package_id
        by_id = registry.register(run.id, "churn", description="from the run")
        assert (by_id.version, by_id.package_id, by_id.run_id) == (1, two.package_id, run.id)
        assert by_id.description == "from the run"
        by_prefix = registry.register(run.id[:8], "churn")
        assert (by_prefix.version, by_prefix.package_id) == (2, two.package_id)
        by_package = registry.register(one.package_id, "churn-first")
        assert (by_package.package_id, by_package.run_id) == (one.package_id, run.id)

        with tracking.start_run("churn") as empty:
            pass
        with pytest.raises(NotFoundError, match=rf"Run {empty.id} logged no model"):
            registry.register(empty.id, "churn")
        with pytest.raises(NotFoundError, match="No run or package with id 'nope'"):
            registry.register("nope", "churn")
        with pytest.raises(NotFoundError, match="No run or package with id"):
            registry.register("0" * 64, "churn")
        assert [v.version for v in registry.list_versions("churn")] == [2, 1]
    finally:
        tracking.close()


def test_log_model_in_a_fluent_run_records_lineage(settings: Settings) -> None:
    model, frame = _model()
    holdout, _ = _frame(seed=SEED + 1, rows=30)

    def train() -> tuple[Any, Any, list[str]]:
        client = TrackingClient(settings)
        my.set_client(client)
        try:
            with my.start_run(experiment="churn", name="fit") as run:
                train_input = my.log_input(frame, name="train")
                valid_input = my.log_input(holdout, name="valid", context="validation")
                my.log_metric("auc", 0.5)
                my.log_metric("auc", 0.91)  # the latest value is the model's metric
                my.log_metric("loss", 0.2)
                logged = my.log_model(model, name="churn", training_frame=frame)
            return run.id, logged, [train_input.digest, valid_input.digest]
        finally:
            client.close()

    # a copy of the context: the fluent client and registry do not leak into other tests
    run_id, logged, digests = contextvars.copy_context().run(train)
    lineage = logged.manifest.lineage
    assert (lineage.run_id, lineage.experiment) == (run_id, "churn")
    assert [(d.name, d.context, d.digest) for d in lineage.datasets] == [
        ("train", "training", digests[0]),
        ("valid", "validation", digests[1]),
    ]
    assert logged.manifest.metrics == {"auc": 0.91, "loss": 0.2}
    with ModelRegistry(settings) as registry:
        version = registry.get_version("churn/1")
        assert version.run_id == run_id
        assert registry.manifest("churn@latest").lineage == lineage
        assert registry.register(run_id, "again").package_id == logged.package_id


def test_log_model_outside_a_run_has_no_lineage(registry: ModelRegistry) -> None:
    logged = _log(registry)
    assert logged.manifest.lineage.run_id is None
    assert logged.manifest.lineage.datasets == []
    assert logged.manifest.metrics == {}
    assert _log(registry, c=2.0).manifest.lineage == logged.manifest.lineage


# -- verified loading -----------------------------------------------------------------------


def test_load_predicts_like_the_model(registry: ModelRegistry) -> None:
    model, frame = _model()
    registry.log_model(model, name="churn", training_frame=frame)
    registry.set_alias("churn/1", "production")
    loaded = registry.load("churn@production")
    assert loaded.id == registry.get_version("churn/1").package_id
    assert loaded.predict(frame).tolist() == model.predict(frame).tolist()
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))


def test_load_refuses_a_tampered_manifest(settings: Settings, registry: ModelRegistry) -> None:
    logged = _log(registry)
    path = _object_path(settings.artifacts, logged.package_id)
    data = path.read_bytes()
    assert decode_manifest(data) == logged.manifest
    path.write_bytes(data.replace(b'"classification"', b'"regression"'))
    with pytest.raises(ArtifactIntegrityError, match=rf"Artifact '{MANIFEST_NAME}' is corrupted"):
        registry.load("churn/1")
    with pytest.raises(ArtifactIntegrityError, match=logged.package_id):
        registry.manifest("churn@latest")


def test_a_manifest_that_differs_from_the_record_is_refused(
    settings: Settings, registry: ModelRegistry
) -> None:
    first = _log(registry, c=1.0)
    second = _log(registry, name=None, c=5.0)
    assert first.package_id != second.package_id
    # the store holds the second package's manifest where the first's should be
    other = _object_path(settings.artifacts, second.package_id).read_bytes()
    _object_path(settings.artifacts, first.package_id).write_bytes(other)
    with pytest.raises(ArtifactIntegrityError, match="expected sha256 " + first.package_id):
        registry.load("churn/1")
    # the layer below refuses too: a manifest is checked against the registry's record
    with pytest.raises(
        ArtifactIntegrityError,
        match=rf"does not match the registry's record: expected sha256 {first.package_id}, "
        rf"got {second.package_id}\. Refusing to load",
    ):
        decode_manifest(other, expected_sha256=first.package_id)
    assert decode_manifest(other, expected_sha256=second.package_id) == second.manifest


def test_set_package_repoints_a_version_only_at_a_verified_package(
    settings: Settings, registry: ModelRegistry
) -> None:
    first = _log(registry, c=1.0)
    rewritten = _log(registry, name=None, c=1.5)
    bogus = _log(registry, name=None, c=7.0)

    with pytest.raises(NotFoundError):
        registry.set_package("churn/1", "a" * 64, reason="optimize")
    # a manifest in the store that does not hash to its id is refused
    bogus_path = _object_path(settings.artifacts, bogus.package_id)
    bogus_path.write_bytes(encode_manifest(first.manifest)[0])
    with pytest.raises(ArtifactIntegrityError, match=bogus.package_id):
        registry.set_package("churn/1", bogus.package_id, reason="optimize")
    # a manifest that is in the store but was never recorded as a package is refused
    unrecorded = save_package(_model(c=3.0)[0], registry.artifacts, training_frame=_model()[1])
    with pytest.raises(NotFoundError, match=f"No package with id '{unrecorded.id}'"):
        registry.set_package("churn/1", unrecorded.id, reason="optimize")
    assert registry.get_version("churn/1").package_id == first.package_id

    moved = registry.set_package("churn/1", rewritten.package_id, reason="optimize")
    assert moved.package_id == rewritten.package_id
    assert _history(registry, "churn")[-1] == ("repackage", None, 1, 1, "tester", "optimize")
    assert registry.load("churn/1").id == rewritten.package_id


def test_tampered_model_file_is_refused_by_name(
    settings: Settings, registry: ModelRegistry
) -> None:
    logged = _log(registry)
    entry = logged.manifest.file(logged.manifest.model_file)
    _object_path(settings.artifacts, entry.sha256).write_bytes(b"not a model")
    with pytest.raises(ArtifactIntegrityError, match=r"Artifact 'model\.skops' is corrupted"):
        registry.load("churn/1")


# -- concurrency: real processes racing on one store -------------------------------------------


def _project(root: Path, db_url: str) -> Path:
    init_project(root)
    (root / "modelyard.yaml").write_text(yaml.safe_dump({"name": root.name, "db_url": db_url}))
    return root


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(extra)
    return env


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill a child the test left running (a failed assertion) and wait for it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _race(script: str, project: Path, jobs: list[list[str]]) -> list[list[str]]:
    """Run one child per job, release them together, and return each one's stdout lines."""
    with ExitStack() as stack:
        procs = []
        for index, args in enumerate(jobs):
            proc = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(script), str(project), *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=_child_env(MODELYARD_ACTOR=f"worker-{index}"),
                )
            )
            stack.callback(_reap, proc)
            procs.append(proc)
        for proc in procs:  # each child is up, with its store open
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "READY\n", line + proc.communicate(timeout=30)[1]
        for proc in procs:  # the barrier: release them all at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=_CHILD_TIMEOUT_S)
            assert proc.returncode == 0, err
            outputs.append(out.splitlines())
    return outputs


_MOVER = """
import sys
from modelyard import ModelRegistry, load_settings

project, moves = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
registry = ModelRegistry(load_settings(project))
registry.get_version("churn/1")  # connected, and the store is migrated
print("READY", flush=True)
sys.stdin.readline()
for version in moves:
    previous = registry.set_alias(f"churn/{version}", "production")
    print("MOVED", previous, version, flush=True)
registry.close()
"""

_ROLLER = """
import sys
from modelyard import ModelRegistry, load_settings

project, moves = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
registry = ModelRegistry(load_settings(project))
registry.get_version("churn/1")
print("READY", flush=True)
sys.stdin.readline()
for version in moves:
    if version:
        registry.set_alias(f"churn/{version}", "production")
    else:
        registry.rollback("churn", "production")
registry.close()
"""

_REGISTRAR = """
import sys
from modelyard import ModelRegistry, load_settings

project, package, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = ModelRegistry(load_settings(project))
print("READY", flush=True)
sys.stdin.readline()
for _ in range(count):
    print("VERSION", registry.register(package, "race").version, flush=True)
registry.close()
"""


@pytest.fixture
def shared_project(tmp_path: Path, db_url: str) -> Path:
    return _project(tmp_path / "shared", db_url)


def _seeded(project: Path, versions: int) -> ModelRegistry:
    registry = ModelRegistry(load_settings(project, environ={}))
    package = _log(registry, name=None).package_id
    for _ in range(versions):
        registry.register(package, "churn")
    return registry


def test_processes_moving_one_alias_are_serialised(shared_project: Path) -> None:
    workers, moves, versions = 4, 10, 6
    registry = _seeded(shared_project, versions)
    try:
        plans = [
            [1 + (w * 7 + m * (w + 1)) % versions for m in range(moves)] for w in range(workers)
        ]
        outputs = _race(_MOVER, shared_project, [[",".join(map(str, p))] for p in plans])

        records = [e for e in registry.history("churn") if e.alias == "production"]
        assert len(records) == workers * moves
        assert {e.action for e in records} == {"alias"}
        assert records[0].version_from is None
        for before, after in itertools.pairwise(records):
            assert after.version_from == before.version_to  # each move saw the one before
        final = registry.get_version("churn@production")
        assert final.version == records[-1].version_to
        assert registry.list_models()[0].aliases == {"production": final.version}
        held = [v.version for v in registry.list_versions("churn") if v.aliases]
        assert held == [final.version]
        for worker, (plan, lines) in enumerate(zip(plans, outputs, strict=True)):
            mine = [e for e in records if e.actor == f"worker-{worker}"]
            assert [e.version_to for e in mine] == plan
            # what each set_alias returned is what the audit recorded as its "from"
            returned = [None if w[1] == "None" else int(w[1]) for w in map(str.split, lines)]
            assert returned == [e.version_from for e in mine]
    finally:
        registry.close()


def test_processes_racing_moves_and_rollbacks_undo_the_right_move(shared_project: Path) -> None:
    workers, versions = 4, 5
    registry = _seeded(shared_project, versions)
    try:
        registry.set_alias("churn/1", "production")
        registry.set_alias("churn/2", "production")  # from now on there is a previous holder
        # 0 means "roll back"; the others move the alias to that version
        plans = [
            [1 + (w + m) % versions if m % 2 else 0 for m in range(10)] for w in range(workers)
        ]
        _race(_ROLLER, shared_project, [[",".join(map(str, p))] for p in plans])

        records = [e for e in registry.history("churn") if e.alias == "production"]
        assert len(records) == 2 + workers * 10
        assert sum(e.action == "rollback" for e in records) == workers * 5
        for before, after in itertools.pairwise(records):
            assert after.version_from == before.version_to
            if after.action == "rollback":
                # a rollback undoes exactly the move recorded just before it
                assert after.version_to == before.version_from
        assert registry.get_version("churn@production").version == records[-1].version_to
    finally:
        registry.close()


def test_processes_registering_versions_get_consecutive_numbers(shared_project: Path) -> None:
    workers, count = 4, 10
    registry = ModelRegistry(load_settings(shared_project, environ={}))
    try:
        package = _log(registry, name=None).package_id
        # the model does not exist yet: the first registrations also race to create it
        outputs = _race(_REGISTRAR, shared_project, [[package, str(count)]] * workers)
        got = [[int(line.split()[1]) for line in lines] for lines in outputs]
        assert sorted(v for mine in got for v in mine) == list(range(1, workers * count + 1))
        for mine in got:
            assert mine == sorted(mine)
        assert [v.version for v in registry.list_versions("race")] == list(
            range(workers * count, 0, -1)
        )
        registered = [e for e in registry.history("race") if e.action == "register"]
        assert [e.version_to for e in registered] == list(range(1, workers * count + 1))
        for worker, mine in enumerate(got):
            assert [e.version_to for e in registered if e.actor == f"worker-{worker}"] == mine
    finally:
        registry.close()


# -- a stateful model of the registry ------------------------------------------------------


class _Registry(RuleBasedStateMachine):
    """The registry against a plain-Python model: versions, aliases, last moves, audit.

    Most rules draw what they act on from the model (an existing version, a held alias),
    so that most steps change something; ``poke`` tries what must fail.
    """

    names = ("churn", "fraud")
    aliases = ("production", "staging")

    def __init__(self, package_id: str, artifacts: ArtifactStore) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory(prefix="modelyard-stateful-")
        root = Path(self.folder.name)
        init_project(root)
        self.db = open_database(f"sqlite:///{root / 'meta.db'}")
        settings = load_settings(root, environ={})
        self.registry = ModelRegistry(settings, db=self.db, artifacts=artifacts)
        self.package_id = package_id
        self.registry.record_package(package_id, read_manifest(artifacts, package_id))
        # the model of the registry
        self.status: dict[str, dict[int, str]] = {}  # name -> version -> active|archived
        self.held: dict[str, dict[str, int]] = {}  # name -> alias -> version
        # name -> alias -> (from, to) of the alias' last alias/rollback record
        self.last_move: dict[str, dict[str, tuple[int | None, int]]] = {}
        self.changes = 0

    def teardown(self) -> None:
        self.registry.close()
        self.db.close()
        self.folder.cleanup()

    # -- what the model expects of each change ---------------------------------------------

    def _set_error(self, name: str, version: int) -> type[ModelyardError] | None:
        if version not in self.status.get(name, {}):
            return NotFoundError
        return ConflictError if self.status[name][version] == "archived" else None

    def _rollback_error(self, name: str, alias: str) -> type[ModelyardError] | None:
        last = self.last_move.get(name, {}).get(alias)
        if name not in self.status or alias not in self.held.get(name, {}):
            return NotFoundError
        if last is None or last[0] is None or self.status[name][last[0]] == "archived":
            return ConflictError
        return None

    def _archive_error(self, name: str, version: int) -> type[ModelyardError] | None:
        if version not in self.status.get(name, {}):
            return NotFoundError
        return ConflictError if version in self.held.get(name, {}).values() else None

    # -- doing it on both --------------------------------------------------------------------

    def _apply(self, error: type[ModelyardError] | None, call: Any) -> Any:
        if error is not None:
            with pytest.raises(error):
                call()
            return None
        result = call()
        self.changes += 1
        return result

    def _set_alias(self, name: str, alias: str, version: int) -> None:
        error = self._set_error(name, version)
        previous = self._apply(error, lambda: self.registry.set_alias(f"{name}/{version}", alias))
        if error is None:
            held = self.held.setdefault(name, {})
            assert previous == held.get(alias)
            self.last_move.setdefault(name, {})[alias] = (held.get(alias), version)
            held[alias] = version

    def _rollback(self, name: str, alias: str) -> None:
        error = self._rollback_error(name, alias)
        back = self._apply(error, lambda: self.registry.rollback(name, alias))
        if error is None:
            current, previous = self.held[name][alias], self.last_move[name][alias][0]
            assert previous is not None and back.version == previous
            self.last_move[name][alias] = (current, previous)
            self.held[name][alias] = previous

    def _unalias(self, name: str, alias: str) -> None:
        error = None if alias in self.held.get(name, {}) else NotFoundError
        previous = self._apply(error, lambda: self.registry.remove_alias(name, alias))
        if error is None:
            assert previous == self.held[name].pop(alias)

    def _archive(self, name: str, version: int) -> None:
        error = self._archive_error(name, version)
        if error is None and self.status[name][version] == "archived":
            self.registry.archive(f"{name}/{version}")  # again: no change, nothing audited
            return
        self._apply(error, lambda: self.registry.archive(f"{name}/{version}"))
        if error is None:
            self.status[name][version] = "archived"

    def _version(self, data: st.DataObject) -> tuple[str, int]:
        name = data.draw(st.sampled_from(sorted(self.status)), label="name")
        return name, data.draw(st.sampled_from(sorted(self.status[name])), label="version")

    def _held(self, data: st.DataObject) -> tuple[str, str]:
        pairs = sorted((n, a) for n, held in self.held.items() for a in held)
        return data.draw(st.sampled_from(pairs), label="alias")

    # -- rules ---------------------------------------------------------------------------------

    @rule(name=st.sampled_from(names))
    def register(self, name: str) -> None:
        version = self._apply(None, lambda: self.registry.register(self.package_id, name))
        expected = len(self.status.get(name, {})) + 1
        assert (version.version, version.status) == (expected, "active")
        self.status.setdefault(name, {})[expected] = "active"

    @precondition(lambda self: bool(self.status))
    @rule(data=st.data(), alias=st.sampled_from(aliases))
    def set_alias(self, data: st.DataObject, alias: str) -> None:
        name, version = self._version(data)
        self._set_alias(name, alias, version)

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        self._rollback(*self._held(data))

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def unalias(self, data: st.DataObject) -> None:
        self._unalias(*self._held(data))

    @precondition(lambda self: bool(self.status))
    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        self._archive(*self._version(data))

    @rule(
        action=st.sampled_from(["set_alias", "rollback", "unalias", "archive"]),
        name=st.sampled_from((*names, "ghost")),
        alias=st.sampled_from(aliases),
        version=st.integers(1, 8),
    )
    def poke(self, action: str, name: str, alias: str, version: int) -> None:
        """Any change to anything, most of which must be refused."""
        if action == "set_alias":
            self._set_alias(name, alias, version)
        elif action == "rollback":
            self._rollback(name, alias)
        elif action == "unalias":
            self._unalias(name, alias)
        else:
            self._archive(name, version)

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def aliases_point_at_one_active_version(self) -> None:
        stored = {m.name: m.aliases for m in self.registry.list_models()}
        assert set(stored) == set(self.status)
        for name, held in stored.items():
            assert held == self.held.get(name, {})
            versions = self.registry.list_versions(name)
            assert {v.version: v.status for v in versions} == self.status[name]
            for alias, version in held.items():
                assert [v.version for v in versions if alias in v.aliases] == [version]
                assert self.status[name][version] == "active"

    @invariant()
    def latest_is_the_newest_active_version(self) -> None:
        for name, versions in self.status.items():
            active = [v for v, s in versions.items() if s == "active"]
            if active:
                assert self.registry.get_version(f"{name}@latest").version == max(active)
            else:
                with pytest.raises(NotFoundError, match="no active version"):
                    self.registry.get_version(name)

    @invariant()
    def every_change_is_audited_once(self) -> None:
        audited = sum(len(self.registry.history(name)) for name in self.status)
        assert audited == self.changes


def test_registry_matches_a_model_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite only: every example opens a fresh store
    monkeypatch.setenv("MODELYARD_ACTOR", "machine")
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    model, frame = _model()
    package_id = save_package(model, artifacts, training_frame=frame).id
    run_state_machine_as_test(
        lambda: _Registry(package_id, artifacts),
        settings=hyp_settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
