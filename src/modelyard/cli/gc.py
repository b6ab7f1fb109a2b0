"""``modelyard gc [--dry-run] [--json] [--grace 24h]``: stale temporary files, unused blobs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.models import JsonOpt, registry_from
from modelyard.cli.output import console, print_json
from modelyard.store.gc import DEFAULT_GRACE_S, GcReport, parse_grace

__all__ = ["gc"]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _print(report: GcReport) -> None:
    verb = "Would remove" if report.dry_run else "Removed"
    if report.items:
        table = Table(title=f"{verb} {len(report.items)} file(s)", title_justify="left")
        for col in ("kind", "path", "size", "age"):
            table.add_column(col, justify="right" if col in ("size", "age") else "left")
        for item in report.items:
            table.add_row(item.kind, escape(item.path), _size(item.bytes), _age(item.age_s))
        console.print(table)
    console.print(
        f"{verb} {len(report.items)} file(s), {_size(report.bytes)}; kept "
        f"{report.kept_referenced} referenced blob(s) and {report.kept_young} item(s) younger "
        f"than the grace period ({_age(report.grace_s)})",
        soft_wrap=True,
    )


def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go, with its bytes; remove nothing.")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Only what is older than this goes (30m, 24h, 7d): a running writer's "
            "files are always younger.",
        ),
    ] = f"{DEFAULT_GRACE_S / 3600:g}h",
    as_json: JsonOpt = False,
) -> None:
    """Remove stale temporary files and blobs no package, run or registry record references."""
    registry = registry_from(ctx)
    report = registry.collect_garbage(grace_s=parse_grace(grace), dry_run=dry_run)
    if as_json:
        print_json(report.to_dict())
        return
    _print(report)
