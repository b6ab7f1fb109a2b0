"""What the pipelines pages show, as plain JSON-able dicts.

- ``pipelines_index``: the pipelines that have runs (runs, last status), their latest
  runs with step counts (ran, cached, failed, skipped) and the tuning studies;
- ``pipeline_run_detail``: one pipeline run with its step graph laid out in topological
  layers (edges from the recorded inputs: which step's output each step read), each
  step's status, duration, outputs and why it ran or was cached;
- ``study_detail``: a tuning study's trials, its optimization history (each complete
  trial's value and the best so far) and parameter importances (Optuna's
  ``get_param_importances``, through ``pipelines.study_info``).

A skipped step never started, so its inputs were never recorded: its graph edge is the
failed step it waited for (named in its reason), drawn dashed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, make_url, select
from sqlalchemy.exc import SQLAlchemyError

from modelyard.config import Settings
from modelyard.errors import ModelyardError, NotFoundError
from modelyard.pipelines.lineage import recorded_pipelines, rerun_reasons, run_summaries
from modelyard.pipelines.records import PipelineRecords, PipelineRunRow
from modelyard.pipelines.studies import open_study_storage, study_location
from modelyard.pipelines.study_info import study_details, study_summaries
from modelyard.store.database import Database
from modelyard.store.schema import pipeline_inputs, pipeline_runs
from modelyard.ui.graph_layout import GraphNode, layout

__all__ = ["pipeline_run_detail", "pipelines_index", "study_detail", "study_history"]

_WAITED_FOR = re.compile(r"step '([^']+)' (?:failed|skipped)")


def _shown_status(row: PipelineRunRow, tracked: str | None) -> str:
    """``killed`` for a run whose process died (as ``pipeline runs`` shows it)."""
    if row.status == "failed" and tracked == "KILLED":
        return "killed"
    return row.status


def _duration(row: PipelineRunRow) -> float | None:
    if row.ended_at is None:
        return None if row.status != "running" else time.time() - row.started_at / 1000
    return (row.ended_at - row.started_at) / 1000


def _run_item(row: PipelineRunRow, steps: dict[str, int], tracked: str | None) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "pipeline": row.pipeline,
        "status": _shown_status(row, tracked),
        "params": row.params,
        "resumed_from": row.resumed_from,
        "executor": row.executor,
        "started_at": row.started_at,
        "duration_s": _duration(row),
        "steps": {
            "ran": steps.get("completed", 0),
            "cached": steps.get("cached", 0),
            "failed": steps.get("failed", 0),
            "skipped": steps.get("skipped", 0),
            "total": sum(steps.values()),
        },
    }


def pipelines_index(
    db: Database, settings: Settings, *, pipeline: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """Pipelines with runs, the latest ``limit`` runs (of ``pipeline`` when given), studies."""
    records = PipelineRecords(db)
    rows = records.list_pipeline_runs(pipeline, limit=limit)
    summaries = run_summaries(db, [r.run_id for r in rows])
    with db.read() as conn:
        counts: dict[str, int] = {
            str(name): int(n)
            for name, n in conn.execute(
                select(pipeline_runs.c.pipeline, func.count()).group_by(pipeline_runs.c.pipeline)
            ).all()
        }
    names = recorded_pipelines(db)
    try:
        studies = (
            []
            if _no_study_file(settings.db_url)
            else study_summaries(open_study_storage(settings.db_url))
        )
        studies_note = None
    except (ModelyardError, SQLAlchemyError, OSError) as exc:  # unreadable: say so, show the rest
        studies, studies_note = [], f"The tuning studies could not be read: {exc}"
    return {
        "pipelines": [{"name": n, "runs": counts.get(n, 0)} for n in names],
        "runs": [
            _run_item(r, summaries[r.run_id].steps, summaries[r.run_id].tracked_status)
            for r in rows
        ],
        "selected": pipeline,
        "limit": limit,
        "studies": studies,
        "studies_note": studies_note,
    }


def _edges(db: Database, ids: list[str]) -> list[tuple[str, str]]:
    """``(producer step run, consumer step run)`` among ``ids``, from the recorded inputs."""
    if not ids:
        return []
    inside = set(ids)
    with db.read() as conn:
        rows = conn.execute(
            select(pipeline_inputs.c.source_step_run_id, pipeline_inputs.c.step_run_id).where(
                pipeline_inputs.c.step_run_id.in_(ids),
                pipeline_inputs.c.source_step_run_id.is_not(None),
            )
        ).all()
    return list(dict.fromkeys((a, b) for a, b in rows if a in inside))


def _inputs(db: Database, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return found
    with db.read() as conn:
        for r in conn.execute(
            select(pipeline_inputs)
            .where(pipeline_inputs.c.step_run_id.in_(ids))
            .order_by(pipeline_inputs.c.name)
        ):
            found[r.step_run_id].append(
                {
                    "name": r.name,
                    "kind": r.kind,
                    "digest": r.digest,
                    "description": r.description,
                    "source_step_run_id": r.source_step_run_id,
                }
            )
    return found


def pipeline_run_detail(db: Database, run_id: str) -> dict[str, Any]:
    """One pipeline run (id or a unique prefix of 6+): its steps and their graph."""
    records = PipelineRecords(db)
    row = records.pipeline_run(run_id)  # InvalidInputError / NotFoundError name the id
    steps = records.steps_of(row.run_id)
    ids = [s.run_id for s in steps]
    outputs = records.outputs_of(ids)
    inputs = _inputs(db, ids)
    reasons = rerun_reasons(db, row.run_id)
    tracked = run_summaries(db, [row.run_id])[row.run_id]
    edges = _edges(db, ids)
    by_name = {s.step: s.run_id for s in steps}
    waited: list[tuple[str, str]] = []
    for s in steps:
        if s.status == "skipped" and s.error:
            for upstream in _WAITED_FOR.findall(s.error):
                if upstream in by_name:
                    waited.append((by_name[upstream], s.run_id))
    items = []
    nodes = []
    for s in steps:
        reason = reasons.get(s.step)
        item = {
            "step": s.step,
            "run_id": s.run_id,
            "function": s.function,
            "status": s.status,
            "cached_from": s.cached_from,
            "started_at": s.started_at,
            "duration_s": s.duration_s,
            "error": s.error,
            "has_logs": s.logs_sha256 is not None,
            "why": None if reason is None else reason.text,
            "outputs": [
                {"name": o.name, "digest": o.digest, "type": o.type, "size": o.size}
                for o in outputs.get(s.run_id, {}).values()
            ],
            "inputs": inputs.get(s.run_id, []),
        }
        items.append(item)
        took = "" if s.duration_s is None else f" · {s.duration_s:.2f} s"
        nodes.append(
            GraphNode(
                id=s.run_id,
                label=s.step,
                css=f"step-{s.status}",
                href=f"/runs/{s.run_id}",
                sub=f"{s.status}{took}",
                title=f"{s.step}: {item['why'] or s.status}",
            )
        )
    graph = layout(nodes, edges + waited)
    dashed = set(waited) - set(edges)
    for edge in graph["edges"]:
        edge["css"] = "waited" if (edge["from"], edge["to"]) in dashed else ""
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {
        "run": _run_item(row, counts, tracked.tracked_status),
        "module": row.module,
        "ended_at": row.ended_at,
        "steps": items,
        "graph": graph,
    }


def study_history(trials: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    """Each complete trial's value by trial number and the best value so far."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    numbers = [t["number"] for t in done]
    values = [float(t["value"]) for t in done]
    best: list[float] = []
    for value in values:
        if not best:
            best.append(value)
        elif direction == "maximize":
            best.append(max(best[-1], value))
        else:
            best.append(min(best[-1], value))
    return {"numbers": numbers, "values": values, "best": best}


def _no_study_file(db_url: str) -> bool:
    """True when the SQLite file of the studies does not exist yet: nothing was tuned.

    Opening the storage would create it, and a page (a ``--read-only`` UI above all) must
    not write into the project just by being looked at.
    """
    parsed = make_url(study_location(db_url))
    path = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and path not in ("", ":memory:")
        and not (Path(path).exists())
    )


def study_detail(settings: Settings, name: str) -> dict[str, Any]:
    """A study's details (NotFoundError naming similar studies when unknown)."""
    if _no_study_file(settings.db_url):
        raise NotFoundError(f"No tuning study {name!r}: nothing was tuned in this project")
    details = study_details(open_study_storage(settings.db_url), name)
    details["history"] = study_history(details["trial_list"], details["direction"])
    details["param_names"] = sorted({k for t in details["trial_list"] for k in t["params"]})
    return details
