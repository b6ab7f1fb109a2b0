"""``modelyard gate REF``: run a model version's promotion gates and store the evidence.

Exit codes: 0 every required gate passed, 1 a required gate failed (usable as a CI
step), 2 bad input (an unknown model, a missing file, ``--eval`` with ``--window``).
The evaluation rows come from ``--eval FILE`` (CSV or Parquet), from ``--window N``
(the prediction log of the last N days joined with the feedback labels), or from the
``eval`` file the project's ``gates.MODEL`` section names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, fmt_value, print_json
from modelyard.errors import InvalidInputError
from modelyard.gates.config import gate_config
from modelyard.gates.records import GateReport
from modelyard.gates.runner import run_gates
from modelyard.monitoring.labelled import labels_as, window_frame
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import ModelRef

__all__ = ["gate", "labels_as", "window_frame"]  # the last two re-exported


def _ci(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{fmt_value(ci[0])}, {fmt_value(ci[1])}]"


def print_report(report: GateReport) -> None:
    """The rich table of a gate evaluation."""
    champion = "none" if report.champion_version is None else f"v{report.champion_version}"
    verdict = "[green]passed[/]" if report.passed else "[red]FAILED[/]"
    table = Table(
        title=(
            f"gates of {escape(report.ref)} against {escape(report.against)} "
            f"(champion {champion}): {verdict}"
        ),
        title_justify="left",
    )
    for col in ("gate", "required", "passed", "summary", "CI"):
        table.add_column(col)
    for r in report.results:
        table.add_row(
            escape(r.gate),
            "yes" if r.required else "no",
            "[green]yes[/]" if r.passed else "[red]no[/]",
            escape(r.summary),
            _ci(r.ci),
        )
    console.print(table)
    console.print(
        f"evaluation {report.id}; data {report.eval_digest[:16]}; "
        f"promote with: modelyard models promote {escape(report.ref)} "
        f"--to {escape(report.against)}",
        soft_wrap=True,
    )


def gate(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The candidate: name/3, name@alias or name@latest.")],
    against: Annotated[
        str, typer.Option("--against", help="The alias whose holder is the champion.")
    ] = "production",
    eval_file: Annotated[
        Path | None,
        typer.Option("--eval", help="Evaluation rows (CSV or Parquet) with the label column."),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            min=1,
            help="Evaluate on the last N days of the prediction log joined with feedback.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Run REF's promotion gates against the holder of --against and store the evidence.

    Exit 0 when every required gate passed, 1 when one failed, 2 on bad input.
    """
    if eval_file is not None and window is not None:
        raise InvalidInputError(
            "Expected one of --eval FILE or --window N, got both", loc="--eval/--window"
        )
    settings = settings_from(ctx)
    registry = ModelRegistry(settings)
    ctx.find_root().call_on_close(registry.close)
    evaluation: Path | pd.DataFrame | None = eval_file
    if window is not None:
        candidate = registry.get_version(ref)
        try:
            champion: ModelVersion | None = registry.get_version(
                ModelRef(candidate.name, alias=against)
            )
        except LookupError:
            champion = None
        label = gate_config(settings, candidate.name).label
        if not label:
            raise InvalidInputError(
                "Expected the label column to put the feedback labels in, got none",
                loc=f"gates.{candidate.name}.label",
            )
        evaluation = window_frame(settings, registry, candidate, champion, label, window)
    report = run_gates(settings, ref, against=against, eval=evaluation, registry=registry)
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if not report.passed:
        raise typer.Exit(1)
