"""``modelyard runs list|show|compare``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.context import client_from
from modelyard.cli.output import console, fmt_time, fmt_value, print_json
from modelyard.tracking.entities import Run

app = typer.Typer(help="List, inspect and compare tracked runs.", no_args_is_help=True)

_STATUS_STYLE = {"RUNNING": "cyan", "FINISHED": "green", "FAILED": "red", "KILLED": "magenta"}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _duration(run: Run) -> str:
    seconds = run.duration_s
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _top_keys(dicts: list[dict[str, Any]], limit: int) -> list[str]:
    """The keys most runs have, most common first, then by name."""
    counts: dict[str, int] = {}
    for d in dicts:
        for key in d:
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k))[:limit]


def _cell(value: Any, *, digits: int = 6) -> str:
    """A value for a table cell: names, params and paths are text, never rich markup."""
    return escape(fmt_value(value, digits=digits))


def _status(run: Run) -> str:
    return f"[{_STATUS_STYLE.get(run.status.value, 'white')}]{run.status.value}[/]"


@app.command("list")
def list_runs(
    ctx: typer.Context,
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="Experiment name (repeatable).")
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option("--filter", "-f", help="e.g. \"metrics.auc > 0.8 and params.model = 'hgb'\""),
    ] = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", "-o", help="e.g. 'metrics.auc DESC' (repeatable)."),
    ] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first, optionally filtered and ordered."""
    client = client_from(ctx)
    runs = client.search_runs(
        experiment or None, filter=filter, order_by=order_by or (), max_results=max_results
    )
    if as_json:
        print_json([r.to_dict() for r in runs])
        return
    if not runs:
        console.print("No runs match. Track one with `with modelyard.start_run(...)`.")
        return
    # as many param and metric columns as the terminal has room for (~11 characters each)
    room = max(1, (console.width - 68) // 11)
    param_keys = _top_keys([r.params for r in runs], room // 3)
    metric_keys = _top_keys([r.metrics for r in runs], room - len(param_keys))
    ids = {r.id for r in runs}
    table = Table(title=f"{len(runs)} run(s)", title_justify="left", pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=8)
    several = len({r.experiment for r in runs}) > 1
    table.add_column("experiment / name" if several else "name", no_wrap=True, min_width=14)
    table.add_column("status", no_wrap=True, min_width=8)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True, min_width=5)
    for key in param_keys:
        table.add_column(escape(key), style="blue", overflow="fold")
    for key in metric_keys:
        table.add_column(escape(key), justify="right", style="bold", no_wrap=True)
    for r in runs:
        nest = "  └ " if r.parent_run_id in ids else ""
        table.add_row(
            r.id[:8],
            f"{nest}[dim]{_cell(r.experiment)}/[/]{_cell(r.name)}"
            if several
            else f"{nest}{_cell(r.name)}",
            _status(r),
            fmt_time(r.start_time)[5:16],
            _duration(r),
            *(_cell(r.params.get(k)) for k in param_keys),
            *(_cell(r.metrics.get(k), digits=4) for k in metric_keys),
        )
    console.print(table)
    if metric_keys or param_keys:
        console.print(
            "[dim]params in blue, metrics in bold; all of them: runs show ID or --json[/]"
        )


@app.command("show")
def show_run(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id, or a unique prefix of 6+ characters.")],
    as_json: JsonOpt = False,
) -> None:
    """Everything recorded about one run."""
    client = client_from(ctx)
    run = client.get_run(run_id)
    inputs = client.list_inputs(run.id)
    artifacts = client.list_artifacts(run.id)
    if as_json:
        data = run.to_dict()
        data["inputs"] = [vars(i) for i in inputs]
        data["artifacts"] = [vars(a) for a in artifacts]
        print_json(data)
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    dirty = {True: " (dirty)", False: "", None: ""}[run.git_dirty]
    for key, value in (
        ("run", _cell(run.id)),
        ("name", _cell(run.name)),
        ("experiment", _cell(run.experiment)),
        ("status", _status(run)),
        ("started", fmt_time(run.start_time)),
        ("ended", fmt_time(run.end_time)),
        ("duration", _duration(run)),
        ("parent", _cell(run.parent_run_id or "-")),
        ("git", _cell(f"{run.git_commit or '-'}{dirty}")),
        ("python", _cell(run.python_version)),
        ("packages", _cell(", ".join(f"{k}=={v}" for k, v in run.packages.items()) or "-")),
        ("host", _cell(f"{run.user}@{run.host}")),
        ("source", _cell(run.source or "-")),
    ):
        info.add_row(key, value)
    console.print(info)
    sections: list[tuple[str, dict[str, Any]]] = [
        ("params", run.params),
        ("metrics", run.metrics),
        ("tags", run.tags),
    ]
    for title, values in sections:
        if values:
            table = Table(title=title, title_justify="left")
            table.add_column("key")
            table.add_column("value", justify="right" if title == "metrics" else "left")
            for key, value in values.items():
                table.add_row(escape(key), _cell(value))
            console.print(table)
    if inputs:
        table = Table(title="inputs", title_justify="left")
        for col in ("name", "context", "rows", "columns", "digest", "source"):
            table.add_column(col)
        for i in inputs:
            table.add_row(
                _cell(i.name),
                _cell(i.context),
                str(i.num_rows),
                str(len(i.schema)),
                _cell(i.digest[:16]),
                _cell(i.source or "-"),
            )
        console.print(table)
    if artifacts:
        table = Table(title="artifacts", title_justify="left")
        for col in ("path", "size", "sha256"):
            table.add_column(col)
        for a in artifacts:
            table.add_row(_cell(a.path), str(a.size), _cell(a.sha256[:16]))
        console.print(table)


@app.command("compare")
def compare_runs(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or prefixes).")],
    diff_only: Annotated[
        bool, typer.Option("--diff-only", help="Show only the rows that differ.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Params and metrics of runs side by side; differences highlighted."""
    if len(run_ids) < 2:
        raise typer.BadParameter("give at least two run ids", param_hint="RUN_IDS")
    client = client_from(ctx)
    runs = [client.get_run(r) for r in run_ids]
    rows: list[tuple[str, list[str | float | None]]] = [
        ("name", [r.name for r in runs]),
        ("status", [r.status.value for r in runs]),
        ("duration_s", [r.duration_s for r in runs]),
        ("git_commit", [(r.git_commit or "-")[:12] for r in runs]),
    ]
    for kind, attr in (("params", "params"), ("metrics", "metrics")):
        keys = sorted({k for r in runs for k in getattr(r, attr)})
        rows += [(f"{kind}.{k}", [getattr(r, attr).get(k) for r in runs]) for k in keys]
    marked = [(key, values, len({repr(v) for v in values}) > 1) for key, values in rows]
    if diff_only:
        marked = [row for row in marked if row[2]]
    if as_json:
        print_json(
            {
                "runs": [r.id for r in runs],
                "rows": [
                    {"key": key, "values": values, "differs": differs}
                    for key, values, differs in marked
                ],
            }
        )
        return
    table = Table(title="compare", title_justify="left")
    table.add_column("")
    for r in runs:
        table.add_column(r.id[:8], justify="right")
    for key, values, differs in marked:
        style = "bold yellow" if differs else None
        table.add_row(_cell(key), *(_cell(v) for v in values), style=style)
    console.print(table)
    console.print("[dim]rows in [bold yellow]yellow[/] differ between runs[/]")
