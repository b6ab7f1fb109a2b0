"""The test session itself: third-party packages are imported as they ship.

pytest rewrites the asserts of every module in a plugin's distribution when plugins are
auto-loaded (all of ``anyio``, ``hypothesis``, ``schemathesis``), so a lazy import in a
server's thread parses source with ``ast`` while the main thread may be doing the same.
CPython 3.11 keeps the AST constructor's recursion depth per interpreter, not per thread
(python/cpython#106905), and two such parses at once raise ``SystemError: AST constructor
recursion depth mismatch``: a CI run failed on it. ``pyproject.toml`` turns auto-loading
off and names the two plugins the suite uses by their modules only.
"""

from __future__ import annotations

import importlib

import pytest
from _pytest.assertion.rewrite import AssertionRewritingHook


@pytest.mark.parametrize(
    "module",
    ["anyio._backends._asyncio", "schemathesis.specs.openapi.schemas", "hypothesis.extra.numpy"],
)
def test_a_plugin_package_is_not_rewritten(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__spec__ is not None
    assert not isinstance(loaded.__spec__.loader, AssertionRewritingHook)


def test_test_modules_are_still_rewritten() -> None:
    spec = importlib.import_module(__name__).__spec__
    assert spec is not None
    assert isinstance(spec.loader, AssertionRewritingHook)
