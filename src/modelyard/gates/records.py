"""Gate evaluations in the metadata store: write a report, read the latest one back.

A report is stored in one write transaction (the evaluation row and every result),
so a reader sees all of its results or none. Numbers are JSON; a non-finite float
is stored as null (JSON has no NaN), which is what a gate means by "not measured".
A NUL character in a summary is stored as U+FFFD (PostgreSQL text cannot hold one).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from modelyard.gates.base import GateResult
from modelyard.store.database import Database
from modelyard.store.schema import gate_evaluations, gate_results

__all__ = [
    "GateReport",
    "jsonable",
    "latest_evaluation",
    "list_evaluations",
    "load_evaluation",
    "new_evaluation_id",
    "save_report",
]


def new_evaluation_id() -> str:
    """32 hex characters that sort by creation time (ns clock, then random bits)."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars unwrapped, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class GateReport:
    """One run of a version's gates against the holder of an alias."""

    model: str
    version: int
    against: str
    champion_version: int | None
    eval_digest: str
    config_digest: str
    results: tuple[GateResult, ...]
    id: str = field(default_factory=new_evaluation_id)
    created_at: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    created_by: str = "unknown"

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    @property
    def passed(self) -> bool:
        """Every required gate passed."""
        return all(r.passed for r in self.results if r.required)

    @property
    def failed_required(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if r.required and not r.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "against": self.against,
            "champion_version": self.champion_version,
            "eval_digest": self.eval_digest,
            "config_digest": self.config_digest,
            "passed": self.passed,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "results": [jsonable(r.to_dict()) for r in self.results],
        }


def _text(value: str) -> str:
    """Text as both engines store it: PostgreSQL refuses a NUL character, so it is U+FFFD."""
    return value.replace("\x00", "\ufffd")


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True, allow_nan=False)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def save_report(db: Database, report: GateReport) -> GateReport:
    """Store ``report`` (its evaluation and every result) in one transaction."""
    with db.write() as conn:
        conn.execute(
            insert(gate_evaluations).values(
                id=report.id,
                model=report.model,
                version=report.version,
                against=report.against,
                champion_version=report.champion_version,
                eval_digest=report.eval_digest,
                config_digest=report.config_digest,
                passed=report.passed,
                created_at=report.created_at,
                created_by=_text(report.created_by),
            )
        )
        if report.results:
            conn.execute(
                insert(gate_results),
                [
                    {
                        "evaluation_id": report.id,
                        "gate": _text(r.gate),
                        "position": i,
                        "kind": r.kind,
                        "required": r.required,
                        "passed": r.passed,
                        "summary": _text(r.summary),
                        "numbers": _dumps(r.numbers),
                        "ci_low": None if r.ci is None else _finite(r.ci[0]),
                        "ci_high": None if r.ci is None else _finite(r.ci[1]),
                        "details": _dumps(list(r.details)),
                    }
                    for i, r in enumerate(report.results)
                ],
            )
    return report


def _result(r: Any) -> GateResult:
    ci = None
    if r.ci_low is not None or r.ci_high is not None:
        ci = (
            math.nan if r.ci_low is None else float(r.ci_low),
            math.nan if r.ci_high is None else float(r.ci_high),
        )
    return GateResult(
        gate=r.gate,
        kind=r.kind,
        passed=bool(r.passed),
        required=bool(r.required),
        summary=r.summary,
        numbers=json.loads(r.numbers),
        ci=ci,
        details=tuple(json.loads(r.details)),
    )


def _results(conn: Any, evaluation_id: str) -> tuple[GateResult, ...]:
    return _results_of(conn, [evaluation_id]).get(evaluation_id, ())


#: evaluation ids per query when results are read in batches
_BATCH = 500


def _results_of(conn: Any, ids: list[str]) -> dict[str, tuple[GateResult, ...]]:
    """The results of each evaluation in ``ids``, in the order the gates ran (one query
    per ``_BATCH`` evaluations, not one per evaluation)."""
    found: dict[str, list[GateResult]] = {}
    for start in range(0, len(ids), _BATCH):
        rows = conn.execute(
            select(gate_results)
            .where(gate_results.c.evaluation_id.in_(ids[start : start + _BATCH]))
            .order_by(gate_results.c.evaluation_id, gate_results.c.position)
        ).all()
        for r in rows:
            found.setdefault(r.evaluation_id, []).append(_result(r))
    return {k: tuple(v) for k, v in found.items()}


def _report(conn: Any, row: Any, results: tuple[GateResult, ...] | None = None) -> GateReport:
    return GateReport(
        model=row.model,
        version=row.version,
        against=row.against,
        champion_version=row.champion_version,
        eval_digest=row.eval_digest,
        config_digest=row.config_digest,
        results=_results(conn, row.id) if results is None else results,
        id=row.id,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def latest_evaluation(db: Database, model: str, version: int, against: str) -> GateReport | None:
    """The newest evaluation of ``model/version`` against ``against``, or None."""
    with db.read() as conn:
        row = conn.execute(
            select(gate_evaluations)
            .where(
                gate_evaluations.c.model == model,
                gate_evaluations.c.version == version,
                gate_evaluations.c.against == against,
            )
            .order_by(gate_evaluations.c.created_at.desc(), gate_evaluations.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else _report(conn, row)


def load_evaluation(db: Database, evaluation_id: str) -> GateReport | None:
    """The evaluation stored with ``evaluation_id`` (with every result), or None."""
    with db.read() as conn:
        row = conn.execute(
            select(gate_evaluations).where(gate_evaluations.c.id == evaluation_id)
        ).first()
        return None if row is None else _report(conn, row)


def list_evaluations(
    db: Database, model: str, *, version: int | None = None, limit: int = 1000
) -> list[GateReport]:
    """Evaluations of ``model`` (one version, or all), oldest first; their results are
    read in batches, so a model gated a thousand times costs a few queries, not one each."""
    query = select(gate_evaluations).where(gate_evaluations.c.model == model)
    if version is not None:
        query = query.where(gate_evaluations.c.version == version)
    query = query.order_by(gate_evaluations.c.created_at, gate_evaluations.c.id).limit(limit)
    with db.read() as conn:
        rows = conn.execute(query).all()
        results = _results_of(conn, [row.id for row in rows])
        return [_report(conn, row, results.get(row.id, ())) for row in rows]
