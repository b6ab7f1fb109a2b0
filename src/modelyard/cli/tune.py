"""``modelyard tune run|list|show``: run a study (locally or on Ray), list and show studies.

``run OBJECTIVE`` loads ``FILE.py:NAME`` or ``module:NAME`` and calls ``modelyard.tune``
with it (the search space is the module's ``SPACE`` dict, or the one ``--space`` names;
without one the objective gets the Optuna trial). ``--engine ray`` runs the trials as Ray
tasks (``modelyard.yaml``'s ``engine`` is the default).

``show --html FILE`` writes one offline page in the monitoring report's style: the best
trial, parameter importances, the optimization history (every complete trial's value
and the best so far) and the trials table.

Optuna (~0.4 s) and plotly are imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, fmt_time, fmt_value, print_json

app = typer.Typer(help="Hyperparameter tuning studies (modelyard.tune).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
StorageOpt = Annotated[
    str, typer.Option("--storage", help="Where the studies are kept: journal (default) or rdb.")
]
_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "magenta", "FAIL": "red", "RUNNING": "cyan"}
_MAX_TRIAL_ROWS = 50


def _load_objective(target: str, space_name: str | None) -> tuple[Any, Any]:
    """The objective ``FILE.py:NAME`` or ``module:NAME`` names, and its module's space."""
    import importlib
    import runpy

    from modelyard.errors import InvalidInputError

    where, sep, name = target.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise InvalidInputError(
            f"Expected OBJECTIVE as FILE.py:NAME or module:NAME, got {target!r}", loc="OBJECTIVE"
        )
    if where.endswith(".py"):
        if not Path(where).is_file():
            raise InvalidInputError(
                f"Expected a Python file, got no file at {where}", loc="OBJECTIVE"
            )
        # not in sys.modules: Ray ships its functions by value (cloudpickle)
        names: dict[str, Any] = runpy.run_path(where, run_name="__modelyard_objective__")
    else:
        try:
            names = vars(importlib.import_module(where))
        except ImportError as exc:
            raise InvalidInputError(f"Cannot import {where!r}: {exc}", loc="OBJECTIVE") from exc
    objective = names.get(name)
    if not callable(objective):
        raise InvalidInputError(f"Expected a function {name!r} in {where}", loc="OBJECTIVE")
    key = space_name or "SPACE"
    space = names.get(key)
    if space is None and space_name is not None:
        raise InvalidInputError(f"Expected a dict {space_name!r} in {where}", loc="--space")
    return objective, space


