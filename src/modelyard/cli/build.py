"""``modelyard build REF --out DIR``: an OCI image build context (see ``modelyard.deploy``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, err_console, print_json
from modelyard.deploy.context import build_context
from modelyard.registry.client import ModelRegistry

__all__ = ["build"]


def build(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: NAME/VERSION or NAME@ALIAS.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="An empty or new folder for the build context.")
    ],
    extra: Annotated[
        list[str] | None,
        typer.Option(
            "--extra",
            help="Another modelyard extra to install in the image (repeat). The serve "
            "extra, the model's flavor and the project's stores are always in.",
        ),
    ] = None,
    trust: Annotated[
        bool, typer.Option("--trust", help="The package holds Python code: serve it trusted.")
    ] = False,
    image: Annotated[
        str | None, typer.Option(help="Image name for the README (default modelyard-NAME:VERSION).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Write a Dockerfile, lock, README and the verified package for an image serving REF."""
    registry = ModelRegistry(settings_from(ctx))
    ctx.find_root().call_on_close(registry.close)
    if as_json:
        built = build_context(registry, ref, out, extras=extra, trust=trust, image=image)
        print_json(built.to_dict())
        return
    with err_console.status(f"Writing the build context of {escape(ref)}..."):
        built = build_context(registry, ref, out, extras=extra, trust=trust, image=image)
    for note in built.lock.notes:
        err_console.print(f"note: {escape(note)}", soft_wrap=True)
    console.print(
        f"Wrote the build context of [bold]{escape(built.bundle.ref)}[/] to "
        f"{escape(str(out))} ({len(built.lock.requirements)} pinned requirements). Build it:\n"
        f"  docker build -t {escape(built.image)} {escape(str(out))}",
        soft_wrap=True,
    )
