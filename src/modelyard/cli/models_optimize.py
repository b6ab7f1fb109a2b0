"""``modelyard models optimize REF``: export, check parity, measure, pick the serving runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.models import JsonOpt, app, registry_from
from modelyard.cli.output import console, err_console, fmt_value, print_json
from modelyard.models.manifest import Manifest, RuntimeResult, encode_manifest
from modelyard.models.optimize import (
    DEFAULT_ATOL,
    optimize_package,
    read_parity_rows,
    require_onnx_extra,
)

__all__ = ["optimize"]


def _latency(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:.1f} us" if us < 1000 else f"{us / 1000:.2f} ms"


def _status(result: RuntimeResult) -> str:
    return result.status if result.reason is None else f"{result.status}: {result.reason}"


def runtime_table(manifest: Manifest, *, title: str) -> Table:
    """The runtimes of a manifest, the serving one marked with ``*``."""
    table = Table(title=title, title_justify="left")
    for col in ("runtime", "status", "max |diff|", "label flips", "1 row", "1000 rows"):
        table.add_column(col, justify="left" if col in ("runtime", "status") else "right")
    for r in manifest.runtimes:
        mark = " *" if r.name == manifest.serving_runtime else ""
        table.add_row(
            escape(r.name + mark),
            escape(_status(r)),
            fmt_value(r.max_abs_diff, digits=3),
            fmt_value(r.label_flips),
            _latency(r.latency_1_row_us),
            _latency(r.latency_1000_rows_us),
        )
    return table


@app.command("optimize")
def optimize(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: name/3 or name@alias.")],
    atol: Annotated[
        float,
        typer.Option(
            "--atol",
            min=0.0,
            help="Parity tolerance: absolute on probabilities (scaled for regressions).",
        ),
    ] = DEFAULT_ATOL,
    trust: Annotated[
        bool, typer.Option("--trust", help="Load a package that holds Python code.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Parquet or CSV file of input rows to check parity on (for a package without "
            "held-out rows, such as an MLflow import; its input example is used otherwise).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export REF to ONNX, check parity on its held-out rows, serve the fastest verified runtime.

    Needs the onnx extra (pip install 'modelyard[onnx]'); without it, exits 2 and changes nothing.
    """
    registry = registry_from(ctx)
    version = registry.get_version(ref)
    # a missing extra is an install to make (exit 2), never a table of failed exports
    require_onnx_extra(registry.manifest(version.ref).flavor)
    rows = None if data is None else read_parity_rows(data)
    if as_json:
        manifest = optimize_package(registry, version.ref, data=rows, atol=atol, trust=trust)
    else:
        # on stderr: stdout holds only the result, so it can be piped
        with err_console.status(f"Optimizing {escape(version.ref)}...") as status:
            manifest = optimize_package(
                registry,
                version.ref,
                data=rows,
                atol=atol,
                trust=trust,
                progress=lambda message: status.update(f"{escape(version.ref)}: {escape(message)}"),
            )
    package_id = encode_manifest(manifest)[1]
    if as_json:
        print_json(
            {
                "ref": version.ref,
                "package_id": package_id,
                "previous_package_id": version.package_id,
                "serving_runtime": manifest.serving_runtime,
                "runtimes": msgspec.to_builtins(manifest.runtimes),
            }
        )
        return
    console.print(runtime_table(manifest, title=f"runtimes of {escape(version.ref)}"))
    failed = [r for r in manifest.runtimes if r.status != "ok"]
    console.print(
        f"{escape(version.ref)} serves with [bold]{escape(manifest.serving_runtime)}[/] "
        f"(package {package_id[:12]}, was {version.package_id[:12]})"
        + (f"; {len(failed)} runtime(s) kept out of serving" if failed else "")
    )
