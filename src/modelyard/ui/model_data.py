"""What the models pages show, as plain JSON-able dicts (the templates and scripts read them).

- ``models_index``: every registered model with its latest version and aliases;
- ``model_detail``: a model's versions and its history as one timeline, newest first:
  registry changes (alias moves, promotions, rollbacks, archives: who, why), gate
  evaluations beside them and the continuous-training agent's actions;
- ``version_detail``: one version's manifest (signature, runtimes with parity and
  latency, metrics, lineage), its gate evidence with confidence intervals (one forest
  plot row per gate that has an interval) and its reference profile's distributions.

Everything is read through the registry client and the stores below it; the agent's
actions through ``agent.records.ActionStore`` (one query per page).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from sqlalchemy import func, select

from modelyard.agent.records import ActionStore
from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.gates.records import GateReport, jsonable
from modelyard.models.package import read_profile
from modelyard.models.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import AuditEntry
from modelyard.registry.refs import ModelRef
from modelyard.store.database import Database
from modelyard.store.schema import gate_evaluations, gate_results

__all__ = [
    "MAX_PROFILE_COLUMNS",
    "agent_actions_of",
    "evaluation_view",
    "gate_items",
    "model_detail",
    "models_index",
    "profile_view",
    "timeline",
    "version_detail",
]

#: the newest agent actions of a model a page reads
MAX_AGENT_ACTIONS = 1000
#: columns of a reference profile drawn on a version page (most important first)
MAX_PROFILE_COLUMNS = 40

_ACTION_TEXT = {
    "register": "registered",
    "alias": "moved alias",
    "promote": "promoted",
    "promote_forced": "promoted (forced)",
    "rollback": "rolled back",
    "unalias": "removed alias",
    "archive": "archived",
    "repackage": "repackaged",
}


def models_index(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Registered models, by name: latest active version, aliases, last change."""
    return [m.to_dict() for m in registry.list_models()]


def agent_actions_of(
    db: Database, model: str, *, version: int | None = None
) -> list[dict[str, Any]]:
    """The agent's actions on ``model`` (those whose champion or candidate is ``version``
    when given), oldest first; times in ms. Read through ``agent.records.ActionStore``."""
    found = []
    for a in reversed(ActionStore(db).list(model, limit=MAX_AGENT_ACTIONS)):
        if version is not None and version not in (a.champion_version, a.candidate_version):
            continue
        found.append(
            {
                "id": a.id,
                "kind": a.kind,
                "state": a.state,
                "rule": a.rule,
                "incident_id": a.incident_id,
                "champion_version": a.champion_version,
                "candidate_version": a.candidate_version,
                "pipeline": a.pipeline,
                "pipeline_run_id": a.pipeline_run_id,
                "gate_evaluation_id": a.gate_evaluation_id,
                "decision": a.decision,
                "reason": a.reason,
                "created_by": a.created_by,
                "at": a.created_us // 1000,
                "updated_at": a.updated_us // 1000,
            }
        )
    return found


def _audit_item(e: AuditEntry) -> dict[str, Any]:
    return {
        "kind": "registry",
        "action": e.action,
        "what": _ACTION_TEXT.get(e.action, e.action),
        "alias": e.alias,
        "version_from": e.version_from,
        "version_to": e.version_to,
        "actor": e.actor,
        "reason": e.reason,
        "at": e.at,
        "id": f"audit-{e.id}",
    }