@app.command("run")
def run_study(
    ctx: typer.Context,
    objective: Annotated[str, typer.Argument(help="The objective: FILE.py:NAME or module:NAME.")],
    n_trials: Annotated[int, typer.Option("--n-trials", help="Complete + pruned trials.")] = 100,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Trials at a time.")] = 1,
    seed: Annotated[int | None, typer.Option("--seed", help="Seeds the TPE sampler.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (resumes).")] = None,
    direction: Annotated[
        str, typer.Option("--direction", help="minimize or maximize.")
    ] = "minimize",
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="local or ray (default: modelyard.yaml's engine)."),
    ] = None,
    space: Annotated[
        str | None, typer.Option("--space", help="The module's space dict (default: SPACE).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds for this call.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run (or resume) a study of OBJECTIVE; print the best trial."""
    from modelyard.engine import engine_for
    from modelyard.pipelines.tuning import tune

    settings = settings_from(ctx)
    chosen = engine_for(settings, engine)
    function, found = _load_objective(objective, space)
    result = tune(
        function, space=found, n_trials=n_trials, n_jobs=n_jobs, seed=seed, study=study,
        direction=direction, timeout=timeout, engine=chosen, project=settings.project_dir,
    )  # fmt: skip
    summary = {
        "study": result.study_name, "engine": chosen, "direction": result.direction,
        "complete": result.n_complete, "pruned": result.n_pruned, "failed": result.n_failed,
        "best_value": result.best_value, "best_params": result.best_params,
        "best_trial": result.best_trial, "best_run_id": result.best_run_id,
        "parent_run_id": result.parent_run_id,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    console.print(
        f"[bold]{escape(result.study_name)}[/] on {chosen}: {result.n_complete} complete, "
        f"{result.n_pruned} pruned, {result.n_failed} failed; best value "
        f"{fmt_value(result.best_value)} (trial {fmt_value(result.best_trial)})",
        soft_wrap=True,
    )
    for key, value in result.best_params.items():
        console.print(f"  {escape(key)} = {escape(fmt_value(value))}", soft_wrap=True)


@app.command("list")
def list_studies(
    ctx: typer.Context, as_json: JsonOpt = False, storage: StorageOpt = "journal"
) -> None:
    """Studies: name, direction, trials complete/pruned/failed, best value, created."""
    from modelyard.pipelines.studies import open_study_storage
    from modelyard.pipelines.study_info import study_summaries

    studies = study_summaries(open_study_storage(settings_from(ctx).db_url, storage))
    if as_json:
        print_json(studies)
        return
    if not studies:
        console.print("No studies yet. Start one with modelyard.tune(objective, space=...).")
        return
    table = Table(
        title=f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}", title_justify="left"
    )
    numeric = ("complete", "pruned", "failed", "best value")
    for column in ("study", "direction", *numeric, "created"):
        table.add_column(
            column, min_width=len(column), justify="right" if column in numeric else "left"
        )
    for s in studies:
        table.add_row(
            escape(s["name"]),
            s["direction"],
            str(s["complete"]),
            str(s["pruned"]),
            str(s["failed"]),
            fmt_value(s["best_value"]),
            fmt_time(s["created"]),
        )
    console.print(table)


@app.command("show")
def show_study(
    ctx: typer.Context,
    study: Annotated[str, typer.Argument(help="Study name (modelyard tune list).")],
    as_json: JsonOpt = False,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write an offline HTML report here.")
    ] = None,
    storage: StorageOpt = "journal",
) -> None:
    """A study's trials, best parameters, parameter importances and history."""
    from modelyard.pipelines.studies import open_study_storage
    from modelyard.pipelines.study_info import study_details

    details = study_details(open_study_storage(settings_from(ctx).db_url, storage), study)
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(render_study(details), encoding="utf-8")
    if as_json:
        print_json({**details, "html": None if html_file is None else str(html_file)})
        return
    _print_details(details)
    if html_file is not None:
        console.print(f"Wrote {escape(str(html_file))}", soft_wrap=True)


def _print_details(d: dict[str, Any]) -> None:
    console.print(
        f"[bold]{escape(d['name'])}[/] ({d['direction']}): {d['complete']} complete, "
        f"{d['pruned']} pruned, {d['failed']} failed, {d['running']} running",
        soft_wrap=True,
    )
    best = d["best"]
    if best is None:
        console.print("No complete trial yet.")
    else:
        console.print(
            f"best: trial {best['number']}  value {fmt_value(best['value'])}  run {best['run_id']}"
        )
        for key, value in best["params"].items():
            console.print(f"  {escape(key)} = {escape(fmt_value(value))}", soft_wrap=True)
    if d["importances"] is None:
        console.print(f"[dim]{escape(d['importance_note'] or '')}[/]", soft_wrap=True)
    else:
        console.print("parameter importances:")
        for key, value in d["importances"].items():
            console.print(f"  {escape(key):<24} {value:.3f}", soft_wrap=True)
    trials = d["trial_list"]
    keys = sorted({k for t in trials for k in t["params"]})
    table = Table(
        title=f"trials (last {min(len(trials), _MAX_TRIAL_ROWS)} of {len(trials)})",
        title_justify="left",
    )
    for column in ("#", "state", "value", *keys, "took"):
        table.add_column(escape(column), no_wrap=True)
    for t in trials[-_MAX_TRIAL_ROWS:]:
        style = _STATE_STYLE.get(t["state"], "white")
        table.add_row(
            str(t["number"]),
            f"[{style}]{t['state']}[/]",
            fmt_value(t["value"]),
            *(escape(fmt_value(t["params"].get(k))) for k in keys),
            "-" if t["duration_s"] is None else f"{t['duration_s']:.2f}s",
        )
    console.print(table)


# -- HTML ---------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(fmt_value(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _history(d: dict[str, Any]) -> str:
    done = [t for t in d["trial_list"] if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done:
        return "<p class='note'>No complete trial yet: no history to plot.</p>"
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    from modelyard.monitoring.html import FONT

    numbers = [t["number"] for t in done]
    values = [t["value"] for t in done]
    best, running = [], None
    for value in values:
        better = running is None or (
            value > running if d["direction"] == "maximize" else value < running
        )
        running = value if better else running
        best.append(running)
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=numbers, y=values, mode="markers", name="trial value", marker={"color": "#1f77b4"}
        )
    )
    figure.add_trace(
        go.Scatter(
            x=numbers,
            y=best,
            mode="lines",
            name="best so far",
            line={"color": "#d62728", "shape": "hv"},
        )
    )
    figure.update_layout(
        template="none", height=380, margin={"l": 60, "r": 20, "t": 30, "b": 40},
        font={"family": FONT, "size": 12},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    )  # fmt: skip
    figure.update_xaxes(title_text="trial", gridcolor="#eee")
    figure.update_yaxes(title_text="objective value", gridcolor="#eee")
    chart = figure.to_html(full_html=False, include_plotlyjs=False)
    legend = "Each complete trial's objective value; the line is the best value so far."
    return f"<figure>\n{chart}\n<figcaption>{legend}</figcaption>\n</figure>"


