"""The pipelines pages (placeholder: its owner replaces it)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
NAV: tuple[str, str] | None = None
