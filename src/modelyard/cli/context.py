"""What every command shares: the project settings, opened once per invocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from modelyard.config import Settings, load_settings
from modelyard.tracking.client import TrackingClient

__all__ = ["CliState", "client_from", "settings_from"]


@dataclass
class CliState:
    project: Path | None
    verbose: bool
    _settings: Settings | None = field(default=None, repr=False)
    _client: TrackingClient | None = field(default=None, repr=False)


def _state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState(project=None, verbose=False)
    return root.obj


def settings_from(ctx: typer.Context) -> Settings:
    state = _state(ctx)
    if state._settings is None:
        state._settings = load_settings(state.project)
    return state._settings


def client_from(ctx: typer.Context) -> TrackingClient:
    state = _state(ctx)
    if state._client is None:
        state._client = TrackingClient(settings_from(ctx))
        ctx.find_root().call_on_close(state._client.close)
    return state._client
