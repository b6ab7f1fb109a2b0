"""The state of one server worker: deployments, registry, feature lookups, log, metrics.

Built once per worker process by the app factory and handed to every route; the only
thing that changes while serving is which loaded version each deployment slot points
at (swapped by ``refresh``) and its traffic policy (kept in the metadata store,
:mod:`modelyard.registry.traffic`, and watched by every worker of every replica: each
``serving.watch_interval_s`` one indexed query reads the policy versions of the served
models, and a policy is read again only when its version moved).

A traffic policy is checked before it is used (``check_policy``): every alias it names
must be held by a version, and the canary and shadow must take every request the
primary takes (``signatures.differences``). The admin API refuses a bad one (422); a
stored one that has gone bad since (an alias removed) is ignored with one log line, and
the model is served as the command line and ``modelyard.yaml`` say. On its first start a
server moves the policies of the old one-host file (``.modelyard/traffic.json``) into
the store, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from modelyard.config import Settings, TrafficSettings
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError, NotFoundError
from modelyard.features.definitions import FeatureView, OnDemandFeatureView
from modelyard.features.online.retrieval import OnlineFeatures, get_online_features
from modelyard.features.store import FeatureStore
from modelyard.registry.client import ModelRegistry
from modelyard.registry.traffic import StoredPolicy, TrafficPolicies, legacy_traffic_file
from modelyard.serving.auth import ApiKeys
from modelyard.serving.deployments import Deployment, parse_target
from modelyard.serving.loaded import LoadedModel
from modelyard.serving.metrics import ServerMetrics
from modelyard.store.monitor_results import MonitorResults
from modelyard.store.predlog import PredictionLog

__all__ = ["FeatureLookup", "ServerState", "primary_ref", "traffic_file"]

logger = logging.getLogger("modelyard.serving")


def traffic_file(settings: Settings) -> Path:
    """Where servers before the traffic store kept admin traffic changes; migrated into
    the store on the first start (see :mod:`modelyard.registry.traffic`)."""
    return legacy_traffic_file(settings)


def primary_ref(settings: Settings, target: str) -> str:
    """The registry reference a served target starts on: ``name/3``, or ``name@alias``
    with the alias of ``serving.traffic`` when it names the model, else the target's."""
    name, alias, version = parse_target(target)
    if version is not None:
        return f"{name}/{version}"
    policy = settings.serving.traffic.get(name)
    return f"{name}@{policy.primary if policy is not None else alias}"