def gate_items(db: Database, name: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Every gate evaluation of ``name`` as a timeline item (the failed required gates'
    summaries as its reason), in two queries whatever the number of evaluations."""
    e, r = gate_evaluations.c, gate_results.c
    with db.read() as conn:
        rows = conn.execute(
            select(gate_evaluations)
            .where(e.model == name)
            .order_by(e.created_at, e.id)
            .limit(limit)
        ).all()
        failed: dict[str, list[str]] = {}
        for row in conn.execute(
            select(r.evaluation_id, r.gate, r.summary)
            .join(gate_evaluations, e.id == r.evaluation_id)
            .where(e.model == name, r.required.is_(True), r.passed.is_(False))
            .order_by(r.evaluation_id, r.position)
        ):
            failed.setdefault(row.evaluation_id, []).append(f"{row.gate}: {row.summary}")
    items = []
    for row in rows:
        lines = failed.get(row.id, [])
        passed = bool(row.passed) and not lines
        items.append(
            {
                "kind": "gate",
                "action": "gate",
                "what": "gates passed" if passed else "gates failed",
                "passed": passed,
                "alias": row.against,
                "version_from": row.champion_version,
                "version_to": row.version,
                "actor": row.created_by,
                "reason": "passed" if passed else "failed: " + "; ".join(lines),
                "at": row.created_at,
                "id": f"gate-{row.id}",
                "evaluation_id": row.id,
            }
        )
    return items


def _agent_item(a: dict[str, Any]) -> dict[str, Any]:
    why = "; ".join(
        x
        for x in (
            f"rule {a['rule']}" if a["rule"] else "",
            f"decision {a['decision']}" if a["decision"] else "",
            a["reason"] or "",
        )
        if x
    )
    return {
        "kind": "agent",
        "action": f"agent {a['kind']}",
        "what": f"agent {a['kind']} ({a['state']})",
        "alias": None,
        "version_from": a["champion_version"],
        "version_to": a["candidate_version"],
        "actor": a["created_by"],
        "reason": why,
        "at": a["at"],
        "id": f"agent-{a['id']}",
        "pipeline_run_id": a["pipeline_run_id"],
    }


def timeline(registry: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """Registry changes, gate evaluations and agent actions of ``name``, newest first.

    Ties in time keep the order the CLI's ``models history`` uses (a gate evaluation
    before the move it allowed).
    """
    items = [_audit_item(e) for e in registry.history(name)]
    items += gate_items(registry.db, name)
    items += [_agent_item(a) for a in agent_actions_of(registry.db, name)]
    order = {"gate": 0, "registry": 1, "agent": 2}
    ranked = sorted(enumerate(items), key=lambda p: (p[1]["at"], order[p[1]["kind"]], p[0]))
    return [item for _i, item in reversed(ranked)]


def model_detail(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """A model's versions (newest first), aliases and timeline; NotFoundError if unknown."""
    versions = registry.list_versions(name)  # NotFoundError names similar models
    model = next(m for m in registry.list_models() if m.name == name)
    return {
        "model": model.to_dict(),
        "versions": [v.to_dict() for v in versions],
        "aliases": model.aliases,
        "timeline": timeline(registry, name),
    }


def evaluation_view(report: GateReport) -> dict[str, Any]:
    """A gate evaluation with, per result, the forest-plot row when it has an interval.

    The point drawn is the statistic the interval is about: ``diff`` for a comparison
    with the champion, ``value`` for a metric; with neither, only the interval is drawn
    (no point is invented). ``reference`` is the line the gate judged against (the
    margin of a champion gate, zero for a difference, the bound of a metric gate).
    """
    results = []
    for r in report.results:
        item = jsonable(r.to_dict())
        numbers = r.numbers
        forest = None
        if r.ci is not None and not any(math.isnan(v) for v in r.ci):
            estimate = numbers.get("diff", numbers.get("value"))
            if "diff" in numbers:
                reference: float | None = 0.0
            else:
                bound = numbers.get("min", numbers.get("max"))
                reference = float(bound) if isinstance(bound, int | float) else None
            forest = {
                "gate": r.gate,
                "low": float(r.ci[0]),
                "high": float(r.ci[1]),
                "estimate": estimate if isinstance(estimate, int | float) else None,
                "reference": reference,
                "passed": r.passed,
            }
        item["forest"] = forest
        results.append(item)
    return {
        "id": report.id,
        "against": report.against,
        "champion_version": report.champion_version,
        "passed": report.passed,
        "created_at": report.created_at,
        "created_by": report.created_by,
        "eval_digest": report.eval_digest,
        "results": results,
        "forest": [r["forest"] for r in results if r["forest"] is not None],
    }


def _bin_labels(edges: tuple[float, ...]) -> list[str]:
    if not edges:
        return ["all"]
    shown = [f"{e:.4g}" for e in edges]
    labels = [f"< {shown[0]}"]
    labels += [f"[{a}, {b})" for a, b in itertools.pairwise(shown)]
    labels.append(f">= {shown[-1]}")
    return labels


