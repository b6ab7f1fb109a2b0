"""pytest settings for the doctests of the package (``--doctest-modules`` over ``src``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _temp_folders_in_the_tests_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A docstring example that makes folders with ``tempfile`` makes them under the
    test's own ``tmp_path`` (which pytest prunes), not in the system's temp folder, where
    every run of the suite left a few dozen behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
