"""The server's own compaction of its prediction log, and its shipping to the artifact store.

Each worker, every ``serving.compact_interval_s``: close the segments it wrote so far
(``rotate``: fsync'ed, lock released), then compact every closed segment under the log
folder into Parquet, its own and other workers' (a dead worker's included). Several
workers compacting at once are safe: a segment is claimed by an exclusive lock, and one
that another worker already moved is skipped. A crash at any step loses no record and
duplicates none: the segment is deleted only after its Parquet files are renamed into
place, a rerun writes the same file names, and readers keep one row per (record_id,
row, route) meanwhile.

With shipping on (``serving.ship``, see ``store.predlog.shipping``), after compacting,
at most every ``serving.ship.interval_s``, the worker ships the compacted files to
``{artifacts}/predictions/replica=<serving.replica_id>/`` (one worker of the replica at a
time; the others skip), and local merging is left out: the shipped files replace it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from modelyard.config import Settings, duration_seconds
from modelyard.store.predlog import CompactionResult, PredictionLog, compact
from modelyard.store.predlog.shipping import (
    SHIPPED,
    ShipResult,
    replica_id_for,
    ship,
    ship_interval_s,
)

__all__ = ["compact_now", "compact_periodically", "ship_now"]

logger = logging.getLogger("modelyard.serving")


async def compact_now(log: PredictionLog, *, merge: bool = True) -> CompactionResult:
    """Close this worker's segments, then compact every closed one (off the event loop)."""
    await asyncio.to_thread(log.rotate)
    return await asyncio.to_thread(compact, log.root, merge=merge)


async def ship_now(log: PredictionLog, settings: Settings) -> ShipResult:
    """Ship the compacted log of this replica to the artifact store (off the event loop)."""
    retention = settings.serving.ship.retention
    return await asyncio.to_thread(
        ship,
        log.root,
        f"{settings.artifacts.rstrip('/')}/{SHIPPED}",
        replica_id_for(settings),
        retention_s=None if retention is None else duration_seconds("ship.retention", retention),
    )


async def compact_periodically(
    log: PredictionLog, interval_s: float, settings: Settings | None = None
) -> None:
    """``compact_now`` every ``interval_s`` seconds until cancelled; failures are logged.

    With ``settings`` whose shipping is on, each round then ships, at most every
    ``serving.ship.interval_s``.
    """
    ship_every = 0.0 if settings is None else ship_interval_s(settings)
    last_ship = float("-inf")
    while True:
        await asyncio.sleep(interval_s)
        try:
            result = await compact_now(log, merge=ship_every <= 0)
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
        if settings is None or ship_every <= 0 or time.monotonic() - last_ship < ship_every:
            continue
        try:
            shipped = await ship_now(log, settings)
        except Exception:  # deliberate: shipping is retried, the records stay on disk
            logger.exception("Shipping the prediction log %s failed", log.root)
            continue
        if not shipped.busy:
            last_ship = time.monotonic()
        if shipped.shipped:
            logger.info(
                "Shipped %d file(s), %d row(s) of %s", len(shipped.shipped), shipped.rows, log.root
            )