def render_study(d: dict[str, Any]) -> str:
    """The study as one offline HTML document (plotly.js embedded, every string escaped)."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    from modelyard.monitoring.html import CSS

    name = html.escape(d["name"])
    best = d["best"]
    if best is None:
        best_block = "<p class='note'>No complete trial yet.</p>"
    else:
        rows = [[html.escape(k), _esc(v)] for k, v in best["params"].items()]
        best_block = (
            f"<p>Trial {best['number']}, value <b>{_esc(best['value'])}</b>, run "
            f"<code>{_esc(best['run_id'])}</code></p>\n" + _table(["parameter", "value"], rows)
        )
    if d["importances"] is None:
        importance = f"<p class='note'>{html.escape(d['importance_note'] or '')}</p>"
    else:
        importance = _table(
            ["parameter", "importance"],
            [[html.escape(k), f"{v:.3f}"] for k, v in d["importances"].items()],
        )
    keys = sorted({k for t in d["trial_list"] for k in t["params"]})
    trial_rows = [
        [str(t["number"]), t["state"], _esc(t["value"]), *(_esc(t["params"].get(k)) for k in keys),
         "-" if t["duration_s"] is None else f"{t['duration_s']:.2f}s"]
        for t in d["trial_list"]
    ]  # fmt: skip
    trials = _table(["#", "state", "value", *(html.escape(k) for k in keys), "took"], trial_rows)
    body = (
        f"<h1>Study {name}</h1>\n<p class='meta'>{d['direction']} &middot; "
        f"{d['complete']} complete, {d['pruned']} pruned, {d['failed']} failed, "
        f"{d['running']} running</p>\n"
        f"<section id='best'><h2>Best trial</h2>\n{best_block}</section>\n"
        f"<section id='importance'><h2>Parameter importances</h2>\n{importance}</section>\n"
        f"<section id='history'><h2>Optimization history</h2>\n{_history(d)}</section>\n"
        f"<section id='trials'><h2>Trials</h2>\n{trials}</section>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Study {name}</title>\n<style>{CSS}</style>\n"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
