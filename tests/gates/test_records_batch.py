"""``list_evaluations`` reads the results of many evaluations in batches: the same reports
as reading each evaluation's results on its own, in a few queries whatever their number."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import event, select

from modelyard.gates.base import GateResult
from modelyard.gates.records import _BATCH as BATCH
from modelyard.gates.records import GateReport, list_evaluations, save_report
from modelyard.store.database import Database, open_database
from modelyard.store.schema import gate_results


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    database = open_database("sqlite://")
    yield database
    database.close()


def _one_by_one(db: Database, evaluation_id: str) -> list[tuple[str, bool, bool, str]]:
    """The oracle: one evaluation's results read on their own, in the order they ran."""
    with db.read() as conn:
        rows = conn.execute(
            select(gate_results)
            .where(gate_results.c.evaluation_id == evaluation_id)
            .order_by(gate_results.c.position)
        ).all()
    return [(r.gate, bool(r.passed), bool(r.required), r.summary) for r in rows]


results = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.one_of(st.none(), st.just(math.nan))),
    max_size=5,
)


@hsettings(max_examples=40, deadline=None)
@given(shapes=st.lists(results, max_size=6), version=st.one_of(st.none(), st.just(1)))
def test_batched_results_equal_one_by_one(
    db: Database, shapes: list[list[tuple[bool, bool, float | None]]], version: int | None
) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    for i, shape in enumerate(shapes):
        gates = tuple(
            GateResult(
                f"z{j}" if j % 2 else f"a{j}",  # names out of run order
                "metric",
                passed,
                required,
                f"s{i}.{j}",
                {"value": j},
                None if ci is None else (ci, 0.5),
            )
            for j, (passed, required, ci) in enumerate(shape)
        )
        save_report(db, GateReport(name, 1 + i % 2, "production", None, "e", "c", gates))
    reports = list_evaluations(db, name, version=version)
    assert len(reports) == sum(1 for i in range(len(shapes)) if version in (None, 1 + i % 2))
    for report in reports:
        got = [(r.gate, r.passed, r.required, r.summary) for r in report.results]
        assert got == _one_by_one(db, report.id)


def test_many_evaluations_cost_a_few_queries(db: Database) -> None:
    name = f"m{uuid.uuid4().hex[:10]}"
    result = GateResult("metric:auc", "metric", True, True, "ok", {}, (0.7, 0.9))
    for _ in range(BATCH + 20):
        save_report(db, GateReport(name, 1, "production", None, "e", "c", (result,)))
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        reports = list_evaluations(db, name)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(reports) == BATCH + 20 and all(r.results == (result,) for r in reports)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 3