def _column_view(name: str, col: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": name,
        "kind": col.kind,
        "count": col.count,
        "missing": col.missing,
        "missing_rate": col.missing_rate,
    }
    if isinstance(col, NumericProfile):
        view.update(
            x=_bin_labels(col.bin_edges),
            y=list(col.bin_counts),
            axis="reference decile bins",
            stats={
                "min": col.min,
                "median": col.median,
                "max": col.max,
                "mean": col.mean,
                "std": col.std,
            },
        )
    elif isinstance(col, CategoricalProfile):
        view.update(x=list(col.counts), y=list(col.counts.values()), axis="value", stats={})
        view["n_unique"] = col.n_unique
    return view


def profile_view(profile: ReferenceProfile) -> dict[str, Any]:
    """The profile's columns (most important first, at most ``MAX_PROFILE_COLUMNS``) and
    outputs, each with the counts to draw as bars."""
    names = list(profile.columns)
    importance = profile.feature_importance or {}
    if importance:
        names.sort(key=lambda n: -importance.get(n, 0.0))
    shown = names[:MAX_PROFILE_COLUMNS]
    return {
        "n_rows": profile.n_rows,
        "columns": [_column_view(n, profile.columns[n]) for n in shown],
        "outputs": [_column_view(n, c) for n, c in profile.outputs.items()],
        "hidden": len(names) - len(shown),
        "importance": {n: importance[n] for n in shown if n in importance},
    }


def version_detail(registry: ModelRegistry, name: str, version: int) -> dict[str, Any]:
    """One version: manifest, runtimes, signature, evidence and profile."""
    found = registry.get_version(ModelRef(name, version=version))
    manifest = registry.manifest(ModelRef(name, version=version))
    evidence = registry.evidence(found)
    with registry.db.read() as conn:
        evaluations = conn.execute(
            select(func.count())
            .select_from(gate_evaluations)
            .where(gate_evaluations.c.model == name, gate_evaluations.c.version == version)
        ).scalar()
    profile: dict[str, Any] | None = None
    profile_note: str | None = None
    try:
        profile = profile_view(read_profile(registry.artifacts, manifest))
    except InvalidInputError as exc:
        profile_note = str(exc)
    except ModelyardError as exc:  # a profile file that cannot be read: say so, show the rest
        profile_note = f"The reference profile could not be read: {exc}"
    signature = None
    if manifest.signature is not None:
        signature = {
            "columns": [
                {
                    "name": c.name,
                    "dtype": c.dtype,
                    "nullable": c.nullable,
                    "min": c.min,
                    "max": c.max,
                    "categories": c.categories,
                }
                for c in manifest.signature.columns
            ],
            "extra_columns": manifest.signature.extra_columns,
            "missing_values": manifest.signature.missing_values,
        }
    return {
        "version": found.to_dict(),
        "manifest": {
            "flavor": manifest.flavor,
            "model_class": manifest.model_class,
            "task": manifest.task,
            "classes": manifest.classes,
            "serving_runtime": manifest.serving_runtime,
            "requirements": manifest.requirements,
            "metrics": manifest.metrics,
            "created_at": manifest.created_at,
            "outputs": [{"name": o.name, "dtype": o.dtype} for o in manifest.outputs],
            "lineage": {
                "run_id": manifest.lineage.run_id,
                "experiment": manifest.lineage.experiment,
                "feature_service": manifest.lineage.feature_service,
                "imported_from": manifest.lineage.imported_from,
                "datasets": [
                    {"name": d.name, "context": d.context, "digest": d.digest}
                    for d in manifest.lineage.datasets
                ],
            },
        },
        "signature": signature,
        "runtimes": [
            {
                "name": r.name,
                "status": r.status,
                "reason": r.reason,
                "max_abs_diff": r.max_abs_diff,
                "label_flips": r.label_flips,
                "rows_checked": r.rows_checked,
                "latency_1_row_us": r.latency_1_row_us,
                "latency_1000_rows_us": r.latency_1000_rows_us,
                "serving": r.name == manifest.serving_runtime,
            }
            for r in manifest.runtimes
        ],
        "evidence": [
            {
                **e.to_dict(),
                "evaluation": None if e.report is None else evaluation_view(e.report),
            }
            for e in evidence
        ],
        "evaluations": int(evaluations or 0),
        "profile": profile,
        "profile_note": profile_note,
        "agent_actions": agent_actions_of(registry.db, name, version=version),
    }
