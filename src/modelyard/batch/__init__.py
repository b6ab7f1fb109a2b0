"""Batch scoring: files of rows scored with a model version's verified serving runtime.

``modelyard predict REF --input PATH|GLOB --output DIR`` and :func:`predict_batch` read
Parquet or CSV in bounded batches, check every row against the signature (a row that
fails goes to ``rejects.parquet`` with its reason), write ``predictions.parquet`` and a
``manifest.json``, and optionally log the predictions (route ``batch``) so monitoring
covers them. The ``local`` engine scores on this machine's threads; the ``ray`` engine
on a Ray Data actor pool (``modelyard.batch.ray_engine``, needs the ``ray`` extra).
See docs/batch.md.
"""

from __future__ import annotations

from modelyard.batch.run import (
    DEFAULT_BATCH_ROWS,
    MANIFEST,
    BatchResult,
    InputSummary,
    predict_batch,
)

__all__ = ["DEFAULT_BATCH_ROWS", "MANIFEST", "BatchResult", "InputSummary", "predict_batch"]
