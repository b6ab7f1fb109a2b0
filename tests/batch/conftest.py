"""The batch tests' project fixtures (in ``tests.batch.fixtures``, shared with the CLI tests)."""

from __future__ import annotations

from tests.batch.fixtures import _batch_base, batch_project

__all__ = ["_batch_base", "batch_project"]
