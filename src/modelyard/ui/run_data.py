"""What the runs pages show, read in a few batch queries (no query per run).

A page of the runs table is two statements plus two batch reads, whatever the number of
runs: the store's search (one query for the runs, one for their params and tags, one
for their latest metrics) and a count with the same filter. Compare and the run page
read every metric history they draw in one query.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from modelyard.errors import FilterSyntaxError, InvalidInputError, NotFoundError
from modelyard.store.database import Database
from modelyard.store.schema import (
    experiments,
    metrics,
    model_versions,
    run_artifacts,
    run_inputs,
    runs,
)
from modelyard.tracking.entities import DatasetInput, Run
from modelyard.tracking.filters import compile_filter, parse_order
from modelyard.tracking.store import SQLTrackingStore

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "MAX_COMPARE",
    "MAX_LIMIT",
    "Compare",
    "ExperimentSummary",
    "RunsPage",
    "RunsQuery",
    "compare_runs",
    "experiment_summaries",
    "metric_curves",
    "metric_histories",
    "produced_versions",
    "runs_page",
]

#: the most runs one page of the table shows
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: the most runs one compare overlays
MAX_COMPARE = 20
#: columns every run has, in the table's order; the key is what ``order`` names
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "name": "Name",
    "status": "Status",
    "start_time": "Started",
    "end_time": "Duration",
    "user": "User",
}
#: how many params and metrics the table shows when no columns are chosen
DEFAULT_EACH = 8
_RUN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_COLUMN = re.compile(r"^(params|metrics|tags)\.(.+)$")


@dataclass(frozen=True)
class ExperimentSummary:
    id: str
    name: str
    created_at: int
    runs: int
    last_start: int | None


def experiment_summaries(db: Database) -> list[ExperimentSummary]:
    """Every experiment with its number of runs and latest start, in one query."""
    query = (
        select(
            experiments.c.id,
            experiments.c.name,
            experiments.c.created_at,
            func.count(runs.c.id),
            func.max(runs.c.start_time),
        )
        .select_from(experiments.outerjoin(runs, runs.c.experiment_id == experiments.c.id))
        .group_by(experiments.c.id, experiments.c.name, experiments.c.created_at)
        .order_by(experiments.c.name)
    )
    with db.read() as conn:
        return [ExperimentSummary(*row) for row in conn.execute(query).all()]


def _int_arg(args: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(
            f"Expected {key} to be a whole number, got {raw!r}", loc=key
        ) from None
    if not low <= value <= high:
        raise InvalidInputError(f"Expected {key} in {low}..{high}, got {value}", loc=key)
    return value


@dataclass(frozen=True)
class RunsQuery:
    """The runs table's query string: ``experiment`` (repeatable), ``filter``, ``order``
    (one term: ``metrics.auc DESC``), ``offset``, ``limit`` and ``columns`` (repeatable
    or comma-separated ``params.X``, ``metrics.X``, ``tags.X``)."""

    experiments: tuple[str, ...] = ()
    filter: str = ""
    order: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    columns: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, args: Any) -> RunsQuery:
        """From a request's ``query_params`` (a multi-dict); bad values raise 422."""
        names = tuple(n for n in args.getlist("experiment") if n)
        columns: tuple[str, ...] | None = None
        raw_columns = [c for item in args.getlist("columns") for c in item.split(",") if c]
        if raw_columns or args.get("columns_set"):
            for column in raw_columns:
                if not _COLUMN.match(column):
                    raise InvalidInputError(
                        f"Expected columns like params.KEY, metrics.KEY or tags.KEY, "
                        f"got {column!r}",
                        loc="columns",
                    )
            columns = tuple(dict.fromkeys(raw_columns))
        return cls(
            experiments=names,
            filter=(args.get("filter") or "").strip(),
            order=(args.get("order") or "").strip(),
            offset=_int_arg(args, "offset", 0, 0, 10**12),
            limit=_int_arg(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            columns=columns,
        )


@dataclass
class RunsPage:
    runs: list[Run]
    total: int
    #: every params./metrics./tags. column the page's runs have
    available: list[str]
    #: the columns shown, in order
    shown: list[str]
    #: ``(field, message, text, position)`` when the filter or order does not parse
    error: tuple[str, str, str, int] | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)


def _experiment_ids(store: SQLTrackingStore, names: Sequence[str]) -> list[str] | None:
    if not names:
        return None
    return [store.require_experiment(name).id for name in names]


