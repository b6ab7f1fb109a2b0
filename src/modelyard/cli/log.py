"""``modelyard log compact [--log-dir DIR] [--json]``: the prediction log into Parquet.

Closed segments (their writer rotated past them, closed, or died) become Parquet files
partitioned by model, version and UTC day; segments a live server still writes are
left to it (a running server compacts every ``serving.compact_interval_s`` itself).
Safe beside running servers and other compactions: each segment is claimed by a lock,
and a crash at any step loses no record and duplicates none for the readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, print_json
from modelyard.store.predlog import compact

__all__ = ["app"]

app = typer.Typer(help="The prediction log.", no_args_is_help=True)


@app.command("compact")
def compact_command(
    ctx: typer.Context,
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="Prediction log folder (default: config).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Move every closed log segment into Parquet; print what was done."""
    root = log_dir if log_dir is not None else settings_from(ctx).prediction_log_dir
    result = compact(root)
    if as_json:
        print_json(
            {
                "log_dir": str(root),
                "segments": result.segments,
                "records": result.records,
                "files": [str(path) for path in result.files],
                "skipped_live": result.skipped_live,
                "torn": result.torn,
                "merged": result.merged,
            }
        )
        return
    console.print(
        f"Compacted {result.segments} segment(s), {result.records} record(s) into "
        f"{len(result.files)} Parquet file(s) under {escape(str(root))}; "
        f"{result.skipped_live} segment(s) still being written; {result.merged} small "
        "file(s) merged",
        soft_wrap=True,
    )
    if result.torn:
        console.print(f"{result.torn} segment(s) ended in a torn record (left out)")
