"""``modelyard monitor drift|performance|run|skew|alerts|report``.

Drift and performance per window over the prediction log of a registered model version
(stored in the metadata store), alert incidents, the HTML report; and ``drift
--reference FILE --current FILE`` for plain Parquet or CSV files, without a registry.

Exit codes: 0 the check passed, 1 the check failed (``drift``: the latest window or the
file drifted or lost a feature; ``run``: that, or an alert opened or updated;
``skew``: a mismatch), 2 what kept the check from running: bad input or usage, a
missing model or project, an unreadable file or store (every ``ModelyardError`` of a
monitor command exits 2, never 1, which scripts read as drift). A failure is one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, err_console, parse_time, print_json
from modelyard.config import Settings
from modelyard.engine import engine_for
from modelyard.errors import InvalidInputError, ModelyardError, NotFoundError
from modelyard.monitoring import DriftReport, Reference
from modelyard.monitoring.alerts import AlertEvent
from modelyard.monitoring.files import read_pair
from modelyard.monitoring.monitor import Monitor, drift_settings
from modelyard.monitoring.windows import parse_window
from modelyard.store.monitor_results import Incident, WindowResult

app = typer.Typer(
    help="Drift, performance, alerts and reports over the prediction log.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
RefArg = Annotated[str, typer.Argument(help="Model: NAME, NAME@ALIAS or NAME/VERSION.")]
WindowOpt = Annotated[
    str | None, typer.Option("--window", "-w", help="Window length: 1d, 6h, 1w (default: config).")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this ISO time with a zone (inclusive).")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Up to this ISO time with a zone (exclusive).")
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="local (this process) or ray (windows in parallel as Ray tasks); "
        "default: engine in modelyard.yaml.",
    ),
]
LogDirOpt = Annotated[
    Path | None, typer.Option("--log-dir", help="Prediction log folder (default: config).")
]


Command = TypeVar("Command", bound=Callable[..., None])


def _command(name: str) -> Callable[[Command], Command]:
    """Register a monitor command whose failures exit 2 (1 means the check failed)."""

    def register(function: Command) -> Command:
        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> None:
            try:
                function(*args, **kwargs)
            except InvalidInputError:
                raise
            except ModelyardError as exc:  # a missing model or project, a store failure
                raise InvalidInputError(exc.message) from exc

        app.command(name)(checked)
        return function

    return register


def _window(value: str | None) -> str | None:
    """``--window`` checked here, so a bad one is reported as the option."""
    if value is not None:
        try:
            parse_window(value)
        except InvalidInputError as exc:
            text = exc.message.removesuffix(f" - at {exc.loc}")
            raise InvalidInputError(text, loc="--window") from None
    return value


def _monitor(ctx: typer.Context, log_dir: Path | None, engine: str | None = None) -> Monitor:
    settings = settings_from(ctx)
    chosen = engine_for(settings, engine)  # a bad --engine is named as the option
    monitor = Monitor(settings, log_dir=log_dir, engine=chosen)
    ctx.find_root().call_on_close(monitor.close)
    return monitor


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task("windows", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance


def _day(us: int) -> str:
    moment = datetime.fromtimestamp(us / 1e6, UTC)
    return moment.strftime("%Y-%m-%d" if moment.hour == moment.minute == 0 else "%Y-%m-%d %H:%M")


def _drift_table(title: str, windows: list[WindowResult]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("window", "rows", "prediction drift", "drifted features (top causes)"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for w in windows:
        ranked = w.summary.get("ranked", [])
        shown = ", ".join(ranked[:4]) + (f" +{len(ranked) - 4}" if len(ranked) > 4 else "")
        table.add_row(
            _day(w.start_us),
            f"{w.rows:,}",
            "[red]yes[/]" if w.summary.get("prediction_drift") else "no",
            escape(shown) or "-",
        )
    return table


def _report_table(report: DriftReport) -> Table:
    table = Table(title="Drift per column", title_justify="left")
    for col in (
        "column",
        "kind",
        "test",
        "p (adjusted)",
        "effect",
        "threshold",
        "missing",
        "drift",
    ):
        table.add_column(col, justify="left" if col in ("column", "kind", "test") else "right")
    rows = [(n, c, "output") for n, c in report.outputs.items()]
    rows += [(c.name, c, "feature") for c in report.ranked()]
    for name, c, role in rows:
        table.add_row(
            escape(name) + (" (output)" if role == "output" else ""),
            c.kind,
            c.test,
            f"{c.p_adjusted:.2g}",
            f"{c.effect_name} {c.effect:.3f}",
            f"{c.threshold:.3f}",
            f"{c.missing_reference:.1%} → {c.missing_current:.1%}",
            "[red]yes[/]" if c.drifted else "no",
        )
    return table


@_command("drift")
def drift(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="Model: NAME, NAME@ALIAS or NAME/VERSION.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Reference data file (Parquet or CSV).")
    ] = None,
    current: Annotated[
        Path | None, typer.Option("--current", help="Current data file (Parquet or CSV).")
    ] = None,
    prediction: Annotated[
        list[str] | None,
        typer.Option(
            "--prediction", help="With files: a column holding model outputs (repeatable)."
        ),
    ] = None,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log_dir: LogDirOpt = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift per window of REF's prediction log against its package's reference profile.

    Every window is stored in the metadata store. With --reference and --current, compare
    two files instead. Exits 1 when the latest window (or the file) drifts.
    """
    if reference is not None or current is not None:
        if ref is not None or reference is None or current is None:
            raise InvalidInputError(
                "Expected either a model REF, or both --reference FILE and --current FILE",
                loc="--reference",
            )
        _drift_files(ctx, reference, current, prediction or [], as_json)
        return
    if ref is None:
        raise InvalidInputError("Expected a model REF (or --reference and --current)", loc="REF")
    monitor = _monitor(ctx, log_dir, engine)
    model = monitor.model(ref)
    with _progress(as_json) as advance:
        windows = monitor.drift(
            model,
            window=_window(window),
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            progress=advance,
        )
    if as_json:
        print_json(
            {
                "model": model.name,
                "version": model.version,
                "windows": [_window_json(w) for w in windows],
            }
        )
    else:
        title = f"{model.name} v{model.version}: drift against the reference profile"
        console.print(_drift_table(title, windows))
        if not windows:
            console.print("No logged predictions in that range.")
    if windows and windows[-1].alarm:
        raise typer.Exit(1)


