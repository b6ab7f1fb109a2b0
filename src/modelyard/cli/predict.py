"""``modelyard predict REF --input PATH|GLOB --output DIR``: score files in batch.

Exit 0 when the run finished (rejected rows are counted and written to
``rejects.parquet``, not a failure), 2 for bad input files or arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.batch import DEFAULT_BATCH_ROWS, BatchResult, predict_batch
from modelyard.cli.context import settings_from
from modelyard.cli.output import console, err_console, print_json

__all__ = ["predict"]


def _summary(result: BatchResult) -> str:
    rate = f"{result.rows_per_second:,.0f} rows/s"
    line = (
        f"{escape(result.model)} v{result.version} ({escape(result.runtime)}, {result.engine}): "
        f"{result.rows_scored:,} rows scored, {result.rows_rejected:,} rejected of "
        f"{result.rows_total:,} in {len(result.inputs)} file(s), {result.seconds:.2f} s ({rate})"
    )
    if result.logged_records:
        line += f"; logged as {result.logged_records:,} record(s) (route batch)"
    return line + f" -> {escape(result.output)}"


def predict(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: name/3 or name@alias.")],
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A Parquet or CSV file, a folder of them, or a glob ('data/*.parquet').",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The folder for predictions, rejects and the manifest."
        ),
    ],
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="local or ray (default: the project's engine)."),
    ] = None,
    log: Annotated[
        bool,
        typer.Option("--log", help="Append the predictions to the prediction log (route batch)."),
    ] = False,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", help="Rows scored per batch (bounds memory).")
    ] = DEFAULT_BATCH_ROWS,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep",
            help="A column carried to the output (repeat it); default: the columns not in "
            "the signature.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Threads (local) or actors (ray); default: one per CPU."),
    ] = None,
    native: Annotated[
        bool,
        typer.Option("--native", help="Score with the logged model, not the serving runtime."),
    ] = False,
    trust: Annotated[
        bool, typer.Option("--trust", help="Load a package that holds Python code.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Score Parquet/CSV files with REF's verified serving runtime; rows failing the signature go
    to rejects.parquet with their reason."""
    settings = settings_from(ctx)

    def run() -> BatchResult:
        return predict_batch(
            ref,
            input_,
            output,
            engine=engine,
            log=log,
            batch_rows=batch_rows,
            keep=keep or None,
            workers=workers,
            runtime="native" if native else None,
            trust=trust,
            settings=settings,
        )

    if as_json:
        print_json(run().to_dict())
        return
    with err_console.status(f"Scoring with {escape(ref)}..."):
        result = run()
    console.print(_summary(result))
    if result.rows_rejected:
        console.print(
            f"{result.rows_rejected:,} row(s) rejected: see "
            f"{escape(str(Path(result.output) / 'rejects.parquet'))} (file, row, column, reason)"
        )
