"""``modelyard serve [REF ...]``: the model server (see ``modelyard.serving``)."""

from __future__ import annotations

from typing import Annotated, cast, get_args

import typer

from modelyard.cli.context import settings_from
from modelyard.cli.output import err_console
from modelyard.config import ServingRuntime
from modelyard.errors import InvalidInputError

#: the values of ``--runtime`` (``modelyard.config.ServingRuntime``)
RUNTIMES = get_args(ServingRuntime)


def serve(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to serve: NAME (its production alias), NAME@ALIAS or NAME/VERSION. "
            "Default: every model with a production alias."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: number of cores).")
    ] = None,
    trust: Annotated[
        bool, typer.Option(help="Load packages that hold Python code (custom models).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    runtime: Annotated[
        str | None,
        typer.Option(
            help="Runtime to serve versions in: auto (the package's verified serving runtime, "
            "e.g. onnxruntime) or native (the logged model itself). Default: serving.runtime."
        ),
    ] = None,
) -> None:
    """Serve models over HTTP: KServe v2 and v1, MLflow /invocations, /metrics."""
    if workers is not None and workers < 1:
        raise InvalidInputError(f"Expected --workers >= 1, got {workers}", loc="workers")
    if not 0 < port < 65536:
        raise InvalidInputError(f"Expected a port in 1..65535, got {port}", loc="port")
    chosen: ServingRuntime | None = None
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise InvalidInputError(
                f"Expected --runtime {' or '.join(RUNTIMES)}, got {runtime!r}", loc="runtime"
            )
        chosen = cast(ServingRuntime, runtime)
    settings = settings_from(ctx)
    try:
        from modelyard.serving.server import preflight
        from modelyard.serving.server import serve as run_server
    except ImportError as exc:  # the serve extra is missing
        raise InvalidInputError(
            f"modelyard serve needs the 'serve' extra: pip install 'modelyard[serve]' ({exc})"
        ) from exc
    # the store, the models and the log folder, checked once before any worker starts
    found = preflight(settings, refs or [])
    err_console.print(f"serving {', '.join(found or ['every production model'])} on {host}:{port}")
    run_server(
        settings,
        refs or [],
        host=host,
        port=port,
        workers=workers,
        trust=trust,
        log_level=log_level,
        runtime=chosen,
        checked=True,
    )
