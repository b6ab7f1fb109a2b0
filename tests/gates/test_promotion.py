"""Promotion with evidence: the registry moves an alias only on passing, fresh gates.

Evaluations are stored with the real records module (``save_report``) on the real
metadata store (SQLite and PostgreSQL); the evidence rules are then checked against
an oracle over generated cases: moved iff an evaluation exists, every required gate of
the latest one passed, the alias's holder is the champion it ran against, and the gate
config is unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import msgspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings
from modelyard.errors import GateFailedError, InvalidInputError, NotFoundError
from modelyard.gates.base import GateResult
from modelyard.gates.records import GateReport, save_report
from modelyard.registry import ModelRegistry
from modelyard.registry.promotion import config_digest
from modelyard.registry.refs import ModelRef

NAME = "toy"
_ALIASES = itertools.count()


@pytest.fixture
def registry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    monkeypatch.setenv("MODELYARD_ACTOR", "alice")
    reg = ModelRegistry(msgspec.structs.replace(settings, gates={NAME: _declared(0.5)}))
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    for c in (1.0, 2.0, 3.0):
        reg.log_model(LogisticRegression(C=c).fit(X, [0, 0, 1, 1]), name=NAME, training_frame=X)
    reg.set_alias(f"{NAME}/1", "production")
    yield reg
    reg.close()


def _declared(auc_min: float) -> dict[str, object]:
    return {"label": "y", "checks": [{"type": "metric", "metric": "auc", "min": auc_min}]}


def _result(gate: str, *, passed: bool, required: bool = True) -> GateResult:
    return GateResult(
        gate=gate,
        kind=gate.partition(":")[0],
        passed=passed,
        required=required,
        summary=f"{gate} {'ok' if passed else 'below threshold'}",
        numbers={"value": 0.5},
        ci=None,
    )


def _evaluate(
    registry: ModelRegistry,
    version: int,
    *,
    champion: int | None = 1,
    results: tuple[GateResult, ...] = (),
    against: str = "production",
    digest: str | None = None,
    name: str = NAME,
) -> GateReport:
    report = GateReport(
        model=name,
        version=version,
        against=against,
        champion_version=champion,
        eval_digest="e" * 64,
        config_digest=digest or config_digest(registry.settings, name) or "",
        results=results or (_result("metric:auc", passed=True),),
    )
    return save_report(registry.db, report)


def _holder(registry: ModelRegistry, alias: str = "production") -> int:
    return registry.get_version(ModelRef(NAME, alias=alias)).version


def test_promote_without_evidence_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(GateFailedError) as caught:
        registry.promote(f"{NAME}/2", "production")
    assert "no gate evaluation of toy/2 against 'production': run modelyard gate toy/2" in str(
        caught.value
    )
    assert _holder(registry) == 1
    assert [e.action for e in registry.history(NAME)].count("promote") == 0


def test_promote_with_a_failed_required_gate_is_refused_listing_each(
    registry: ModelRegistry,
) -> None:
    _evaluate(
        registry,
        2,
        results=(
            _result("metric:auc", passed=False),
            _result("champion:auc", passed=False),
            _result("metric:log_loss", passed=False, required=False),
            _result("slices:auc", passed=True),
        ),
    )
    with pytest.raises(GateFailedError) as caught:
        registry.promote(f"{NAME}/2")
    lines = str(caught.value).splitlines()
    assert any(line.strip().startswith("metric:auc: ") for line in lines)
    assert any(line.strip().startswith("champion:auc: ") for line in lines)
    assert not any("log_loss" in line for line in lines)  # not required: not a reason
    assert [p.loc for p in caught.value.problems] == ["metric:auc", "champion:auc"]
    assert len(caught.value.results) == 4
    assert _holder(registry) == 1


def test_promote_on_stale_evidence_champion_changed_is_refused(registry: ModelRegistry) -> None:
    _evaluate(registry, 2, champion=1)
    registry.set_alias(f"{NAME}/3", "production")
    with pytest.raises(GateFailedError, match="stale: the champion changed from v1 to v3"):
        registry.promote(f"{NAME}/2")
    assert _holder(registry) == 3


def test_promote_on_stale_evidence_config_changed_is_refused(registry: ModelRegistry) -> None:
    _evaluate(registry, 2, digest="0" * 64)
    with pytest.raises(GateFailedError, match="stale: the gate config changed"):
        registry.promote(f"{NAME}/2")
    assert _holder(registry) == 1


def test_changing_the_gate_config_makes_evidence_stale(registry: ModelRegistry) -> None:
    _evaluate(registry, 2)
    changed = msgspec.structs.replace(registry.settings, gates={NAME: _declared(0.9)})
    with ModelRegistry(changed) as other, pytest.raises(GateFailedError, match="config changed"):
        other.promote(f"{NAME}/2")
    assert _holder(registry) == 1


def test_promote_on_passing_evidence_moves_and_audits_the_evaluation(
    registry: ModelRegistry,
) -> None:
    report = _evaluate(registry, 2)
    moved = registry.promote(f"{NAME}/2", "production", reason="beats v1")
    assert moved.version == 2 and "production" in moved.aliases
    last = registry.history(NAME)[-1]
    assert (last.action, last.actor, last.alias) == ("promote", "alice", "production")
    assert (last.version_from, last.version_to) == (1, 2)
    assert last.reason == f"gates passed: evaluation {report.id}; beats v1"


def test_the_latest_evaluation_decides(registry: ModelRegistry) -> None:
    _evaluate(registry, 2)
    _evaluate(registry, 2, results=(_result("metric:auc", passed=False),))
    with pytest.raises(GateFailedError):
        registry.promote(f"{NAME}/2")
    newest = _evaluate(registry, 2)
    registry.promote(f"{NAME}/2")
    assert newest.id in (registry.history(NAME)[-1].reason or "")


def test_evidence_against_another_alias_does_not_count(registry: ModelRegistry) -> None:
    _evaluate(registry, 2, against="staging", champion=None)
    with pytest.raises(GateFailedError, match="no gate evaluation"):
        registry.promote(f"{NAME}/2", "production")
    registry.promote(f"{NAME}/2", "staging")  # no holder then, none now: fresh
    assert _holder(registry, "staging") == 2


def test_force_needs_a_reason(registry: ModelRegistry) -> None:
    for reason in (None, "", "   "):
        with pytest.raises(InvalidInputError, match="reason"):
            registry.promote(f"{NAME}/2", force=True, reason=reason)
    assert _holder(registry) == 1


def test_force_with_a_reason_moves_and_audits_who_and_why(registry: ModelRegistry) -> None:
    _evaluate(registry, 2, results=(_result("metric:auc", passed=False),))
    done = registry.promote_with_evidence(f"{NAME}/2", force=True, reason="hotfix for incident 42")
    assert done.forced and done.evidence.state == "failed"
    assert _holder(registry) == 2
    last = registry.history(NAME)[-1]
    assert (last.action, last.actor) == ("promote_forced", "alice")
    assert last.reason is not None and last.reason.startswith("hotfix for incident 42")
    assert "forced over failed evidence" in last.reason


def test_promote_of_an_unknown_version_is_not_found(registry: ModelRegistry) -> None:
    with pytest.raises(NotFoundError):
        registry.promote(f"{NAME}/9")


def test_a_champion_moved_between_reading_and_moving_is_refused(
    registry: ModelRegistry,
) -> None:
    """The holder is judged again under the model's lock, not only before it."""
    _evaluate(registry, 2, champion=1)
    store = registry._store
    real = store.move_alias_checked

    def racing(*args: object, **kwargs: object) -> int | None:
        registry.set_alias(f"{NAME}/3", "production")  # another process moves it first
        return real(*args, **kwargs)  # type: ignore[arg-type]

    store.move_alias_checked = racing  # type: ignore[method-assign]
    with pytest.raises(GateFailedError, match="from v1 to v3"):
        registry.promote(f"{NAME}/2")
    assert _holder(registry) == 3


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, object]:
    return {
        "evaluated": draw(st.booleans()),
        "gates": draw(
            st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=4)
        ),  # (required, passed)
        "champion_then": draw(st.sampled_from([None, 1, 3])),
        "holder_now": draw(st.sampled_from([None, 1, 3])),
        "same_config": draw(st.booleans()),
        "force": draw(st.booleans()),
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_cases())
def test_generated_evidence_moves_the_alias_iff_the_oracle_allows(
    registry: ModelRegistry, case: dict[str, object]
) -> None:
    alias = f"gen{next(_ALIASES)}"
    holder = case["holder_now"]
    if holder is not None:
        registry.set_alias(f"{NAME}/{holder}", alias)
    gates = case["gates"]
    assert isinstance(gates, list)
    if case["evaluated"]:
        _evaluate(
            registry,
            2,
            against=alias,
            champion=case["champion_then"],  # type: ignore[arg-type]
            digest=None if case["same_config"] else "f" * 64,
            results=tuple(
                _result(f"metric:g{i}", passed=p, required=r) for i, (r, p) in enumerate(gates)
            ),
        )
    allowed = (
        bool(case["evaluated"])
        and all(p for r, p in gates if r)
        and case["champion_then"] == holder
        and bool(case["same_config"])
    )
    force = bool(case["force"])
    try:
        done = registry.promote_with_evidence(
            f"{NAME}/2", alias, force=force, reason="generated" if force else None
        )
    except GateFailedError:
        assert not allowed and not force
        assert _holder(registry, alias) == holder if holder is not None else True
        return
    assert allowed or force
    assert done.forced == (not allowed)
    assert _holder(registry, alias) == 2
    last = registry.history(NAME)[-1]
    assert last.action == ("promote" if allowed else "promote_forced")
