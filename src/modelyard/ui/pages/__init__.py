"""The pages of the web app, one module each.

Each module exposes ``routes: list[BaseRoute]`` and ``NAV: tuple[str, str] | None``
(the label and path of its entry in the top navigation). ``create_app`` mounts them in
the order of ``PAGES``.
"""

from __future__ import annotations

from types import ModuleType

from modelyard.ui.pages import (
    deployments,
    features,
    lineage,
    models,
    monitoring,
    pipelines,
    runs,
)

__all__ = ["PAGES", "nav_items"]

PAGES: list[ModuleType] = [runs, models, pipelines, lineage, features, deployments, monitoring]


def nav_items() -> list[tuple[str, str]]:
    """``(label, path)`` for the top navigation, in page order."""
    return [page.NAV for page in PAGES if getattr(page, "NAV", None) is not None]
