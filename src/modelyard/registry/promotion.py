"""Promotion with evidence: an alias moves to a version only when its gates passed.

``promote`` reads the latest gate evaluation of the version against the alias
(``modelyard gate REF --against ALIAS`` stores one) and moves the alias only when

- there is one (else: "no gate evaluation of NAME/V against 'ALIAS': run modelyard gate NAME/V"),
- every required gate of it passed (else ``GateFailedError`` listing them, one line each),
- it is fresh: the alias is still held by the version the gates compared against, and
  the project's gate configuration for the model is the one they ran with.

Every refusal is a :class:`~modelyard.errors.GateFailedError` (a ``ConflictError``; the
command line exits 1: a check failed). ``force=True`` with a non-empty ``reason``
moves the alias anyway and records action ``promote_forced`` with who and why; a
passing promotion records action ``promote`` with the evaluation's id. The check of
the alias holder and the move happen in one transaction under the model's lock, so a
champion that changes in between is never overwritten on stale evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.config import Settings
from modelyard.errors import GateFailedError, InvalidInputError, NotFoundError, Problem
from modelyard.gates.config import gate_config
from modelyard.gates.records import GateReport, latest_evaluation, list_evaluations
from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import check_alias
from modelyard.registry.store import SQLRegistryStore
from modelyard.store.database import Database

__all__ = [
    "Evidence",
    "config_digest",
    "Promotion",
    "check_evidence",
    "evidence_for",
    "evidence_of",
    "promote",
]

EvidenceState = Literal["passed", "failed", "stale", "missing"]


@dataclass(frozen=True)
class Evidence:
    """The latest gate evaluation of a version against an alias, and what it allows."""

    ref: str
    alias: str
    state: EvidenceState
    why: str  # one line: what is missing, failed or stale, or "required gates passed"
    report: GateReport | None
    holder: int | None  # the version holding the alias now
    failed: tuple[str, ...] = ()  # "gate: summary" of each failed required gate

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "alias": self.alias,
            "state": self.state,
            "why": self.why,
            "holder": self.holder,
            "evaluation_id": None if report is None else report.id,
            "champion_version": None if report is None else report.champion_version,
            "passed": None if report is None else report.passed,
            "created_at": None if report is None else report.created_at,
            "eval_digest": None if report is None else report.eval_digest,
            "failed": list(self.failed),
        }


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did."""

    version: ModelVersion
    alias: str
    previous: int | None
    forced: bool
    evidence: Evidence
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.version.name,
            "version": self.version.version,
            "alias": self.alias,
            "previous": self.previous,
            "forced": self.forced,
            "reason": self.reason,
            "evidence": self.evidence.to_dict(),
        }


def _v(version: int | None) -> str:
    return "no version" if version is None else f"v{version}"


def config_digest(settings: Settings, name: str) -> str | None:
    """The digest of ``gates.NAME`` in modelyard.yaml now; None when none is declared.

    Evidence must have run the declared gates as they are now; with none declared
    (gates handed to ``run_gates`` in Python), there is no configuration to go stale.
    """
    try:
        return gate_config(settings, name).digest
    except NotFoundError:
        return None


def check_evidence(
    report: GateReport | None,
    version: ModelVersion,
    alias: str,
    *,
    holder: int | None,
    digest: str | None,
) -> Evidence:
    """Judge ``report`` (the latest evaluation of ``version`` against ``alias``)."""
    ref = version.ref
    if report is None:
        why = f"no gate evaluation of {ref} against {alias!r}: run modelyard gate {ref}" + (
            f" --against {alias}" if alias != "production" else ""
        )
        return Evidence(ref, alias, "missing", why, None, holder)
    failed = tuple(f"{r.gate}: {r.summary}" for r in report.results if r.required and not r.passed)
    if failed or not report.passed:
        why = f"{len(failed)} required gate(s) of evaluation {report.id} failed:"
        return Evidence(ref, alias, "failed", why, report, holder, failed)
    again = f"; run modelyard gate {ref} again"
    if report.champion_version != holder:
        why = (
            f"stale: the champion changed from {_v(report.champion_version)} to {_v(holder)} "
            f"since the gates ran{again}"
        )
        return Evidence(ref, alias, "stale", why, report, holder)
    if digest is not None and report.config_digest != digest:
        why = f"stale: the gate config changed since the gates ran{again}"
        return Evidence(ref, alias, "stale", why, report, holder)
    return Evidence(ref, alias, "passed", "required gates passed", report, holder)


