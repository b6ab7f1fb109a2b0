"""Traffic policies in the metadata store: versioned, compare-and-set, audited, validated.

Each test runs on SQLite and on PostgreSQL (the ``settings`` fixture's ``db_url``).
Racing writers are real threads, each on its own connection, released together.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from modelyard.agent.canary import check_traffic, served_policy
from modelyard.config import ServingSettings, Settings, TrafficSettings
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError, NotFoundError
from modelyard.registry import ModelRegistry
from modelyard.registry.traffic import (
    MIGRATED_REASON,
    TrafficPolicies,
    encode_policy,
    legacy_traffic_file,
)
from modelyard.ui.deployment_data import deployments_index

NAME = "churn"
_RACERS = 8


def _frame(columns: tuple[str, ...] = ("tenure", "spend"), rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({c: rng.normal(size=rows) for c in columns})


def _log(registry: ModelRegistry, columns: tuple[str, ...] = ("tenure", "spend")) -> int:
    frame = _frame(columns)
    labels = (frame.iloc[:, 0] > 0).astype(int).to_numpy()
    logged = registry.log_model(
        LogisticRegression().fit(frame, labels), name=NAME, training_frame=frame
    )
    assert logged.version is not None
    return int(logged.version)


@pytest.fixture
def registry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    reg = ModelRegistry(settings)
    first = _log(reg)
    reg.set_alias(f"{NAME}/{first}", "production")
    second = _log(reg)
    reg.set_alias(f"{NAME}/{second}", "canary")
    yield reg
    reg.close()


@pytest.fixture
def policies(registry: ModelRegistry) -> TrafficPolicies:
    return TrafficPolicies(registry)


CANARY = TrafficSettings(canary="canary", canary_weight=0.25, sticky_key="user")


# -- set, get, audit -----------------------------------------------------------------------


def test_set_policy_versions_and_audits_each_change(policies: TrafficPolicies) -> None:
    assert policies.get_policy(NAME) is None
    assert policies.history(NAME) == []
    first = policies.set_policy(NAME, CANARY, "alice", "start the canary", now=1000)
    assert (first.version, first.policy, first.updated_by, first.updated_at) == (
        1,
        CANARY,
        "alice",
        1000,
    )
    widened = TrafficSettings(canary="canary", canary_weight=0.5, shadow="canary")
    second = policies.set_policy(NAME, widened, "bob", "widen", expected_version=1, now=2000)
    assert second.version == 2
    assert policies.get_policy(NAME) == second
    # the same policy again changes nothing: no version, no audit row
    assert policies.set_policy(NAME, widened, "carol", "again") == second
    changes = [
        (c.version, c.policy_from, c.policy_to, c.actor, c.reason, c.at)
        for c in policies.history(NAME)
    ]
    assert changes == [
        (1, None, CANARY, "alice", "start the canary", 1000),
        (2, CANARY, widened, "bob", "widen", 2000),
    ]
    assert policies.versions([NAME, "other"]) == {NAME: 2}
    assert policies.list_policies() == [second]


def test_the_actor_defaults_to_modelyard_actor(policies: TrafficPolicies) -> None:
    stored = policies.set_policy(NAME, CANARY)
    assert stored.updated_by == "tester"
    assert policies.history(NAME)[0].actor == "tester"


def test_compare_and_set_refuses_a_stale_version_and_changes_nothing(
    policies: TrafficPolicies,
) -> None:
    with pytest.raises(ConflictError, match="at version 0"):
        policies.set_policy(NAME, CANARY, expected_version=1)
    policies.set_policy(NAME, CANARY, "alice", expected_version=0)
    with pytest.raises(ConflictError, match=r"at version 1 \(by alice\), not the expected 0"):
        policies.set_policy(NAME, TrafficSettings(), expected_version=0)
    with pytest.raises(InvalidInputError, match="expected_version") as bad:
        policies.set_policy(NAME, TrafficSettings(), expected_version=-1)
    assert bad.value.loc == "expected_version"
    stored = policies.get_policy(NAME)
    assert stored is not None and (stored.version, stored.policy) == (1, CANARY)
    assert len(policies.history(NAME)) == 1


def test_effective_is_the_stored_policy_else_the_configured_one(
    settings: Settings, registry: ModelRegistry
) -> None:
    configured = TrafficSettings(canary="canary", canary_weight=0.1)
    with_yaml = _with_traffic(settings, {NAME: configured})
    policies = TrafficPolicies(ModelRegistry(with_yaml, db=registry.db))
    assert policies.effective(NAME) == configured
    assert policies.effective("unknown") is None
    policies.set_policy(NAME, CANARY)
    assert policies.effective(NAME) == CANARY


def _with_traffic(settings: Settings, traffic: dict[str, TrafficSettings]) -> Settings:
    serving: ServingSettings = msgspec.structs.replace(settings.serving, traffic=traffic)
    return msgspec.structs.replace(settings, serving=serving)


# -- validation against the registry ----------------------------------------------------


@pytest.mark.parametrize("part", ["primary", "canary", "shadow"])
def test_an_alias_no_version_holds_is_refused_naming_the_field(
    policies: TrafficPolicies, part: str
) -> None:
    extra = {"canary_weight": 0.5} if part == "canary" else {}
    with pytest.raises(InvalidInputError) as refused:
        policies.set_policy(NAME, TrafficSettings(**{part: "stagin"}, **extra))  # type: ignore[arg-type]
    assert refused.value.loc == part
    assert "'stagin'" in str(refused.value)
    assert "canary, production" in str(refused.value)  # the aliases it has
    assert policies.get_policy(NAME) is None


def test_an_unknown_model_is_refused(policies: TrafficPolicies) -> None:
    with pytest.raises(NotFoundError, match=r"'chrun'.*registered: churn"):
        policies.set_policy("chrun", TrafficSettings())


@pytest.mark.parametrize("part", ["canary", "shadow"])
def test_incompatible_signatures_are_refused_naming_the_difference(
    policies: TrafficPolicies, registry: ModelRegistry, part: str
) -> None:
    other = _log(registry, ("tenure", "spend", "visits"))
    registry.set_alias(f"{NAME}/{other}", "wide")
    extra = {"canary_weight": 0.5} if part == "canary" else {}
    with pytest.raises(InvalidInputError) as refused:
        policies.set_policy(NAME, TrafficSettings(**{part: "wide"}, **extra))  # type: ignore[arg-type]
    assert refused.value.loc == part
    assert f"{NAME}/{other}" in str(refused.value)
    assert "column 'visits'" in str(refused.value)
    assert policies.get_policy(NAME) is None
    # a pinned primary is checked as that version, whatever policy.primary says
    policies.set_policy(NAME, TrafficSettings(primary="nowhere", shadow="canary"), pinned_version=1)


# -- racing writers ---------------------------------------------------------------------


def _race(count: int, write: Callable[[int], Any]) -> list[Any]:
    """Run ``write(i)`` in ``count`` threads released at once; each result or error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = write(i)
        except ModelyardError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def _weight(i: int) -> TrafficSettings:
    return TrafficSettings(canary="canary", canary_weight=round((i + 1) / 100, 2))


