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

On the way out (``ship_on_exit``, after the worker closed its log), each worker compacts
and ships once more, waiting for another worker's shipment instead of skipping it: a
replica stopped by SIGTERM (a scale-down, a rolling update) leaves nothing behind on a
disk that may go with its pod.
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

__all__ = ["FINAL_SHIP_S", "compact_now", "compact_periodically", "ship_now", "ship_on_exit"]

logger = logging.getLogger("modelyard.serving")

#: how long a stopping worker waits for another worker's shipment, then its own
FINAL_SHIP_S = 15.0


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


async def ship_on_exit(
    log: PredictionLog, settings: Settings, *, timeout_s: float = FINAL_SHIP_S
) -> ShipResult | None:
    """Compact every closed segment and ship, once, as a worker stops (its log closed).

    None when shipping is off. Another worker of the replica shipping at the same moment
    is waited for (up to ``timeout_s``), not skipped: the last worker to stop ships what
    the others left. What is not shipped in time stays on disk for the next start.
    """
    if ship_interval_s(settings) <= 0:
        return None
    deadline = time.monotonic() + timeout_s
    await asyncio.to_thread(compact, log.root, merge=False)
    while True:
        result = await ship_now(log, settings)
        if not result.busy or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if result.shipped:
        logger.info("Shipped %d row(s) of %s on the way out", result.rows, log.root)
    elif result.busy:
        logger.warning(
            "Another worker was still shipping %s after %.0f s: what is left ships at the "
            "next start",
            log.root,
            timeout_s,
        )
    return result
