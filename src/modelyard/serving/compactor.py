"""The server's own compaction of its prediction log, every ``serving.compact_interval_s``.

Each worker, on its own timer: close the segments it wrote so far (``rotate``: fsync'ed,
lock released), then compact every closed segment under the log folder into Parquet,
its own and other workers' (a dead worker's included). Several workers compacting at
once are safe: a segment is claimed by an exclusive lock, and one that another worker
already moved is skipped. A crash at any step loses no record and duplicates none: the
segment is deleted only after its Parquet files are renamed into place, a rerun writes
the same file names, and readers keep one row per (record_id, row, route) meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from modelyard.store.predlog import CompactionResult, PredictionLog, compact

__all__ = ["compact_now", "compact_periodically"]

logger = logging.getLogger("modelyard.serving")


async def compact_now(log: PredictionLog) -> CompactionResult:
    """Close this worker's segments, then compact every closed one (off the event loop)."""
    await asyncio.to_thread(log.rotate)
    return await asyncio.to_thread(compact, log.root)


async def compact_periodically(log: PredictionLog, interval_s: float) -> None:
    """``compact_now`` every ``interval_s`` seconds until cancelled; failures are logged."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            result = await compact_now(log)
        except Exception:  # deliberate: compaction must never stop the server
            logger.exception("Compacting the prediction log %s failed", log.root)
            continue
        if result.segments:
            logger.info(
                "Compacted %d segment(s), %d record(s) of %s",
                result.segments,
                result.records,
                log.root,
            )
