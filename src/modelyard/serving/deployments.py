"""What the server serves: per model name, the versions behind its aliases and the policy.

A ``Deployment`` holds the primary version (an alias such as ``production``, or a pinned
version), optionally a canary (a weighted share of requests, sticky by a key) and a
shadow (gets a copy of each request; its answers are logged, never returned). Each slot
is a ``Served``: a loaded model plus its batcher when batching is on.

Hot swap: ``refresh`` resolves every alias in the registry; a version that moved is
loaded and warmed off the event loop, then swapped in by one reference assignment, so a
request sees either the old version or the new one, never a half-loaded model. A failed
load keeps the old version and is reported.

Every version answers in its own signature (``signatures.py``): a canary or shadow whose
signature cannot take the primary's requests is not put in its slot (the alias moved to
an incompatible version, or the primary moved away from it); the slot keeps a version
that still fits or is emptied, and the reason is in ``errors`` and the log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelyard.config import BatchingSettings, ServingRuntime, TrafficSettings
from modelyard.errors import ModelyardError, NotFoundError
from modelyard.models.signature import Signature
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.serving.batching import Batcher, LoopBatcher
from modelyard.serving.loaded import LoadedModel, load_version
from modelyard.serving.signatures import differences

__all__ = ["Deployment", "Served", "Slot", "parse_target"]

logger = logging.getLogger("modelyard.serving")

Slot = Literal["primary", "canary", "shadow"]
#: models faster than this per row are not batched under ``mode: auto``
AUTO_BATCH_US = 1000.0


@dataclass(eq=False)
class Served:
    """One loaded version and how it is called."""

    model: LoadedModel
    batcher: Batcher | LoopBatcher | None

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def make_served(
    model: LoadedModel,
    batching: BatchingSettings,
    on_batch: Callable[[LoadedModel, int, float], None] | None = None,
) -> Served:
    use = batching.mode == "on" or (
        batching.mode == "auto" and model.row_latency_us >= AUTO_BATCH_US
    )
    batcher: Batcher | LoopBatcher | None = None
    if use:
        batcher = Batcher(
            model.predict,
            max_batch_rows=batching.max_batch_rows,
            max_delay_s=batching.max_delay_ms / 1000.0,
            max_queue_rows=batching.max_queue_rows,
            timeout_s=batching.timeout_ms / 1000.0,
            on_batch=None if on_batch is None else (lambda n, s: on_batch(model, n, s)),
        )
    elif batching.mode == "auto":  # fast: concurrent requests share a call on the loop
        batcher = LoopBatcher(
            model.predict,
            max_batch_rows=batching.max_batch_rows,
            on_batch=None if on_batch is None else (lambda n, s: on_batch(model, n, s)),
        )
    return Served(model, batcher)


def parse_target(text: str) -> tuple[str, str | None, int | None]:
    """``name`` (its production alias), ``name@alias`` or ``name/3`` as (name, alias, version)."""
    ref = ModelRef.parse(text if ("@" in text or "/" in text) else f"{text}@production")
    return ref.name, ref.alias, ref.version


@dataclass(eq=False)
class Deployment:
    """One model name as served."""

    name: str
    policy: TrafficSettings
    pinned_version: int | None = None
    primary: Served | None = None
    canary: Served | None = None
    shadow: Served | None = None
    errors: dict[str, str] = field(default_factory=dict)
    #: (version, primary version) of the canary/shadow last refused as incompatible
    _refused: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.primary is not None

    def slots(self) -> list[tuple[Slot, Served]]:
        out: list[tuple[Slot, Served]] = []
        for slot in ("primary", "canary", "shadow"):
            served = getattr(self, slot)
            if served is not None:
                out.append((slot, served))
        return out

    def by_version(self, version: int) -> Served | None:
        for _, served in self.slots():
            if served.model.version == version:
                return served
        return None

    def incompatible(
        self, slot: Slot, version: int, other: Signature | None, *, strict_values: bool
    ) -> str | None:
        """Why ``version`` cannot be this deployment's canary/shadow now, or ``None``."""
        primary = self.primary
        if primary is None or other is None:
            return None
        found = differences(primary.model.signature, other, strict_values=strict_values)
        if not found:
            return None
        return (
            f"{self.name} v{version} cannot be the {slot}: it cannot take every request "
            f"the primary v{primary.model.version} takes ({'; '.join(found)})"
        )

    def require_primary(self) -> Served:
        """The primary version; a NotFoundError while it is not loaded yet."""
        if self.primary is None:
            raise NotFoundError(f"Model {self.name!r} is not loaded yet")
        return self.primary

    def choose(self, sticky: str | None) -> tuple[Slot, Served]:
        """The slot that answers: the canary for its share (sticky by key), else primary."""
        primary = self.require_primary()
        canary = self.canary
        weight = self.policy.canary_weight
        if canary is None or weight <= 0:
            return "primary", primary
        if sticky is not None:
            draw = (zlib.crc32(sticky.encode()) % 10_000) / 10_000
        else:
            draw = random.random()
        return ("canary", canary) if draw < weight else ("primary", primary)

    def _wanted(self, registry: ModelRegistry) -> dict[Slot, int | None]:
        wanted: dict[Slot, int | None] = {}
        if self.pinned_version is not None:
            wanted["primary"] = self.pinned_version
        else:
            wanted["primary"] = _resolve(registry, self.name, self.policy.primary)
        for slot, alias in (("canary", self.policy.canary), ("shadow", self.policy.shadow)):
            if alias is not None:
                wanted[slot] = _resolve(registry, self.name, alias)  # type: ignore[index]
            else:
                wanted[slot] = None  # type: ignore[index]
        return wanted

    async def refresh(
        self,
        registry: ModelRegistry,
        batching: BatchingSettings,
        *,
        trust: bool = False,
        runtime: ServingRuntime = "auto",
        on_swap: Callable[[str, str], None] | None = None,
        on_batch: Callable[[LoadedModel, int, float], None] | None = None,
        strict_values: bool = False,
    ) -> list[str]:
        """Load what the aliases point at now; swap atomically; keep the old on failure."""
        wanted = await asyncio.to_thread(self._wanted, registry)
        changes = []
        for slot, version in wanted.items():
            current: Served | None = getattr(self, slot)
            if version is None:
                if self._refused.pop(slot, None) is not None:
                    self.errors.pop(slot, None)
                if current is not None and slot != "primary":
                    setattr(self, slot, None)
                    changes.append(f"{self.name} {slot}: removed v{current.model.version}")
                continue
            if current is not None and current.model.version == version:
                continue
            reuse = self.by_version(version)
            if slot != "primary" and self.primary is not None:
                key = (version, self.primary.model.version)
                if self._refused.get(slot) == key:
                    continue  # refused already; the reason is in errors
                try:
                    other = (
                        reuse.model.signature
                        if reuse is not None
                        else (
                            await asyncio.to_thread(registry.manifest, f"{self.name}/{version}")
                        ).signature
                    )
                except (ModelyardError, OSError, ValueError) as exc:
                    other = None  # loading below reports it
                    logger.debug("reading %s v%s's manifest failed: %s", self.name, version, exc)
                why = self.incompatible(slot, version, other, strict_values=strict_values)
                if why is not None:
                    self._refused[slot] = key
                    self.errors[slot] = why
                    logger.error("%s; not serving it", why)
                    if on_swap is not None:
                        on_swap(self.name, "refused")
                    continue
            try:
                if reuse is not None:
                    served = reuse
                else:
                    loaded = await asyncio.to_thread(
                        load_version, registry, self.name, version, trust=trust, runtime=runtime
                    )
                    served = make_served(loaded, batching, on_batch)
            except (ModelyardError, OSError, ValueError, RuntimeError) as exc:
                # deliberate: a broken version must not take the serving one down
                message = f"{self.name} v{version} ({slot}) failed to load: {exc}"
                self.errors[slot] = message
                logger.error(message)
                if on_swap is not None:
                    on_swap(self.name, "failed")
                continue
            self.errors.pop(slot, None)
            setattr(self, slot, served)  # the swap: one reference assignment
            old = "-" if current is None else f"v{current.model.version}"
            changes.append(f"{self.name} {slot}: {old} -> v{version}")
            if on_swap is not None and current is not None:
                on_swap(self.name, "swapped")
            if current is not None and self.by_version(current.model.version) is None:
                _retire(current)
        changes += self._drop_incompatible(strict_values)
        return changes

    def _drop_incompatible(self, strict_values: bool) -> list[str]:
        """Empty a canary/shadow slot the (moved) primary no longer fits with."""
        changes = []
        others: tuple[Slot, ...] = ("canary", "shadow")
        for slot in others:
            served: Served | None = getattr(self, slot)
            if served is None or self.primary is None:
                continue
            version = served.model.version
            why = self.incompatible(
                slot, version, served.model.signature, strict_values=strict_values
            )
            if why is None:
                continue
            self._refused[slot] = (version, self.primary.model.version)
            self.errors[slot] = why
            logger.error("%s; not serving it", why)
            setattr(self, slot, None)
            changes.append(f"{self.name} {slot}: removed v{version} (incompatible)")
            if self.by_version(version) is None:
                _retire(served)
        return changes


def _retire(served: Served) -> None:
    """Close a replaced version's batcher once its queued requests are answered."""
    batcher = served.batcher
    if batcher is None:
        return

    async def later() -> None:
        while batcher.queued_rows:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        batcher.close()

    asyncio.get_running_loop().create_task(later())


def _resolve(registry: ModelRegistry, name: str, alias: str) -> int | None:
    try:
        return registry.get_version(f"{name}@{alias}").version
    except NotFoundError:
        return None
