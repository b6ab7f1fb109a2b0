"""The pages of the web app, one module each.

Each module exposes ``routes: list[BaseRoute]`` and ``NAV: tuple[str, str] | None``
(the label and path of its entry in the top navigation). ``create_app`` mounts them in
the order of ``PAGE_NAMES``: the runs pages at once, the others on first use (they pull
in scipy, scikit-learn and plotly, seconds of imports the UI should not wait for before
it answers). ``NAV`` is read from each module's source without importing it.

``PAGES`` (the modules, imported) is still here for whoever wants them all.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["PAGES", "PAGE_NAMES", "load_page", "nav_items"]

PAGE_NAMES: tuple[str, ...] = (
    "runs",
    "models",
    "pipelines",
    "lineage",
    "features",
    "deployments",
    "monitoring",
)


def load_page(name: str) -> ModuleType:
    """The page module ``name`` (imported once)."""
    return importlib.import_module(f"{__name__}.{name}")


def _declared_nav(name: str) -> tuple[str, str] | None:
    """The module's ``NAV = (label, path)`` read from its source, without importing it."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    if spec is None or spec.origin is None:
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id == "NAV":
            try:
                found = ast.literal_eval(value)
            except ValueError:  # computed: import the module to know it
                found = load_page(name).NAV
            if found is None:
                return None
            label, path = found
            return (str(label), str(path))
    return None


@cache
def nav_items() -> list[tuple[str, str]]:
    """``(label, path)`` for the top navigation, in page order."""
    return [nav for name in PAGE_NAMES if (nav := _declared_nav(name)) is not None]


def __getattr__(name: str) -> Any:
    if name == "PAGES":
        return [load_page(n) for n in PAGE_NAMES]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