def _count(conn: Connection, experiment_ids: list[str] | None, filter: str) -> int:
    query = select(func.count()).select_from(runs)
    if experiment_ids is not None:
        query = query.where(runs.c.experiment_id.in_(experiment_ids))
    where = compile_filter(filter)
    if where is not None:
        query = query.where(where)
    return int(conn.execute(query).scalar_one())


def _available(page: Sequence[Run]) -> list[str]:
    params_: set[str] = set()
    metrics_: set[str] = set()
    tags_: set[str] = set()
    for run in page:
        params_.update(run.params)
        metrics_.update(run.metrics)
        tags_.update(k for k in run.tags if not k.startswith("modelyard."))
    return [
        *(f"metrics.{k}" for k in sorted(metrics_)),
        *(f"params.{k}" for k in sorted(params_)),
        *(f"tags.{k}" for k in sorted(tags_)),
    ]


def _default_columns(available: Sequence[str]) -> list[str]:
    chosen = [c for c in available if c.startswith("metrics.")][:DEFAULT_EACH]
    chosen += [c for c in available if c.startswith("params.")][:DEFAULT_EACH]
    return chosen


def cell(run: Run, column: str) -> Any:
    """The value of ``params.X``, ``metrics.X`` or ``tags.X`` for ``run`` (None if absent)."""
    kind, _, key = column.partition(".")
    if kind == "metrics":
        return run.metrics.get(key)
    if kind == "params":
        return run.params.get(key)
    return run.tags.get(key)


def runs_page(db: Database, query: RunsQuery) -> RunsPage:
    """One page of the runs table: the runs, the total that match, the columns."""
    store = SQLTrackingStore(db)
    ids = _experiment_ids(store, query.experiments)
    order = [query.order] if query.order else []
    try:
        parse_order(order)
    except FilterSyntaxError as exc:
        return RunsPage([], 0, [], [], ("order", _message(exc), exc.text, exc.position))
    try:
        found = store.search_runs(
            ids, filter=query.filter, order_by=order, max_results=query.limit, offset=query.offset
        )
        with db.read() as conn:
            total = _count(conn, ids, query.filter)
    except FilterSyntaxError as exc:
        return RunsPage([], 0, [], [], ("filter", _message(exc), exc.text, exc.position))
    available = _available(found)
    shown = list(query.columns) if query.columns is not None else _default_columns(available)
    return RunsPage(found, total, available, shown)


def _message(exc: FilterSyntaxError) -> str:
    """The error's first line without the ``(column N)`` the page shows by marking."""
    return str(exc).split("\n", 1)[0]


def metric_histories(
    conn: Connection, run_ids: Sequence[str], keys: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, list[Any]]]]:
    """``{run id: {key: {"step": [...], "time": [...], "value": [...]}}}`` in one query.

    A NaN (stored as NULL on SQLite) is None, which a chart draws as a gap.
    """
    query = select(
        metrics.c.run_id, metrics.c.key, metrics.c.step, metrics.c.timestamp, metrics.c.value
    ).where(metrics.c.run_id.in_(list(run_ids)))
    if keys is not None:
        query = query.where(metrics.c.key.in_(list(keys)))
    query = query.order_by(metrics.c.run_id, metrics.c.key, metrics.c.step, metrics.c.timestamp)
    out: dict[str, dict[str, dict[str, list[Any]]]] = {r: {} for r in run_ids}
    for run_id, key, step, timestamp, value in conn.execute(query).all():
        series = out[run_id].get(key)
        if series is None:
            series = out[run_id][key] = {"step": [], "time": [], "value": []}
        series["step"].append(step)
        series["time"].append(timestamp)
        series["value"].append(None if value is None or math.isnan(value) else value)
    return out


def inputs_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[DatasetInput]]:
    """Every input of these runs, in one query."""
    query = (
        select(run_inputs)
        .where(run_inputs.c.run_id.in_(list(run_ids)))
        .order_by(run_inputs.c.run_id, run_inputs.c.id)
    )
    out: dict[str, list[DatasetInput]] = {r: [] for r in run_ids}
    for r in conn.execute(query).all():
        out[r.run_id].append(
            DatasetInput(r.name, r.context, r.digest, json.loads(r.schema), r.num_rows, r.source)
        )
    return out