@dataclass
class FeatureLookup:
    """Online lookups of a model's feature service, with the definitions cached."""

    settings: Settings
    _store: FeatureStore | None = None
    _views: list[FeatureView] = field(default_factory=list)
    _on_demand: list[OnDemandFeatureView] = field(default_factory=list)
    _services: dict[str, list[str]] = field(default_factory=dict)

    def load(self) -> None:
        """Read the applied definitions (again); run off the event loop."""
        store = self._store or FeatureStore(self.settings)
        self._store = store
        self._views = store.list_views()
        self._on_demand = store.list_on_demand()  # [] without applied on-demand views
        self._services = {}

    def refs(self, service: str) -> list[str]:
        if service not in self._services:
            assert self._store is not None  # load() ran at startup
            self._services[service] = self._store.get_service(service).refs()
        return self._services[service]

    def lookup(
        self,
        service: str,
        entities: Mapping[str, Sequence[Any]],
        now: datetime | None = None,
    ) -> OnlineFeatures:
        """The service's features for ``entities``, fresh as of ``now`` (default: the clock)."""
        if self._store is None:
            raise NotFoundError("The feature store is not loaded")
        return get_online_features(
            self._store.online_store,
            entities,
            self.refs(service),
            self._views,
            now,
            on_demand=self._on_demand,
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@dataclass
class ServerState:
    """Everything one worker serves with."""

    settings: Settings
    targets: list[str]
    registry: ModelRegistry
    keys: ApiKeys
    metrics: ServerMetrics
    log: PredictionLog
    features: FeatureLookup
    deployments: dict[str, Deployment] = field(default_factory=dict)
    trust: bool = False
    #: the stored policy version each served model was last read at
    _policy_versions: dict[str, int] = field(default_factory=dict)
    _policies: TrafficPolicies | None = None
    _drift_exported: dict[tuple[str, int], int] = field(default_factory=dict)
    _loaded: set[tuple[str, str, str]] = field(default_factory=set)
    _watch: asyncio.Task[None] | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def create(
        cls,
        settings: Settings,
        targets: Sequence[str],
        *,
        environ: Mapping[str, str] | None = None,
        trust: bool = False,
    ) -> ServerState:
        env = os.environ if environ is None else environ
        return cls(
            settings=settings,
            targets=list(targets),
            registry=ModelRegistry(settings),
            keys=ApiKeys.from_settings(settings.serving.api_keys, env),
            metrics=ServerMetrics(),
            log=PredictionLog(settings.prediction_log_dir, durable=settings.serving.durable_log),
            features=FeatureLookup(settings),
            trust=trust,
        )

    # -- deployments -------------------------------------------------------------------

    def _discover(self) -> list[str]:
        """Every model with a production alias, when no targets were named."""
        found = []
        for model in self.registry.list_models():
            try:
                self.registry.get_version(f"{model.name}@production")
            except NotFoundError:
                continue
            found.append(model.name)
        return found

    def _policy(self, name: str, alias: str | None) -> TrafficSettings:
        base = self.settings.serving.traffic.get(name, TrafficSettings())
        if alias is not None and name not in self.settings.serving.traffic:
            base = msgspec.structs.replace(base, primary=alias)
        return base

    async def start(self) -> None:
        targets = self.targets or await asyncio.to_thread(self._discover)
        for target in targets:
            name, alias, version = parse_target(target)
            self.deployments[name] = Deployment(
                name, self._policy(name, alias), pinned_version=version
            )
        await asyncio.to_thread(self._migrate_traffic_file)
        await asyncio.to_thread(self._read_traffic)
        try:
            await asyncio.to_thread(self.features.load)
        except ModelyardError as exc:  # serving without features still works for instances
            logger.warning("Feature definitions not loaded: %s", exc)
        await self.refresh()
        await asyncio.to_thread(self._export_drift)
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def refresh(self) -> list[str]:
        """Re-resolve every alias now; load, warm and swap what moved."""
        changes: list[str] = []
        for deployment in self.deployments.values():
            changes += await deployment.refresh(
                self.registry,
                self.settings.serving.batching,
                trust=self.trust,
                runtime=self.settings.serving.runtime,
                on_swap=self._on_swap,
                on_batch=self._on_batch,
                strict_values=self.settings.serving.value_checks == "reject",
            )
        self._export_loaded()
        for change in changes:
            logger.info("%s", change)
        return changes

    def _on_swap(self, model: str, outcome: str) -> None:
        self.metrics.swaps.labels(model, outcome).inc()

    def _on_batch(self, model: LoadedModel, rows: int, _seconds: float) -> None:
        self.metrics.batch_rows.labels(model.name, str(model.version)).observe(rows)

    def _export_loaded(self) -> None:
        """1 for each (model, version, slot) served now; a replaced one is 0 (several
        workers: their gauges live in files, where ``clear`` does nothing) or removed."""
        gauge = self.metrics.loaded
        now: set[tuple[str, str, str]] = {
            (deployment.name, str(served.model.version), str(slot))
            for deployment in self.deployments.values()
            for slot, served in deployment.slots()
        }
        for labels in self._loaded - now:
            if self.metrics.multiprocess:
                gauge.labels(*labels).set(0)
            else:
                gauge.remove(*labels)
        for labels in now:
            gauge.labels(*labels).set(1)
        self._loaded = now

    def _export_drift(self) -> None:
        """The latest stored drift window of each served version, as Prometheus gauges."""
        results = MonitorResults(self.registry.db)
        for deployment in self.deployments.values():
            for _, served in deployment.slots():
                model = served.model
                latest = results.latest(model.name, model.version, "drift")
                if latest is not None and latest.end_us != self._drift_exported.get(
                    (model.name, model.version)
                ):
                    self.metrics.export_drift(
                        model.name, model.version, latest.end_us, latest.summary
                    )
                    self._drift_exported[(model.name, model.version)] = latest.end_us

    async def _watch_loop(self) -> None:
        interval = self.settings.serving.watch_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._read_traffic)
                await self.refresh()
                await asyncio.to_thread(self._export_drift)
            except Exception:  # deliberate: the watcher must outlive any one failure
                logger.exception("Refreshing the served versions failed")

    # -- traffic -------------------------------------------------------------------------

    @property
    def policies(self) -> TrafficPolicies:
        """The traffic store (the registry's metadata database)."""
        if self._policies is None:
            self._policies = TrafficPolicies(self.registry)
        return self._policies

    def _migrate_traffic_file(self) -> None:
        """Move the old one-host ``traffic.json`` into the store (once; the store wins)."""
        try:
            self.policies.migrate_file(actor=f"modelyard serve ({self._replica()})")
        except ModelyardError as exc:
            logger.error("The old traffic file was not migrated: %s", exc)

    def _replica(self) -> str:
        return self.settings.serving.replica_id or os.uname().nodename

    def policy_version(self, name: str) -> int:
        """The stored policy version ``name`` is served by (0: none stored)."""
        return self._policy_versions.get(name, 0)

    def _read_traffic(self) -> None:
        """Apply each served model's stored policy whose version moved since the last look."""
        versions = self.policies.versions(self.deployments)
        for name, version in versions.items():
            if self._policy_versions.get(name) == version:
                continue
            stored = self.policies.get_policy(name)
            if stored is None:  # pragma: no cover - policies are never deleted
                continue
            self._policy_versions[name] = stored.version
            self._apply(stored)

    def _apply(self, stored: StoredPolicy) -> None:
        deployment = self.deployments[stored.model]
        if stored.policy == deployment.policy:
            return
        try:
            self.check_policy(stored.model, stored.policy)
        except (InvalidInputError, NotFoundError) as exc:
            logger.error(
                "Ignoring the saved traffic policy of %s (version %d in the traffic store, "
                "set by %s) (%s); serving %s as configured: primary %s, canary %s, shadow %s",
                stored.model,
                stored.version,
                stored.updated_by,
                exc,
                stored.model,
                deployment.pinned_version or deployment.policy.primary,
                deployment.policy.canary,
                deployment.policy.shadow,
            )
            return
        deployment.policy = stored.policy

    def check_policy(self, name: str, policy: TrafficSettings) -> None:
        """Refuse ``policy`` for ``name`` unless every alias it names exists and every
        version it routes to takes the same requests; the error names the difference."""
        deployment = self.deployments[name]
        self.policies.validate(name, policy, pinned_version=deployment.pinned_version)

    def set_traffic(
        self,
        name: str,
        policy: TrafficSettings,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> StoredPolicy:
        """Check ``policy``, store it (compare-and-set on ``expected_version``) where every
        worker of every replica picks it up, and apply it here; run off the event loop.

        ConflictError when the stored policy is no longer at ``expected_version``.
        """
        deployment = self.deployments[name]
        try:
            stored = self.policies.set_policy(
                name,
                policy,
                actor,
                reason,
                expected_version,
                pinned_version=deployment.pinned_version,
            )
        except ConflictError:
            self._read_traffic()  # serve what won meanwhile
            raise
        self._policy_versions[name] = stored.version
        deployment.policy = stored.policy
        return stored

    # -- shutdown ------------------------------------------------------------------------

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self.background):
            task.cancel()
        for deployment in self.deployments.values():
            for _, served in deployment.slots():
                served.close()
        await asyncio.to_thread(self.log.close)
        self.features.close()
        self.registry.close()
