"""``modelyard pipeline list|show|graph|run|runs|inspect``.

Exit codes of ``run``: 0 every step completed or was cached, 1 a step failed (the step,
its error and the command that resumes the run are printed), 2 bad input (an unknown
pipeline, a bad ``-p`` value, an unknown run to resume). One command per run, so a
scheduler (cron, Airflow, Prefect, Dagster) can call it and read the code.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, err_console, fmt_time, print_json
from modelyard.config import Settings
from modelyard.errors import NotFoundError, PipelineDefinitionError, StepFailedError, did_you_mean
from modelyard.pipelines.definition import REQUIRED, Pipeline
from modelyard.pipelines.graph import Graph
from modelyard.pipelines.lineage import (
    RerunReason,
    recorded_pipelines,
    rerun_reasons,
    run_summaries,
)
from modelyard.pipelines.materializers import type_name
from modelyard.pipelines.project import load_pipelines
from modelyard.pipelines.records import PipelineRecords, PipelineRunRow, StepRow
from modelyard.pipelines.runner import StepEvent, run_pipeline
from modelyard.store.database import Database, open_database

app = typer.Typer(
    help="Training pipelines: list, show, run (cached, resumable) and inspect their runs.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", help="A pipeline parameter, key=value (repeatable).", metavar="KEY=VALUE"
    ),
]

_STYLE = {
    "running": "cyan",
    "pending": "dim",
    "completed": "green",
    "cached": "blue",
    "failed": "red",
    "skipped": "yellow",
    "killed": "magenta",
}


class Engine(StrEnum):
    local = "local"
    inline = "inline"
    ray = "ray"


class GraphFormat(StrEnum):
    text = "text"
    dot = "dot"
    mermaid = "mermaid"
    json = "json"


# -- shared helpers -----------------------------------------------------------------------


def _database(ctx: typer.Context) -> Database:
    db = open_database(settings_from(ctx).db_url)
    ctx.find_root().call_on_close(db.close)
    return db


def _records(ctx: typer.Context) -> PipelineRecords:
    settings = settings_from(ctx)
    return PipelineRecords(
        _database(ctx), heartbeat_timeout_s=settings.tracking.heartbeat_timeout_s
    )


def _pipelines(settings: Settings) -> dict[str, Pipeline]:
    return load_pipelines(settings)


def _pipeline(settings: Settings, name: str) -> Pipeline:
    found = _pipelines(settings)
    if name not in found:
        if not found:
            raise NotFoundError(
                f"No pipeline named {name!r}: the project has no pipelines. Write them in "
                f"{settings.project_dir / 'pipelines.py'} (see docs/pipelines.md)"
            )
        raise NotFoundError(
            f"No pipeline named {name!r}." + did_you_mean(name, list(found), "pipelines")
        )
    return found[name]


def _cell(value: Any) -> str:
    return escape(str(value))


def _default_text(default: Any) -> str:
    if default is REQUIRED:
        return "(required)"
    return json.dumps(default) if not hasattr(default, "__fspath__") else str(default)


def _params_of(p: Pipeline) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "type": type_name(hint),
            "required": default is REQUIRED,
            "default": None if default is REQUIRED else _jsonable(default),
        }
        for name, (hint, default) in p.params.items()
    ]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__fspath__"):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _needs_params(p: Pipeline, params: Mapping[str, Any]) -> bool:
    return any(
        default is REQUIRED and name not in params for name, (_, default) in p.params.items()
    )


def _try_build(p: Pipeline, params: Mapping[str, Any] | None = None) -> Graph | None:
    """The graph with the defaults and ``params``; None when a required one is not given
    (any other definition error is raised: the pipeline cannot run as written)."""
    if _needs_params(p, params or {}):
        return None
    return p.build(params)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, 'white')}]{escape(status)}[/]"


# -- list / show / graph -----------------------------------------------------------------


@app.command("list")
def list_pipelines(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The project's pipelines: name, module, steps and parameters."""
    settings = settings_from(ctx)
    found = _pipelines(settings)
    rows: list[dict[str, Any]] = []
    for name in sorted(found):
        p = found[name]
        error = None
        try:
            graph = _try_build(p)
        except PipelineDefinitionError as exc:  # listed, not hidden: `show` names the problem
            graph, error = None, str(exc)
        rows.append(
            {
                "name": name,
                "function": p.function_id,
                "module": p.function_id.partition(":")[0],
                "description": p.description,
                "steps": None if graph is None else graph.order(),
                "params": _params_of(p),
                "error": error,
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(
            f"No pipelines. Write one in {escape(str(settings.project_dir / 'pipelines.py'))} "
            "with @step and @pipeline (see docs/pipelines.md).",
            soft_wrap=True,
        )
        return
    table = Table(title=f"{len(rows)} pipeline(s)", title_justify="left")
    for col in ("name", "module", "steps", "params"):
        table.add_column(col, overflow="fold")
    for row in rows:
        params = ", ".join(
            f"{p['name']}: {p['type']}"
            + ("" if p["required"] else f" = {_default_text(p['default'])}")
            for p in row["params"]
        )
        steps = (
            "invalid"
            if row["error"]
            else ("needs -p" if row["steps"] is None else str(len(row["steps"])))
        )
        table.add_row(_cell(row["name"]), _cell(row["module"]), steps, _cell(params or "-"))
    console.print(table)
    for row in rows:
        if row["error"]:
            console.print(Text(f"{row['name']}: {row['error']}", style="red"), soft_wrap=True)


def _graph_json(graph: Graph) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for name in graph.order():
        node = graph.nodes[name]
        nodes.append(
            {
                "name": name,
                "step": node.step.name,
                "function": node.step.function_id,
                "params": _jsonable(dict(node.params)),
                "inputs": {
                    arg: {"node": ref.node, "output": ref.output}
                    for arg, ref in node.inputs.items()
                },
                "after": list(node.after),
                "outputs": [{"name": o.name, "type": type_name(o.type)} for o in node.outputs],
            }
        )
        for arg, ref in node.inputs.items():
            edges.append({"from": ref.node, "output": ref.output, "to": name, "input": arg})
        for other in node.after:
            edges.append({"from": other, "output": None, "to": name, "input": None})
    return {
        "pipeline": graph.pipeline,
        "params": _jsonable(dict(graph.params)),
        "nodes": nodes,
        "edges": edges,
    }


def _graph_tree(graph: Graph) -> Tree:
    tree = Tree(Text(f"pipeline {graph.pipeline}", style="bold"))
    for name in graph.order():
        node = graph.nodes[name]
        outs = ", ".join(f"{o.name}: {type_name(o.type)}" for o in node.outputs) or "no outputs"
        branch = tree.add(Text.assemble((name, "bold"), f"  -> {outs}"))
        for arg, ref in node.inputs.items():
            branch.add(Text(f"{arg} <- {ref.node}.{ref.output}"))
        for arg, value in node.params.items():
            branch.add(Text(f"{arg} = {json.dumps(_jsonable(value))}", style="dim"))
        for other in node.after:
            branch.add(Text(f"after {other}", style="dim"))
    return tree


def _quote(name: str) -> str:
    return json.dumps(name)


def _graph_dot(graph: Graph) -> str:
    lines = [f"digraph {_quote(graph.pipeline)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for name in graph.order():
        lines.append(f"  {_quote(name)};")
    for name in graph.order():
        node = graph.nodes[name]
        for arg, ref in node.inputs.items():
            label = arg if ref.output == "output" else f"{ref.output} -> {arg}"
            lines.append(f"  {_quote(ref.node)} -> {_quote(name)} [label={_quote(label)}];")
        for other in node.after:
            lines.append(f"  {_quote(other)} -> {_quote(name)} [style=dashed];")
    lines.append("}")
    return "\n".join(lines)


def _mermaid_id(name: str, ids: dict[str, str]) -> str:
    return ids.setdefault(name, f"n{len(ids)}")


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _graph_mermaid(graph: Graph) -> str:
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for name in graph.order():
        lines.append(f'  {_mermaid_id(name, ids)}["{_mermaid_text(name)}"]')
    for name in graph.order():
        node = graph.nodes[name]
        for arg, ref in node.inputs.items():
            label = arg if ref.output == "output" else f"{ref.output} -> {arg}"
            lines.append(
                f'  {_mermaid_id(ref.node, ids)} -->|"{_mermaid_text(label)}"| '
                f"{_mermaid_id(name, ids)}"
            )
        for other in node.after:
            lines.append(f"  {_mermaid_id(other, ids)} -.-> {_mermaid_id(name, ids)}")
    return "\n".join(lines)


@app.command("show")
def show_pipeline(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The pipeline's name (see `pipeline list`).")],
    params: ParamOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A pipeline's parameters, steps and graph (built with the defaults and any -p)."""
    p = _pipeline(settings_from(ctx), name)
    parsed = p.parse_params(params or [])
    graph = _try_build(p, parsed)
    if as_json:
        print_json(
            {
                "name": p.name,
                "function": p.function_id,
                "description": p.description,
                "params": _params_of(p),
                "graph": None if graph is None else _graph_json(graph),
            }
        )
        return
    console.print(Text.assemble(("pipeline ", "dim"), (p.name, "bold"), f"  {p.function_id}"))
    if p.description:
        console.print(Text(p.description))
    table = Table(title="params", title_justify="left")
    for col in ("name", "type", "default"):
        table.add_column(col, overflow="fold")
    for item in _params_of(p):
        default = "(required)" if item["required"] else _default_text(item["default"])
        table.add_row(_cell(item["name"]), _cell(item["type"]), _cell(default))
    console.print(table)
    if graph is None:
        console.print("The graph needs the required parameters: give them with -p key=value.")
        return
    steps = Table(title="steps", title_justify="left")
    for col in ("node", "function", "cache", "packages", "outputs"):
        steps.add_column(col, overflow="fold")
    for node_name in graph.order():
        node = graph.nodes[node_name]
        s = node.step
        steps.add_row(
            _cell(node_name),
            _cell(s.function_id),
            f"v{s.cache_version}" if s.cache else "off",
            _cell(", ".join(s.packages) or "-"),
            _cell(", ".join(f"{o.name}: {type_name(o.type)}" for o in node.outputs) or "-"),
        )
    console.print(steps)
    console.print(_graph_tree(graph))


@app.command("graph")
def graph_pipeline(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    fmt: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="text (a tree), dot, mermaid or json.")
    ] = GraphFormat.text,
    params: ParamOpt = None,
) -> None:
    """The step graph: a text tree, Graphviz dot, Mermaid or JSON."""
    p = _pipeline(settings_from(ctx), name)
    graph = p.build(p.parse_params(params or []))
    if fmt is GraphFormat.json:
        print_json(_graph_json(graph))
    elif fmt is GraphFormat.dot:
        sys.stdout.write(_graph_dot(graph) + "\n")
    elif fmt is GraphFormat.mermaid:
        sys.stdout.write(_graph_mermaid(graph) + "\n")
    else:
        console.print(_graph_tree(graph))


# -- run ------------------------------------------------------------------------------------


class _Progress:
    """Each step's state as the runner reports it: a live table on a terminal, plain lines
    otherwise, nothing with --json."""

    def __init__(self, order: list[str], *, quiet: bool) -> None:
        self.quiet = quiet
        self.live_mode = console.is_terminal and not quiet
        pending: tuple[str, float | None, str | None] = ("pending", None, None)
        self.rows = dict.fromkeys(order, pending)
        self.started: dict[str, float] = {}
        self.live: Live | None = None

    def __enter__(self) -> _Progress:
        if self.live_mode:
            self.live = Live(self._table(), console=console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(None, None, None)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column("step", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("took", justify="right", no_wrap=True)
        table.add_column("note", overflow="ellipsis", no_wrap=True)
        for name, (status, took, note) in self.rows.items():
            shown = took
            if status == "running" and name in self.started:
                shown = time.monotonic() - self.started[name]
            table.add_row(_cell(name), _status(status), _duration(shown), _cell(note or ""))
        return table

    def __call__(self, event: StepEvent) -> None:
        if event.status == "running":
            self.started[event.step] = time.monotonic()
        note = event.message if event.status in ("failed", "skipped", "cached") else None
        self.rows[event.step] = (event.status, event.duration_s, note)
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table())
        elif event.status != "running":
            line = Text.assemble(
                (f"{event.step:<24}", "bold"),
                " ",
                (f"{event.status:<9}", _STYLE.get(event.status, "")),
                f" {_duration(event.duration_s):>7}",
                f"  {note}" if note else "",
            )
            console.print(line, soft_wrap=True)


def _run_json(records: PipelineRecords, run_id: str) -> dict[str, Any]:
    row = records.pipeline_run(run_id)
    steps = records.steps_of(row.run_id)
    outputs = records.outputs_of([s.run_id for s in steps])
    return {
        "run_id": row.run_id,
        "pipeline": row.pipeline,
        "status": row.status,
        "params": row.params,
        "resumed_from": row.resumed_from,
        "executor": row.executor,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "duration_s": None if row.ended_at is None else (row.ended_at - row.started_at) / 1000,
        "steps": {
            s.step: {
                "run_id": s.run_id,
                "status": s.status,
                "cached_from": s.cached_from,
                "duration_s": s.duration_s,
                "cache_key": s.cache_key,
                "error": s.error,
                "outputs": {
                    name: {
                        "digest": o.digest,
                        "type": o.type,
                        "materializer": o.materializer,
                        "size": o.size,
                    }
                    for name, o in outputs.get(s.run_id, {}).items()
                },
            }
            for s in steps
        },
    }


@app.command("run")
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The pipeline's name (see `pipeline list`).")],
    params: ParamOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step, even those with a cached result.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="A failed run's id (or prefix): its params, its finished steps reused.",
            metavar="RUN",
        ),
    ] = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            "--engine",
            help="local (a process pool), inline (in this process, one by one) or ray (each "
            "step a Ray task on the cluster of ray.address). Default: pipelines.executor, "
            "else the project's engine.",
        ),
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option("--max-workers", min=1, help="Steps at once with the local engine."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline: cached steps are reused, a failed run can be resumed.

    Exit 0 when every step completed or was cached, 1 when a step failed, 2 on bad input.
    """
    settings = settings_from(ctx)
    p = _pipeline(settings, name)
    parsed = p.parse_params(params or [])
    order = [] if resume is not None else p.build(parsed).order()  # bad params: exit 2 here
    records = _records(ctx)
    started = time.monotonic()
    if not as_json:
        what = f" (resuming {resume})" if resume else ""
        console.print(Text.assemble("Running pipeline ", (p.name, "bold"), what))
    run_id: str | None = None
    failure: StepFailedError | None = None
    with _Progress(order, quiet=as_json) as progress:
        try:
            result = run_pipeline(
                p,
                parsed,
                settings=settings,
                cache=not no_cache,
                resume=resume,
                executor=None if engine is None else engine.value,
                max_workers=max_workers,
                on_event=progress,
            )
            run_id = result.run_id
        except StepFailedError as exc:
            failure, run_id = exc, exc.run_id
    summary = _run_json(records, run_id)
    if as_json:
        print_json(summary)
    else:
        counts: dict[str, int] = {}
        for step in summary["steps"].values():
            counts[step["status"]] = counts.get(step["status"], 0) + 1
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        console.print(
            Text.assemble(
                (p.name, "bold"),
                " ",
                (summary["status"], _STYLE.get(summary["status"], "")),
                f" in {_duration(time.monotonic() - started)}: {tally} (run {run_id})",
            ),
            soft_wrap=True,
        )
    if failure is not None:
        err_console.print(
            Text.assemble(
                ("error:", "bold red"),
                f" step {failure.step!r} failed: {' '.join(failure.error.split())}",
            ),
            soft_wrap=True,
        )
        step_run = summary["steps"].get(failure.step, {}).get("run_id")
        if step_run:
            err_console.print(
                Text(f"its run and log: modelyard runs show {step_run}"), soft_wrap=True
            )
        err_console.print(
            Text(f"resume after a fix: modelyard pipeline run {p.name} --resume {run_id}"),
            soft_wrap=True,
        )
        raise typer.Exit(1)


# -- runs / inspect -------------------------------------------------------------------------


def _shown_status(row: PipelineRunRow, tracked: str | None) -> str:
    if row.status == "failed" and tracked == "KILLED":
        return "killed"
    return row.status


def _row_duration(row: PipelineRunRow) -> float | None:
    if row.ended_at is None:
        return None if row.status != "running" else time.time() - row.started_at / 1000
    return (row.ended_at - row.started_at) / 1000


@app.command("runs")
def list_runs(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this pipeline's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Pipeline runs, newest first: status (killed for a dead one), time, steps."""
    records = _records(ctx)
    rows = records.list_pipeline_runs(name, limit=limit)
    summaries = run_summaries(records.db, [r.run_id for r in rows])
    shown: list[dict[str, Any]] = []
    for r in rows:
        s = summaries[r.run_id]
        shown.append(
            {
                "run_id": r.run_id,
                "pipeline": r.pipeline,
                "status": _shown_status(r, s.tracked_status),
                "params": r.params,
                "resumed_from": r.resumed_from,
                "executor": r.executor,
                "started_at": r.started_at,
                "duration_s": _row_duration(r),
                "steps": {
                    "ran": s.steps.get("completed", 0),
                    "cached": s.steps.get("cached", 0),
                    "failed": s.steps.get("failed", 0),
                    "skipped": s.steps.get("skipped", 0),
                    "total": sum(s.steps.values()),
                },
            }
        )
    if as_json:
        print_json(shown)
        return
    if not shown:
        which = f" of {name!r}" if name else ""
        hint = ""
        if name:
            recorded = recorded_pipelines(records.db)
            hint = did_you_mean(name, recorded, "pipelines with runs") if recorded else ""
        console.print(
            Text(f"No pipeline runs{which}.{hint} Start one with `modelyard pipeline run NAME`."),
            soft_wrap=True,
        )
        return
    table = Table(title=f"{len(shown)} pipeline run(s)", title_justify="left", pad_edge=False)
    table.add_column("run", no_wrap=True, min_width=8)
    table.add_column("pipeline", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("started", no_wrap=True, min_width=11)
    for col in ("took", "ran", "cached", "failed"):
        table.add_column(col, no_wrap=True, justify="right", min_width=len(col))
    for item in shown:
        steps = item["steps"]
        table.add_row(
            item["run_id"][:8],
            _cell(item["pipeline"]),
            _status(item["status"]),
            fmt_time(item["started_at"])[5:16],
            _duration(item["duration_s"]),
            str(steps["ran"]),
            str(steps["cached"]),
            str(steps["failed"]),
        )
    console.print(table)


def _outputs_text(outputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{n}={o.digest[:12]}" for n, o in outputs.items()) or "-"


@app.command("inspect")
def inspect_run(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A pipeline run id, or a prefix of 6+ characters.")],
    as_json: JsonOpt = False,
) -> None:
    """One pipeline run: each step's status, cache source, time, outputs and why it ran."""
    records = _records(ctx)
    row = records.pipeline_run(run_id)
    steps: list[StepRow] = records.steps_of(row.run_id)
    outputs = records.outputs_of([s.run_id for s in steps])
    reasons: dict[str, RerunReason] = rerun_reasons(records.db, row.run_id)
    tracked = run_summaries(records.db, [row.run_id])[row.run_id].tracked_status
    if as_json:
        data = _run_json(records, row.run_id)
        data["status"] = _shown_status(row, tracked)
        for step_name, item in data["steps"].items():
            reason = reasons.get(step_name)
            item["why"] = None if reason is None else reason.to_dict()
        print_json(data)
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    for key, value in (
        ("run", row.run_id),
        ("pipeline", row.pipeline),
        ("status", _status(_shown_status(row, tracked))),
        ("params", escape(json.dumps(row.params, sort_keys=True))),
        ("resumed from", row.resumed_from or "-"),
        ("executor", row.executor),
        ("started", fmt_time(row.started_at)),
        ("took", _duration(_row_duration(row))),
    ):
        info.add_row(key, value if key == "status" else _cell(value))
    console.print(info)
    table = Table(title="steps", title_justify="left")
    for col in ("step", "status", "took", "cached from", "outputs"):
        table.add_column(col, overflow="fold", no_wrap=col != "outputs")
    for s in steps:
        table.add_row(
            _cell(s.step),
            _status(s.status),
            _duration(s.duration_s),
            (s.cached_from or "-")[:8],
            _cell(_outputs_text(outputs.get(s.run_id, {}))),
        )
    console.print(table)
    console.print(Text("why each step ran", style="italic"))
    for s in steps:
        reason = reasons.get(s.step)
        why = reason.text if reason is not None else "-"
        if s.status == "failed" and s.error:
            why = f"{why}; error: {' '.join(s.error.split())}"
        console.print(
            Text.assemble(f"  {s.step}: ", (why, _STYLE.get(s.status, ""))), soft_wrap=True
        )
