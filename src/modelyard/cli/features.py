"""``modelyard features plan|apply|list|show|materialize|materialize-incremental|...``.

Also ``historical`` (a training set from an entity file), ``online`` (served values) and
``check-skew`` (served values against the offline join).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, err_console, fmt_time, parse_time, print_json
from modelyard.engine import engine_for
from modelyard.errors import InvalidInputError
from modelyard.features.keys import KeyType, parse_text_key
from modelyard.features.online import FeatureStatus
from modelyard.features.repo import to_builtins
from modelyard.features.skew import LoggedSkewReport
from modelyard.features.store import FeatureStore, MaterializeResult, Plan
from modelyard.features.validation import key_types

app = typer.Typer(help="Feature definitions, materialization and retrieval.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="local (this process) or ray (entity-key partitions as Ray tasks); "
        "default: engine in modelyard.yaml.",
    ),
]
ViewsOpt = Annotated[
    list[str] | None, typer.Option("--view", help="Only this view (repeatable; default: all).")
]
FeaturesOpt = Annotated[
    list[str] | None, typer.Option("--features", "-f", help="A view:feature ref (repeatable).")
]
ServiceOpt = Annotated[str | None, typer.Option("--service", "-s", help="A feature service.")]

_MARKS = {"add": "+", "change": "~", "remove": "-", "unchanged": " "}


def store_from(ctx: typer.Context) -> FeatureStore:
    store = FeatureStore(settings_from(ctx))
    ctx.find_root().call_on_close(store.close)
    return store


def _print_plan(plan: Plan, applied: bool) -> None:
    pending = plan.pending
    if not pending:
        console.print("No changes: the applied definitions match the code.")
        return
    for change in pending:
        versions = f"v{change.version_from or '-'} → v{change.version_to or '-'}"
        console.print(
            f"{_MARKS[change.action]} {change.kind} {escape(change.name)} ({versions})",
            soft_wrap=True,
        )
    counts = {a: sum(c.action == a for c in pending) for a in ("add", "change", "remove")}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n)
    console.print(f"{'Applied' if applied else 'Plan'}: {summary}.")


@app.command("plan")
def plan(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What changed in the code since the last apply (added, changed, removed)."""
    result = store_from(ctx).plan()
    if as_json:
        print_json(result.to_dict())
        return
    _print_plan(result, applied=False)