def _drift_files(
    ctx: typer.Context, reference: Path, current: Path, outputs: list[str], as_json: bool
) -> None:
    ref_table, cur_table, read_findings = read_pair(reference, current)
    for name in outputs:
        for table, option in ((ref_table, "--reference"), (cur_table, "--current")):
            if name not in table.column_names:
                raise InvalidInputError(f"Expected a column {name!r} in the file", loc=option)
    features = [c for c in ref_table.column_names if c not in outputs]
    project = _project_settings(ctx)
    settings = None if project is None else drift_settings(project.monitoring.drift)
    prepared = Reference.from_data(
        ref_table.select(features), outputs=ref_table.select(outputs) if outputs else None
    )
    cur_features = [c for c in cur_table.column_names if c not in outputs]
    if not set(features) & set(cur_features):
        raise InvalidInputError(
            f"Expected a column of --reference ({', '.join(features)}) in the file, "
            f"got {', '.join(cur_features) or 'no other column'}",
            loc="--current",
        )
    report = prepared.compare(
        cur_table.select(cur_features),
        outputs=cur_table.select(outputs) if outputs else None,
        settings=settings,
    )
    report.findings[:0] = read_findings
    if as_json:
        print_json({**report.to_dict(), "ranked": [c.name for c in report.ranked()]})
    else:
        console.print(_report_table(report))
        for finding in report.findings:
            console.print(f"note: {escape(finding)}", soft_wrap=True)
        drifted = report.drifted_columns
        gone = report.missing_columns
        console.print(
            f"{len(drifted)} of {len(report.columns)} columns drifted"
            + (f": {', '.join(map(escape, drifted))}" if drifted else "")
            + ("; prediction drift" if report.prediction_drift else "")
            + (f"; missing from --current: {', '.join(map(escape, gone))}" if gone else ""),
            soft_wrap=True,
        )
    if report.alarm:
        raise typer.Exit(1)


def _project_settings(ctx: typer.Context) -> Settings | None:
    """The project's settings, or None outside a project (files need none)."""
    try:
        return settings_from(ctx)
    except NotFoundError:
        return None


def _window_json(w: WindowResult) -> dict[str, Any]:
    return {
        "start": datetime.fromtimestamp(w.start_us / 1e6, UTC).isoformat(),
        "end": datetime.fromtimestamp(w.end_us / 1e6, UTC).isoformat(),
        "rows": w.rows,
        "alarm": w.alarm,
        **{k: v for k, v in w.summary.items() if k not in ("start", "end")},
    }