@pytest.mark.parametrize("expected", [0, 1])
def test_racing_compare_and_set_writers_have_exactly_one_winner(
    policies: TrafficPolicies, expected: int
) -> None:
    if expected == 1:
        policies.set_policy(NAME, TrafficSettings(), "setup")
    results = _race(
        _RACERS, lambda i: policies.set_policy(NAME, _weight(i), f"w{i}", None, expected)
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in losers), losers
    stored = policies.get_policy(NAME)
    assert stored == winners[0]
    assert stored is not None and stored.version == expected + 1
    assert [c.actor for c in policies.history(NAME)][-1] == stored.updated_by


def test_racing_unconditional_writers_each_get_their_own_version(
    policies: TrafficPolicies,
) -> None:
    results = _race(_RACERS, lambda i: policies.set_policy(NAME, _weight(i), f"w{i}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.version for r in results) == list(range(1, _RACERS + 1))
    history = policies.history(NAME)
    assert [c.version for c in history] == list(range(1, _RACERS + 1))
    # the audit is one chain: each change starts where the one before ended
    assert history[0].policy_from is None
    for before, after in itertools.pairwise(history):
        assert after.policy_from == before.policy_to
    by_version = {r.version: r for r in results}
    for change in history:
        assert (change.policy_to, change.actor) == (
            by_version[change.version].policy,
            by_version[change.version].updated_by,
        )
    stored = policies.get_policy(NAME)
    assert stored is not None and stored.policy == history[-1].policy_to


# -- generated policies round-trip ------------------------------------------------------

_TEXT = st.text(min_size=1, max_size=30)
_POLICIES = st.builds(
    lambda primary, canary, weight, sticky, shadow: TrafficSettings(
        primary=primary,
        canary=canary,
        canary_weight=weight if canary is not None else 0.0,
        sticky_key=sticky,
        shadow=shadow,
    ),
    _TEXT,
    st.none() | _TEXT,
    st.floats(0.0, 1.0, allow_nan=False),
    st.none() | _TEXT | _TEXT.map(lambda t: f"header:{t}"),
    st.none() | _TEXT,
)


@hyp_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(_POLICIES, min_size=1, max_size=4))
def test_generated_policies_round_trip_exactly(
    policies: TrafficPolicies, sequence: list[TrafficSettings]
) -> None:
    model = f"m{next(_COUNTER)}"
    versions = []
    for policy in sequence:
        stored = policies.set_policy(model, policy, "gen", "generated", validate=False)
        assert stored.policy == policy
        got = policies.get_policy(model)
        assert got is not None and got.policy == policy
        assert encode_policy(got.policy) == encode_policy(policy)
        versions.append(got.version)
    # a new version only for a policy that differs from the one before
    changed = [i == 0 or p != sequence[i - 1] for i, p in enumerate(sequence)]
    assert versions == list(itertools.accumulate(int(c) for c in changed))
    assert [c.policy_to for c in policies.history(model)] == [
        p for p, c in zip(sequence, changed, strict=True) if c
    ]


_COUNTER = itertools.count()


# -- the old traffic.json ---------------------------------------------------------------


def test_the_old_file_is_migrated_once_and_the_store_wins(
    policies: TrafficPolicies, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = legacy_traffic_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    already = policies.set_policy("other", TrafficSettings(), "them", validate=False)
    path.write_text(
        json.dumps(
            {
                NAME: {"canary": "canary", "canary_weight": 0.3},
                "other": {"primary": "staging"},
                "broken": {"canary_weight": 3},
            }
        )
    )
    caplog.set_level(logging.INFO, logger="modelyard.registry")
    assert policies.migrate_file(actor="modelyard serve") == [NAME]
    assert not path.exists()
    assert json.loads(path.with_name("traffic.json.migrated").read_text())["broken"]
    stored = policies.get_policy(NAME)
    assert stored is not None
    assert stored.policy == TrafficSettings(canary="canary", canary_weight=0.3)
    [change] = policies.history(NAME)
    assert (change.actor, change.reason, change.version) == ("modelyard serve", MIGRATED_REASON, 1)
    assert policies.get_policy("other") == already  # the store wins
    assert any(
        "broken" in r.getMessage() and "canary_weight" in r.getMessage() for r in caplog.records
    )
    # once: the second start finds no file
    assert policies.migrate_file() == []
    assert len(policies.history(NAME)) == 1


def test_an_unreadable_old_file_is_left_in_place(
    policies: TrafficPolicies, settings: Settings
) -> None:
    path = legacy_traffic_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert policies.migrate_file() == []
    assert path.read_text() == "{not json"
    assert policies.list_policies() == []


# -- readers: the agent's canary and the UI's deployments page -----------------------------


def test_the_agent_checks_the_stored_policy_before_the_configured_one(
    policies: TrafficPolicies, registry: ModelRegistry, settings: Settings
) -> None:
    with pytest.raises(InvalidInputError, match="got none") as none:
        check_traffic(settings, NAME, registry)
    assert none.value.loc == f"serving.traffic.{NAME}"
    policies.set_policy(NAME, TrafficSettings(canary="canary", canary_weight=0.2))
    check_traffic(settings, NAME, registry)  # the store's policy gives the canary traffic
    assert served_policy(settings, NAME, registry)[0] == TrafficSettings(
        canary="canary", canary_weight=0.2
    )
    policies.set_policy(NAME, TrafficSettings(canary="canary", canary_weight=0.0))
    with pytest.raises(InvalidInputError, match="canary_weight above 0") as zero:
        check_traffic(settings, NAME, registry)
    assert zero.value.loc == f"traffic.{NAME}.canary_weight"


def test_the_deployments_page_shows_the_stored_policy(
    policies: TrafficPolicies, registry: ModelRegistry, settings: Settings
) -> None:
    models = registry.list_models()
    before = deployments_index(settings, models, {})
    assert before["models"] == [] and [m["name"] for m in before["idle"]] == [NAME]
    stored = policies.set_policy(NAME, CANARY, "alice")
    after = deployments_index(settings, models, {NAME: stored})
    [shown] = after["models"]
    policy = shown["policy"]
    assert policy["canary"] == {"alias": "canary", "version": 2, "weight": 0.25}
    assert policy["primary"] == {"alias": "production", "version": 1, "weight": 0.75}
    assert policy["stored"]["version"] == 1 and policy["stored"]["updated_by"] == "alice"