def produced_versions(conn: Connection, run_ids: Sequence[str]) -> list[tuple[str, int, str]]:
    """``(model name, version, run id)`` of every version registered from these runs."""
    query = (
        select(model_versions.c.name, model_versions.c.version, model_versions.c.run_id)
        .where(model_versions.c.run_id.in_(list(run_ids)))
        .order_by(model_versions.c.name, model_versions.c.version)
    )
    return [(name, int(version), run_id) for name, version, run_id in conn.execute(query).all()]


def runs_with_artifact(conn: Connection, run_ids: Sequence[str], path: str) -> set[str]:
    """Which of these runs logged an artifact at ``path`` (one query)."""
    if not run_ids:
        return set()
    query = select(run_artifacts.c.run_id).where(
        run_artifacts.c.run_id.in_(list(run_ids)), run_artifacts.c.path == path
    )
    return set(conn.execute(query).scalars().all())


def checked_run_id(run_id: str) -> str:
    """A run id from a URL; anything that cannot be one is a 404, not a query."""
    if not _RUN_ID.match(run_id):
        raise NotFoundError(f"No run {run_id!r}")
    return run_id


def runs_by_id(db: Database, run_ids: Sequence[str]) -> list[Run]:
    """These runs, in the order given; an unknown id is a 404."""
    store = SQLTrackingStore(db)
    quoted = ", ".join(f"'{checked_run_id(i)}'" for i in run_ids)
    found = {
        r.id: r
        for r in store.search_runs(
            None, filter=f"id in ({quoted})", order_by=[], max_results=len(run_ids)
        )
    }
    missing = [i for i in run_ids if i not in found]
    if missing:
        raise NotFoundError(f"No run {missing[0]!r}")
    return [found[i] for i in run_ids]


@dataclass
class Compare:
    runs: list[Run]
    #: ``(key, values per run, differs)`` over the union of params
    params: list[tuple[str, list[str | None], bool]]
    #: latest metric values: ``(key, values per run, differs)``
    metrics: list[tuple[str, list[float | None], bool]]
    #: ``(name, context, digests per run, same)``
    inputs: list[tuple[str, str, list[str | None], bool]]
    #: the metrics charted (each chart reads its curves from ``metric_curves`` when shown)
    chart_keys: list[str]


def _diff_rows(runs_: Sequence[Run], attribute: str) -> list[tuple[str, list[Any], bool]]:
    keys = sorted({k for r in runs_ for k in getattr(r, attribute)})
    rows = []
    for key in keys:
        values = [getattr(r, attribute).get(key) for r in runs_]
        shown = [json.dumps(v) if isinstance(v, float) and math.isnan(v) else v for v in values]
        rows.append((key, values, len({repr(v) for v in shown}) > 1))
    return rows


def _input_rows(
    runs_: Sequence[Run], inputs: Mapping[str, list[DatasetInput]]
) -> list[tuple[str, str, list[str | None], bool]]:
    keys = sorted({(i.name, i.context) for r in runs_ for i in inputs[r.id]})
    rows = []
    for name, context in keys:
        digests = [
            next((i.digest for i in inputs[r.id] if (i.name, i.context) == (name, context)), None)
            for r in runs_
        ]
        rows.append((name, context, digests, len(set(digests)) == 1))
    return rows


def compare_runs(db: Database, run_ids: Sequence[str]) -> Compare:
    """Params diff, metrics, inputs and the metrics to chart of these runs."""
    ids = list(dict.fromkeys(run_ids))
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise InvalidInputError(
            f"Expected 1 to {MAX_COMPARE} runs to compare, got {len(ids)}", loc="run"
        )
    chosen = runs_by_id(db, ids)
    with db.read() as conn:
        inputs = inputs_of(conn, ids)
    return Compare(
        runs=chosen,
        params=_diff_rows(chosen, "params"),
        metrics=_diff_rows(chosen, "metrics"),
        inputs=_input_rows(chosen, inputs),
        chart_keys=sorted({k for r in chosen for k in r.metrics}),
    )


def metric_curves(db: Database, run_ids: Sequence[str], key: str) -> list[dict[str, Any]]:
    """One metric's history for each of these runs that has it, in the order given:
    ``[{"run", "name", "step", "time", "value"}, ...]`` (one query for the points)."""
    ids = list(dict.fromkeys(run_ids))
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise InvalidInputError(f"Expected 1 to {MAX_COMPARE} runs, got {len(ids)}", loc="run")
    chosen = runs_by_id(db, ids)
    with db.read() as conn:
        histories = metric_histories(conn, ids, [key])
    return [
        {"run": run.id, "name": run.name, **histories[run.id][key]}
        for run in chosen
        if key in histories[run.id]
    ]