def _metric(summary: dict[str, Any], name: str) -> str:
    metric = summary.get("metrics", {}).get(name)
    if not metric or metric.get("value") is None:
        return "-"
    low, high = metric.get("low"), metric.get("high")
    band = f" [{low:.3f}-{high:.3f}]" if low is not None and high is not None else ""
    return f"{metric['value']:.3f}{band}"


@_command("performance")
def performance(
    ctx: typer.Context,
    ref: RefArg,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log_dir: LogDirOpt = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Metrics per window from the feedback labels (matured windows), and CBPE estimates."""
    monitor = _monitor(ctx, log_dir, engine)
    model = monitor.model(ref)
    windows = monitor.performance(
        model,
        window=_window(window),
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )
    if as_json:
        print_json(
            {
                "model": model.name,
                "version": model.version,
                "windows": [_window_json(w) for w in windows],
            }
        )
        return
    _print_performance(model.name, model.version, windows, model.classes is not None)


def _print_performance(
    name: str, version: int, windows: list[WindowResult], classifier: bool
) -> None:
    table = Table(title=f"{name} v{version}: performance", title_justify="left")
    metrics = ["auc", "accuracy"] if classifier else ["mae", "rmse"]
    columns = ["window", "rows", "labelled", *metrics]
    if classifier:
        columns += ["est. auc", "est. accuracy"]
    for col in columns:
        table.add_column(col, justify="left" if col == "window" else "right")
    for w in windows:
        s = w.summary
        cells = [
            _day(w.start_us),
            f"{w.rows:,}",
            f"{s['coverage']:.0%}" + ("" if s["matured"] else " (not matured)"),
        ]
        cells += [_metric(s, m) for m in metrics]
        if classifier:
            est = s.get("estimated", {})
            cells += ["-" if est.get(k) is None else f"{est[k]:.3f}" for k in ("auc", "accuracy")]
        table.add_row(*cells)
    console.print(table)


def _events_table(events: list[AlertEvent]) -> Table:
    table = Table(title="Alerts", title_justify="left")
    for col in ("rule", "cause", "change", "breaches", "webhook", "command"):
        table.add_column(col)
    for e in events:
        table.add_row(
            escape(e.rule),
            escape(e.cause),
            e.change,
            f"{e.breaches}/{e.windows}",
            escape(e.webhook or "-"),
            escape(e.command or "-"),
        )
    return table


@_command("run")
def run(
    ctx: typer.Context,
    ref: RefArg,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log_dir: LogDirOpt = None,
    notify: Annotated[
        bool, typer.Option("--notify/--no-notify", help="Send webhooks and run commands.")
    ] = True,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift, performance and the alert rules of modelyard.yaml, in one go (for a schedule).

    With --engine ray the windows are computed in parallel as Ray tasks (the same stored
    results). Exits 1 when the latest window drifts or an alert opens or updates an
    incident."""
    monitor = _monitor(ctx, log_dir, engine)
    with _progress(as_json) as advance:
        result = monitor.run(
            ref,
            window=_window(window),
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            notify=notify,
            progress=advance,
        )
    model = result.model
    if as_json:
        print_json(
            {
                "model": model.name,
                "version": model.version,
                "drift": [_window_json(w) for w in result.drift],
                "performance": [_window_json(w) for w in result.performance],
                "alerts": [e.to_dict() for e in result.events],
            }
        )
        if _failed(result.drift, result.events):
            raise typer.Exit(1)
        return
    title = f"{model.name} v{model.version}: drift against the reference profile"
    console.print(_drift_table(title, result.drift))
    _print_performance(model.name, model.version, result.performance, model.classes is not None)
    if result.events:
        console.print(_events_table(result.events))
    else:
        console.print("Alerts: no change.")
    if _failed(result.drift, result.events):
        raise typer.Exit(1)


def _failed(drift: list[WindowResult], events: list[AlertEvent]) -> bool:
    """``monitor run``'s check: the latest drift window alarms, or an alert fired."""
    fired = any(e.change in ("opened", "reopened", "updated") for e in events)
    return fired or bool(drift and drift[-1].alarm)


@_command("skew")
def skew(
    ctx: typer.Context,
    ref: RefArg,
    since: SinceOpt = None,
    until: UntilOpt = None,
    sample: Annotated[
        int, typer.Option("--sample", help="Logged rows to check, drawn at random (0: all).")
    ] = 10_000,
    log_dir: LogDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Training/serving skew: the feature vectors the server looked up, recomputed offline.

    Each logged entity request's features are recomputed by the point-in-time join as of
    the request's time; mismatches are counted per feature. Exits 1 on skew.
    """
    if sample < 0:
        raise InvalidInputError(f"Expected a sample size >= 0, got {sample}", loc="--sample")
    monitor = _monitor(ctx, log_dir)
    model = monitor.model(ref)
    found = monitor.skew(
        model,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        sample=sample or None,
    )
    if as_json:
        print_json({"model": model.name, "version": model.version, **found.to_dict()})
    else:
        table = Table(
            title=f"{model.name} v{model.version}: served vs offline ({found.rows:,} rows)",
            title_justify="left",
        )
        table.add_column("feature", no_wrap=True)
        for col in ("checked", "mismatches", "served null", "offline null"):
            table.add_column(col, justify="right")
        for ref_name, counts in found.features.items():
            bad = counts["mismatches"]
            table.add_row(
                escape(ref_name),
                f"{counts['checked']:,}",
                f"[red]{bad:,}[/]" if bad else "0",
                f"{counts['served_null']:,}",
                f"{counts['offline_null']:,}",
            )
        console.print(table)
        console.print(
            "No skew." if found.ok else "[red]Skew[/]: served values differ from the offline join."
        )
    if not found.ok:
        raise typer.Exit(1)


@_command("alerts")
def alerts(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="Only this model (NAME, NAME@ALIAS, NAME/VERSION).")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only incidents in this state: open, resolved.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Alert incidents: one per model version, rule and cause."""
    monitor = _monitor(ctx, None)
    if state is not None and state not in ("open", "resolved"):
        raise InvalidInputError(f"Expected open or resolved, got {state!r}", loc="--state")
    name = version = None
    if ref is not None:
        model = monitor.model(ref)
        name, version = model.name, model.version
    incidents = monitor.results.incidents(name, version, state)
    if as_json:
        print_json([i.to_dict() for i in incidents])
        return
    _print_incidents(incidents)


def _print_incidents(incidents: list[Incident]) -> None:
    if not incidents:
        console.print("No incidents.")
        return
    table = Table(title="Incidents", title_justify="left")
    for col in ("id", "model", "rule", "cause", "state", "opened", "updated", "breaches"):
        table.add_column(col)
    for i in incidents:
        table.add_row(
            str(i.id),
            f"{escape(i.model)} v{i.version}",
            escape(i.rule),
            escape(i.cause),
            "[red]open[/]" if i.state == "open" else i.state,
            _day(i.opened_at_us),
            _day(i.updated_at_us),
            f"{i.detail.get('breaches')}/{i.detail.get('windows')}",
        )
    console.print(table)


def _check_out(out: Path) -> None:
    """``--out`` names a file in an existing folder (checked before the work)."""
    if out.is_dir():
        raise InvalidInputError(f"Expected a file, got the folder {str(out)!r}", loc="--out")
    if not out.parent.is_dir():
        raise InvalidInputError(
            f"Expected a file in an existing folder, got {str(out)!r}: "
            f"no folder {str(out.parent)!r}",
            loc="--out",
        )


@_command("report")
def report(
    ctx: typer.Context,
    ref: RefArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "monitoring-report.html"
    ),
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    log_dir: LogDirOpt = None,
    domain: Annotated[
        bool,
        typer.Option(
            "--domain/--no-domain", help="Train a domain classifier on the latest window."
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """One self-contained HTML file (works offline): drift over time, causes, distributions,
    performance, incidents. Reads the stored windows: run `monitor run` (or drift) first."""
    from modelyard.monitoring.html import write_report

    _check_out(out)
    monitor = _monitor(ctx, log_dir)
    model = monitor.model(ref)
    data = monitor.report_data(
        model,
        window=_window(window),
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        domain=domain,
    )
    try:
        path = write_report(data, out)
    except OSError as exc:
        raise InvalidInputError(f"Expected a writable file, got {exc}", loc="--out") from None
    if as_json:
        print_json({**data, "report": str(path)})
        return
    latest = data["windows"][-1] if data["windows"] else None
    if latest is not None:
        console.print(
            f"Latest window {latest['start'][:10]}: "
            + ("[red]prediction drift[/]" if latest["prediction_drift"] else "no prediction drift")
            + f", {len(latest['drift'].get('drifted_columns', []))} drifted features",
            soft_wrap=True,
        )
    causes = [c for c in data["causes"] if c.get("drifted")][:5]
    if causes:
        console.print("Top causes: " + ", ".join(escape(c["name"]) for c in causes))
    console.print(f"Wrote {path}")
