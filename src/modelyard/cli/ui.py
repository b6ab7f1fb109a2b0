"""``modelyard ui``: the web app over the project (see ``modelyard.ui`` and docs/ui.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli.context import _state, settings_from
from modelyard.cli.output import err_console
from modelyard.errors import InvalidInputError

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, change nothing (no actions).")
    ] = False,
    project: Annotated[
        Path | None,
        typer.Option("--project", "-p", help="Project folder (same as the root's --project)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Browse runs, models, pipelines, features, deployments and drift in a web browser."""
    if not 0 < port < 65536:
        raise InvalidInputError(f"Expected a port in 1..65535, got {port}", loc="port")
    if project is not None:
        _state(ctx).project = project
    settings = settings_from(ctx)
    try:
        import uvicorn

        from modelyard.serving.auth import ApiKeys
        from modelyard.ui.app import create_app
    except ImportError as exc:  # the ui extra is missing
        raise InvalidInputError(
            f"modelyard ui needs the 'ui' extra: pip install 'modelyard[ui]' ({exc})"
        ) from exc
    keys = ApiKeys.from_settings(settings.serving.api_keys, os.environ)
    if host not in _LOCAL_HOSTS and not read_only and not keys.enabled:
        err_console.print(
            f"warning: listening on {host} with no API key configured: actions are refused "
            "until serving.api_keys or MODELYARD_API_KEYS gives one the admin scope",
            soft_wrap=True,
        )
    app = create_app(settings, read_only=read_only, api_keys=keys)
    shown = f"[{host}]" if ":" in host else host
    mode = " (read-only)" if read_only else ""
    err_console.print(f"modelyard ui{mode} on http://{shown}:{port}/", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, access_log=False)
