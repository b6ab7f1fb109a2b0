"""What the driver saw of the ``ray`` engine's actor pool."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PoolStats"]


@dataclass
class PoolStats:
    """The actors that scored (each loaded and verified the model once) and the batches."""

    actors: set[str] = field(default_factory=set)
    batches: int = 0