def evidence_of(
    db: Database,
    settings: Settings,
    version: ModelVersion,
    alias: str,
    *,
    holder: int | None,
) -> Evidence:
    """The evidence for moving ``alias`` (now at ``holder``) to ``version``."""
    report = latest_evaluation(db, version.name, version.version, alias)
    return check_evidence(
        report, version, alias, holder=holder, digest=config_digest(settings, version.name)
    )


def evidence_for(
    db: Database, settings: Settings, version: ModelVersion, holders: Mapping[str, int]
) -> list[Evidence]:
    """The latest evidence of ``version`` against each alias it was gated against.

    ``holders`` maps each alias of the model to the version holding it now.
    """
    aliases = sorted(
        {r.against for r in list_evaluations(db, version.name, version=version.version)}
    )
    digest = config_digest(settings, version.name)
    return [
        check_evidence(
            latest_evaluation(db, version.name, version.version, alias),
            version,
            alias,
            holder=holders.get(alias),
            digest=digest,
        )
        for alias in aliases
    ]


def _refusal(evidence: Evidence) -> GateFailedError:
    lines = [f"Refused to move {evidence.alias} to {evidence.ref}: {evidence.why}"]
    lines += [f"  {line}" for line in evidence.failed]
    if evidence.state != "missing":
        lines.append("  (--force --reason TEXT overrides, audited)")
    results = () if evidence.report is None else evidence.report.results
    error = GateFailedError("\n".join(lines), results=results)
    # one line per failed gate on the command line (it keeps the lines of an error
    # that lists problems)
    if evidence.state == "failed" and evidence.report is not None:
        error.problems = tuple(
            Problem(loc=r.gate, expected="pass", got=r.summary)
            for r in evidence.report.failed_required
        )
    return error


def promote(
    store: SQLRegistryStore,
    db: Database,
    settings: Settings,
    version: ModelVersion,
    alias: str,
    *,
    force: bool,
    reason: str | None,
    actor: str,
    now: int,
) -> Promotion:
    """Move ``alias`` to ``version`` on passing, fresh evidence (or ``force`` with a reason)."""
    check_alias(alias)
    reason = None if reason is None else reason.strip()
    if force and not reason:
        raise InvalidInputError(
            "Expected a non-empty --reason with --force (it is recorded in the audit trail), "
            "got none",
            loc="reason",
        )
    report = latest_evaluation(db, version.name, version.version, alias)
    digest = config_digest(settings, version.name)
    seen: list[Evidence] = []

    def judge(holder: int | None) -> tuple[str, str | None]:
        """Under the model's lock: refuse, or the reason the audit trail records."""
        evidence = check_evidence(report, version, alias, holder=holder, digest=digest)
        seen.append(evidence)
        evaluation = "none" if report is None else f"evaluation {report.id}"
        if evidence.state == "passed":
            return "promote", f"gates passed: {evaluation}" + (f"; {reason}" if reason else "")
        if not force:
            raise _refusal(evidence)
        return "promote_forced", f"{reason} (forced over {evidence.state} evidence: {evaluation})"

    previous = store.move_alias_checked(
        version.name,
        alias,
        version.version,
        check=judge,
        actor=actor,
        now=now,
    )
    return Promotion(version, alias, previous, seen[-1].state != "passed", seen[-1], reason)