@app.command("apply")
def apply(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check every view against its source, then record the definitions."""
    result = store_from(ctx).apply()
    if as_json:
        print_json(result.to_dict())
        return
    _print_plan(result, applied=True)


def _last(store: FeatureStore, view: str) -> MaterializeResult | None:
    history = store.materializations(view)
    return history[-1] if history else None


@app.command("list")
def list_views(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The applied feature views."""
    store = store_from(ctx)
    rows: list[dict[str, Any]] = []
    for view in store.list_views():
        record = store.applied("view", view.name)
        last = _last(store, view.name)
        rows.append(
            {
                "name": view.name,
                "kind": "view",
                "version": record.version,
                "join_keys": view.join_keys,
                "features": view.feature_names,
                "ttl_s": None if view.ttl is None else view.ttl.total_seconds(),
                "last_materialized": None if last is None else last.to_dict(),
            }
        )
    for odfv in store.applied_on_demand():
        rows.append(
            {
                "name": odfv.name,
                "kind": "on_demand",
                "version": store.applied("on_demand", odfv.name).version,
                "join_keys": [],
                "features": odfv.feature_names,
                "inputs": [*odfv.inputs, *(f"request:{f.name}" for f in odfv.request)],
                "ttl_s": None,
                "last_materialized": None,
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No applied feature views. Define them in features.py, then apply.")
        return
    table = Table(title=f"{len(rows)} view(s)", title_justify="left")
    for col in ("view", "version", "keys", "features", "ttl", "materialized to"):
        table.add_column(col)
    for row in rows:
        shown = row["last_materialized"]
        table.add_row(
            escape(row["name"] + (" (on demand)" if row["kind"] == "on_demand" else "")),
            str(row["version"]),
            escape(", ".join(row["join_keys"])),
            escape(", ".join(row["features"])),
            "-" if row["ttl_s"] is None else f"{row['ttl_s']:g}s",
            "-" if shown is None else shown["end"],
        )
    console.print(table)
    for row in rows:
        if row["kind"] == "on_demand":
            console.print(f"  {escape(row['name'])} reads {escape(', '.join(row['inputs']))}")


@app.command("show")
def show(
    ctx: typer.Context,
    view: Annotated[str, typer.Argument(help="The view's name.")],
    as_json: JsonOpt = False,
) -> None:
    """One applied view: its definition, version, hash and materializations."""
    store = store_from(ctx)
    if view in {o.name for o in store.applied_on_demand()}:
        _show_on_demand(store, view, as_json)
        return
    record = store.applied("view", view)
    resolved = store.get_view(view)
    history = [m.to_dict() for m in store.materializations(view)]
    data = {
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "applied_at": record.applied_at,
        "definition": json.loads(record.definition),
        "materializations": history,
    }
    if as_json:
        print_json(data)
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    source = to_builtins(resolved)["source"]
    for key, value in (
        ("view", f"{record.name} v{record.version}"),
        ("sha256", record.sha256),
        ("applied", fmt_time(record.applied_at)),
        ("keys", ", ".join(resolved.join_keys)),
        ("source", source.get("path") or source.get("query")),
        ("time", source["timestamp_field"]),
        ("created", source["created_timestamp_field"] or "-"),
        ("ttl", str(resolved.ttl) if resolved.ttl else "-"),
    ):
        info.add_row(key, escape(str(value)))
    console.print(info)
    table = Table(title="features", title_justify="left")
    table.add_column("feature")
    table.add_column("type")
    for feature in resolved.features:
        table.add_row(escape(feature.name), feature.dtype)
    for aggregation in resolved.aggregations:
        table.add_row(escape(aggregation.output_name), f"{aggregation.fn} aggregation")
    console.print(table)
    if history:
        console.print(
            f"{len(history)} materialization(s); latest to {history[-1]['end']}, "
            f"{history[-1]['rows']} rows"
        )


def _show_on_demand(store: FeatureStore, name: str, as_json: bool) -> None:
    record = store.applied("on_demand", name)
    definition = json.loads(record.definition)
    data = {
        "name": record.name,
        "kind": "on_demand",
        "version": record.version,
        "sha256": record.sha256,
        "applied_at": record.applied_at,
        "definition": definition,
    }
    if as_json:
        print_json(data)
        return
    console.print(f"on-demand view {escape(name)} v{record.version}  sha256 {record.sha256}")
    console.print(f"applied {fmt_time(record.applied_at)}")
    console.print(f"inputs: {escape(', '.join(definition['inputs']) or '-')}")
    request = ", ".join(f"{f['name']} ({f['dtype']})" for f in definition["request"])
    console.print(f"request fields: {escape(request or '-')}")
    outputs = ", ".join(f"{f['name']} ({f['dtype']})" for f in definition["features"])
    console.print(f"features: {escape(outputs)}")
    console.print(escape(definition["code"]), highlight=False)


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(view: str, rows: int) -> None:
            if view not in tasks:
                tasks[view] = bar.add_task(f"materializing {view}", total=None)
            bar.update(tasks[view], completed=rows)

        yield update


def _print_results(results: list[MaterializeResult], as_json: bool) -> None:
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    if not results:
        console.print("No applied feature views to materialize.")
        return
    table = Table(title="materialized", title_justify="left")
    for col in ("view", "rows", "start", "end", "watermark"):
        table.add_column(col)
    for r in results:
        table.add_row(
            escape(r.view),
            str(r.rows),
            "-" if r.start is None else r.start.isoformat(),
            r.end.isoformat(),
            "-" if r.watermark is None else r.watermark.isoformat(),
        )
    console.print(table)


@app.command("materialize")
def materialize(
    ctx: typer.Context,
    start: Annotated[
        str | None, typer.Option(help="Earliest event time, ISO with zone (default: all).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Event times before this, ISO with zone (default: now).")
    ] = None,
    views: ViewsOpt = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write each view's latest values per entity to the online store."""
    store = store_from(ctx)
    chosen = engine_for(store.settings, engine)  # a bad --engine is named as the option
    stop = parse_time(end, "end") or datetime.now(UTC)
    with _progress(as_json) as progress:
        results = store.materialize(
            parse_time(start, "start"), stop, views or None, progress, engine=chosen
        )
    _print_results(results, as_json)


@app.command("materialize-incremental")
def materialize_incremental(
    ctx: typer.Context,
    end: Annotated[
        str | None, typer.Option(help="Event times before this, ISO with zone (default: now).")
    ] = None,
    views: ViewsOpt = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the rows that became available since the last materialization."""
    store = store_from(ctx)
    chosen = engine_for(store.settings, engine)
    with _progress(as_json) as progress:
        results = store.materialize_incremental(
            parse_time(end, "end"), views or None, progress, engine=chosen
        )
    _print_results(results, as_json)


def _wanted(features: list[str] | None, service: str | None) -> str | list[str]:
    if service and features:
        raise InvalidInputError("Expected --features or --service, got both", loc="features")
    if service:
        return service
    if not features:
        raise InvalidInputError(
            "Expected features: --features view:feature (repeatable) or --service NAME",
            loc="features",
        )
    return features


# an ISO time ending in a UTC offset (Z, +01, +01:00, +0100) after its clock time
_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.I)


def _parse_times(values: Any, column: str, file: str, loc: str) -> Any:
    """ISO times from text, each with its own offset converted to UTC.

    Times all without an offset stay naive (retrieval then needs ``--assume-utc``); a
    column mixing both is refused, naming one of each.
    """
    import pandas as pd

    text = values.dropna().astype(str).str.strip()
    aware = text.map(lambda v: _OFFSET.search(v) is not None).astype(bool)
    if bool(aware.any()) and not bool(aware.all()):
        raise InvalidInputError(
            f"Expected times in column {column!r} of {file} all with a UTC offset or all "
            f"without, got {text[aware].iloc[0]!r} and {text[~aware].iloc[0]!r}",
            loc=loc,
        )
    try:
        return pd.to_datetime(values, format="ISO8601", utc=bool(aware.any()))
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"Expected ISO times in column {column!r} of {file}: {exc}", loc=loc
        ) from exc


def _refs(store: FeatureStore, wanted: str | list[str]) -> list[str]:
    return store.get_service(wanted).refs() if isinstance(wanted, str) else list(wanted)


def _key_types(store: FeatureStore, refs: Sequence[str]) -> dict[str, KeyType]:
    """The type of each join key of the views ``refs`` read (on-demand inputs included)."""
    on_demand = {o.name: o for o in store.applied_on_demand()}
    names: list[str] = []
    for ref in refs:
        view = ref.partition(":")[0]
        odfv = on_demand.get(view)
        names.extend([r.partition(":")[0] for r in odfv.inputs] if odfv else [view])
    applied = {v.name: v for v in store.list_views()}
    out: dict[str, KeyType] = {}
    for name in dict.fromkeys(names):
        found = applied.get(name)
        if found is None:
            continue  # retrieval names an unknown view itself
        for key, kind in zip(found.join_keys, key_types(found), strict=True):
            if out.setdefault(key, kind) != kind:
                raise InvalidInputError(
                    f"Join key {key!r} holds {out[key]} keys in one view and {kind} keys in "
                    f"view {name!r}; ask for their features separately",
                    loc=f"features.{name}",
                )
    return out


def _text_keys(path: Path, frame: Any, types: dict[str, KeyType], loc: str) -> Any:
    """``frame`` with its key columns re-read from the CSV as text, typed like the source.

    CSV has no types: pandas would read ``01`` and ``1`` as the same integer. Each key is
    read as written and parsed by ``parse_text_key`` (an empty cell is a null key).
    """
    import pandas as pd

    keys = [k for k in types if k in frame.columns]
    if not keys:
        return frame
    text = pd.read_csv(path, usecols=keys, dtype=str, keep_default_na=False)
    for key in keys:
        parsed = [
            parse_text_key(v if v != "" else None, types[key], f"{loc}.{key}") for v in text[key]
        ]
        frame[key] = pd.Series(parsed, index=frame.index, dtype=object)
    return frame


def _read_entities(path: Path, time_column: str, types: dict[str, KeyType]) -> Any:
    import pandas as pd

    if not path.is_file():
        raise InvalidInputError(f"Expected an entity file, got {str(path)!r}: no such file")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix != ".csv":
        raise InvalidInputError(
            f"Expected a .parquet or .csv entity file, got {path.name!r}", loc="entity_file"
        )
    frame = _text_keys(path, pd.read_csv(path), types, "entity_file")
    if time_column in frame.columns:
        frame[time_column] = _parse_times(
            frame[time_column], time_column, path.name, f"entity_file.{time_column}"
        )
    return frame


@app.command("historical")
def historical(
    ctx: typer.Context,
    entity_file: Annotated[Path, typer.Argument(help="Entity rows: .parquet or .csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write: .parquet or .csv.")],
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    as_served: Annotated[bool, typer.Option(help="Join on availability time.")] = False,
    assume_utc: Annotated[bool, typer.Option(help="Read naive times as UTC.")] = False,
    time_column: Annotated[str, typer.Option(help="The entity time column.")] = "event_timestamp",
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A point-in-time correct training set: ENTITY_FILE joined with the features."""
    if out.suffix not in (".parquet", ".csv"):
        raise InvalidInputError(f"Expected --out FILE.parquet or .csv, got {out.name!r}", loc="out")
    wanted = _wanted(features, service)
    store = store_from(ctx)
    chosen = engine_for(store.settings, engine)
    frame = _read_entities(entity_file, time_column, _key_types(store, _refs(store, wanted)))
    result = store.get_historical_features(
        frame,
        wanted,
        as_served=as_served,
        assume_utc=assume_utc,
        entity_time_column=time_column,
        engine=chosen,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        result.to_csv(out, index=False)
    else:
        result.to_parquet(out, index=False)
    summary = {"out": str(out), "rows": len(result), "columns": [str(c) for c in result.columns]}
    if as_json:
        print_json(summary)
        return
    console.print(
        f"Wrote {len(result)} rows, {len(result.columns)} columns to {escape(str(out))}",
        soft_wrap=True,
    )


def _request_value(raw: str) -> Any:
    """A request field's value: numbers become numbers; anything else a string."""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        return raw
    return value


def _entity_pairs(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"Expected KEY=VALUE, got {pair!r}", loc="entities")
        out.append((key, raw))
    return out


def _entity_rows(pairs: list[tuple[str, str]], types: dict[str, KeyType]) -> dict[str, list[Any]]:
    """Columns from KEY=VALUE pairs: join keys typed like their source, never guessed."""
    columns: dict[str, list[Any]] = {}
    for key, raw in pairs:
        kind = types.get(key)
        value = _request_value(raw) if kind is None else parse_text_key(raw, kind, key)
        columns.setdefault(key, []).append(value)
    if len({len(v) for v in columns.values()}) > 1:
        raise InvalidInputError(
            "Expected each key the same number of times (one value per entity row), got "
            + ", ".join(f"{k} x{len(v)}" for k, v in columns.items()),
            loc="entities",
        )
    return columns


@app.command("online")
def online(
    ctx: typer.Context,
    entities: Annotated[
        list[str], typer.Argument(help="Join keys as KEY=VALUE; repeat a key for more rows.")
    ],
    features: FeaturesOpt = None,
    service: ServiceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The served feature values for one or more entities."""
    pairs = _entity_pairs(entities)
    wanted = _wanted(features, service)
    store = store_from(ctx)
    columns = _entity_rows(pairs, _key_types(store, _refs(store, wanted)))
    got = store.get_online_features(columns, wanted)
    n = len(next(iter(columns.values())))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {k: v[i] for k, v in columns.items()}
        row["features"] = {ref: got.values[ref][i].as_py() for ref in got.refs}
        row["status"] = {
            ref: FeatureStatus(int(got.status[ref][i])).name.lower() for ref in got.refs
        }
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    table = Table(title="online features", title_justify="left")
    for key in columns:
        table.add_column(escape(key))
    for ref in got.refs:
        table.add_column(escape(ref))
    for row in rows:
        values = [
            "-" if row["status"][ref] != "present" else str(row["features"][ref])
            for ref in got.refs
        ]
        table.add_row(*(escape(str(row[k])) for k in columns), *(escape(v) for v in values))
    console.print(table)


def _read_log(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise InvalidInputError(f"Expected a log file, got {str(path)!r}: no such file", loc="log")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".ndjson"):
        records = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise InvalidInputError(
                    f"Expected one JSON object per line of {path.name}: {exc}",
                    loc=f"log:{number}",
                ) from exc
        frame = pd.DataFrame(records)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise InvalidInputError(
            f"Expected a .parquet, .csv or .jsonl log, got {path.name!r}", loc="log"
        )
    for column in ("time", "timestamp", "event_timestamp"):
        if column in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = _parse_times(frame[column], column, path.name, f"log.{column}")
    return frame


def _print_logged(report: LoggedSkewReport) -> None:
    table = Table(title="training/serving skew over logged vectors", title_justify="left")
    for col in ("feature", "checked", "mismatches", "served null", "offline null", "verdict"):
        table.add_column(col)
    for ref, counts in report.features.items():
        table.add_row(
            escape(ref),
            str(counts["checked"]),
            str(counts["mismatches"]),
            str(counts["served_null"]),
            str(counts["offline_null"]),
            "ok" if not counts["mismatches"] else "SKEW",
        )
    console.print(table)
    for example in report.examples:
        console.print(
            f"  row {example['row']} at {example['time']} {escape(str(example['keys']))}"
            f" {escape(example['feature'])}: served {escape(repr(example['served']))},"
            f" offline {escape(repr(example['offline']))}",
            soft_wrap=True,
        )


@app.command("check-skew")
def check_skew(
    ctx: typer.Context,
    log: Annotated[
        Path | None,
        typer.Argument(
            help="Logged feature vectors (.parquet, .csv, .jsonl): keys, a time column and "
            "view:feature columns. Without it, the online store is compared instead."
        ),
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="The log's time column (default: time or timestamp).")
    ] = None,
    views: ViewsOpt = None,
    sample: Annotated[int, typer.Option(help="Entities to check per view.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Served feature values against the offline join: exits 1 on any mismatch.

    With LOG, each logged vector is recomputed offline as of its time. Without it, a
    sample of each view's entities is read from the online store and compared with the
    offline join as of the last materialization (exit 1 also when never materialized).
    """
    if log is not None:
        store = store_from(ctx)
        frame = _read_log(log)
        if log.suffix == ".csv":
            refs = [str(c).removeprefix("feature.") for c in frame.columns if ":" in str(c)]
            frame = _text_keys(log, frame, _key_types(store, refs), "log")
        logged = store.check_logged_skew(frame, time_column=time_column)
        if as_json:
            print_json(logged.to_dict())
        else:
            _print_logged(logged)
        if not logged.ok:
            raise typer.Exit(1)
        return
    reports = store_from(ctx).check_skew(views or None, sample)
    if as_json:
        print_json([r.to_dict() for r in reports])
    else:
        table = Table(title="training/serving skew", title_justify="left")
        for col in ("view", "as of", "entities", "mismatches", "verdict"):
            table.add_column(col)
        for r in reports:
            counts = ", ".join(f"{k}: {v}" for k, v in r.mismatches.items() if v) or "-"
            verdict = "ok" if r.ok else ("not materialized" if r.as_of is None else "SKEW")
            table.add_row(
                escape(r.view),
                "-" if r.as_of is None else r.as_of.isoformat(),
                str(r.entities),
                escape(counts),
                verdict,
            )
        console.print(table)
        for r in reports:
            for example in r.examples:
                where = f"{r.view} {example['key']} {example['feature']}"
                console.print(
                    f"  {escape(where)}:"
                    f" online {escape(repr(example['online']))},"
                    f" offline {escape(repr(example['offline']))}",
                    soft_wrap=True,
                )
    if not all(r.ok for r in reports):
        raise typer.Exit(1)
