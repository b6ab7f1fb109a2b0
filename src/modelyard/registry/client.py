"""The registry client: log packages, register versions, move aliases, load by ref.

>>> import tempfile, pathlib
>>> from sklearn.linear_model import LogisticRegression
>>> from modelyard.config import init_project, load_settings
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_project(root)
>>> registry = ModelRegistry(load_settings(root, environ={}))
>>> import pandas as pd
>>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
>>> logged = registry.log_model(LogisticRegression().fit(X, [0, 0, 1, 1]),
...                             name="toy", training_frame=X)
>>> logged.version, registry.set_alias("toy/1", "production")
(1, None)
>>> registry.load("toy@production").predict({"x": [3.0]}).tolist()
[1]
>>> registry.close()
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import msgspec

from modelyard.config import ServingRuntime, Settings
from modelyard.errors import NotFoundError
from modelyard.models.flavors import LoadOptions
from modelyard.models.manifest import DatasetRef, Lineage, Manifest
from modelyard.models.package import PackagedModel, load_package, read_manifest, save_package
from modelyard.models.runtimes import Runtime, open_graph_runtime, open_serving_runtime
from modelyard.models.serving_model import ServingModel, open_serving_model
from modelyard.models.signature import Signature
from modelyard.registry.entities import AuditEntry, ModelVersion, RegisteredModel
from modelyard.registry.gc import run_gc
from modelyard.registry.refs import ModelRef, check_alias, check_model_name
from modelyard.registry.store import SQLRegistryStore
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import Database, open_database
from modelyard.store.gc import DEFAULT_GRACE_S, GcReport
from modelyard.tracking.store import SQLTrackingStore

if TYPE_CHECKING:
    from modelyard.gates.records import GateReport
    from modelyard.registry.promotion import Evidence, Promotion

__all__ = ["LoggedModel", "ModelRegistry"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _actor() -> str:
    configured = os.environ.get("MODELYARD_ACTOR")
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class LoggedModel:
    """A package written by ``log_model``; ``version`` is set when it was registered."""

    package_id: str
    manifest: Manifest
    name: str | None = None
    version: int | None = None

    @property
    def ref(self) -> str | None:
        return None if self.name is None else f"{self.name}/{self.version}"


class ModelRegistry:
    """Model packages and the registry of one project."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.settings = settings
        self._own_db = db is None
        self._db = db or open_database(settings.db_url)
        self._store = SQLRegistryStore(self._db)
        self._runs = SQLTrackingStore(self._db)
        self.artifacts = artifacts or ArtifactStore(settings.artifacts)

    @property
    def db(self) -> Database:
        """The metadata store this registry reads and writes."""
        return self._db

    def close(self) -> None:
        if self._own_db:
            self._db.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _options(self, trust: bool) -> LoadOptions:
        models = self.settings.models
        return LoadOptions(
            trusted_types=tuple(models.trusted_types), trust_code=trust or models.trust_code
        )

    # -- packages ------------------------------------------------------------------

    def log_model(
        self,
        model: Any,
        *,
        name: str | None = None,
        training_frame: Any = None,
        signature: Signature | None = None,
        no_signature: bool = False,
        metrics: dict[str, float] | None = None,
        run_id: str | None = None,
        holdout_frame: Any = None,
        flavor: str | None = None,
        description: str | None = None,
        feature_service: str | None = None,
        imported_from: str | None = None,
    ) -> LoggedModel:
        """Write ``model`` as a package (lineage from ``run_id``); register it under ``name``.

        ``feature_service`` names the feature service the model was trained on; the
        server then answers requests that send only entity keys by looking it up.
        ``imported_from`` records where a model made elsewhere came from (provenance).
        """
        if name is not None:
            check_model_name(name)
        lineage = Lineage()
        if run_id is not None:
            run = self._runs.get_run(run_id)
            lineage = Lineage(
                run_id=run.id,
                experiment=run.experiment,
                datasets=[
                    DatasetRef(name=d.name, context=d.context, digest=d.digest)
                    for d in self._runs.list_inputs(run.id)
                ],
            )
            if metrics is None:
                metrics = dict(run.metrics)
        if feature_service is not None:
            lineage = msgspec.structs.replace(lineage, feature_service=feature_service)
        if imported_from is not None:
            lineage = msgspec.structs.replace(lineage, imported_from=imported_from)
        saved = save_package(
            model,
            self.artifacts,
            training_frame=training_frame,
            signature=signature,
            no_signature=no_signature,
            metrics=metrics,
            lineage=lineage,
            holdout_frame=holdout_frame,
            flavor=flavor,
        )
        self._store.record_package(
            saved.id,
            flavor=saved.manifest.flavor,
            model_class=saved.manifest.model_class,
            run_id=run_id,
            now=_now_ms(),
        )
        version = None
        if name is not None:
            version = self._store.create_version(
                name,
                saved.id,
                run_id=run_id,
                description=description,
                actor=_actor(),
                now=_now_ms(),
            )
        return LoggedModel(saved.id, saved.manifest, name, version)

    def register(self, source: str, name: str, *, description: str | None = None) -> ModelVersion:
        """Register a package (by id) or the last package a run logged (by run id)."""
        check_model_name(name)
        package_id: str | None = None
        run_id: str | None = None
        if len(source) == 64 and self._store.package_exists(source):
            package_id = source
        else:
            run = self._runs.get_run(source) if len(source) == 32 else None
            if run is None:
                matches = self._runs.find_run_ids(source) if len(source) >= 6 else []
                if len(matches) != 1:
                    raise NotFoundError(
                        f"No run or package with id {source!r}. Give a run id (or a unique "
                        "prefix of 6+ characters) or a package id."
                    )
                run = self._runs.get_run(matches[0])
            run_id = run.id
            packages = self._store.packages_of_run(run.id)
            if not packages:
                raise NotFoundError(
                    f"Run {run.id} logged no model. Log one with modelyard.log_model(...) "
                    "inside the run."
                )
            package_id = packages[-1]
        if run_id is None:
            run_id = read_manifest(self.artifacts, package_id).lineage.run_id
        version = self._store.create_version(
            name,
            package_id,
            run_id=run_id,
            description=description,
            actor=_actor(),
            now=_now_ms(),
        )
        return self._store.resolve(ModelRef(name, version=version))

    # -- reading -------------------------------------------------------------------

    def get_version(self, ref: str | ModelRef) -> ModelVersion:
        return self._store.resolve(ref if isinstance(ref, ModelRef) else ModelRef.parse(ref))

    def manifest(self, ref: str | ModelRef) -> Manifest:
        """The verified manifest of the version ``ref`` names."""
        return read_manifest(self.artifacts, self.get_version(ref).package_id)

    def load(self, ref: str | ModelRef, *, trust: bool = False) -> PackagedModel:
        """Load the version ``ref`` names, verifying its manifest and every file."""
        version = self.get_version(ref)
        return load_package(self.artifacts, version.package_id, self._options(trust))

    def load_serving(self, ref: str | ModelRef, *, trust: bool = False) -> ServingModel:
        """The version's serving runtime (what the server answers with), verified.

        The package is loaded and checked as by :meth:`load`; its serving runtime is
        opened as the server opens it and checked against the held-out rows' native scores.
        """
        version = self.get_version(ref)
        packaged = load_package(self.artifacts, version.package_id, self._options(trust))
        return open_serving_model(packaged, self.artifacts, where=version.ref)

    def load_package(self, package_id: str, *, trust: bool = False) -> PackagedModel:
        if not self._store.package_exists(package_id):
            raise NotFoundError(f"No package with id {package_id!r}")
        return load_package(self.artifacts, package_id, self._options(trust))

    def package_manifest(self, package_id: str) -> Manifest:
        """The verified manifest of a package this registry holds, without loading it."""
        if not self._store.package_exists(package_id):
            raise NotFoundError(f"No package with id {package_id!r}")
        return read_manifest(self.artifacts, package_id)

    def open_runtime(
        self, package_id: str, *, trust: bool = False, choice: ServingRuntime = "auto"
    ) -> tuple[Manifest, Runtime]:
        """A package's verified manifest and the runtime it is served with.

        When that runtime is a graph (ONNX), only the manifest and the graph are read,
        each checked against its hash, and the native model is not deserialized: a
        process that scores with the graph never imports the model's library (seconds
        of start-up for scikit-learn with skops, paid by every server worker and every
        batch actor). Otherwise the whole package is loaded, every file checked, as by
        :meth:`load_package`. The caller still checks the runtime against the held-out
        rows' native scores before it answers with it.
        """
        manifest = self.package_manifest(package_id)
        if trust or not manifest.needs_trust:  # else load_package words the refusal
            graph = open_graph_runtime(manifest, self.artifacts, choice=choice)
            if graph is not None:
                return manifest, graph
        options = self._options(trust)
        packaged = load_package(self.artifacts, package_id, options, manifest=manifest)
        return manifest, open_serving_runtime(packaged, self.artifacts, choice=choice)

    def list_models(self) -> list[RegisteredModel]:
        return self._store.list_models()

    def list_versions(self, name: str) -> list[ModelVersion]:
        return self._store.list_versions(name)

    def history(self, name: str) -> list[AuditEntry]:
        return self._store.history(name)

    # -- changes -------------------------------------------------------------------

    def set_alias(
        self,
        ref: str | ModelRef,
        alias: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> int | None:
        """Point ``alias`` at the version ``ref`` names; return the previous holder.

        ``actor`` is who the audit trail names (default: ``MODELYARD_ACTOR`` or the
        user); the web UI passes ``ui:KEYNAME``.
        """
        check_alias(alias)
        version = self.get_version(ref)
        return self._store.set_alias(
            version.name,
            alias,
            version.version,
            actor=actor or _actor(),
            reason=reason,
            now=_now_ms(),
        )

    def promote(
        self,
        ref: str | ModelRef,
        alias: str = "production",
        *,
        force: bool = False,
        reason: str | None = None,
    ) -> ModelVersion:
        """Move ``alias`` to ``ref`` when its gates passed against the alias's holder.

        Refuses (``GateFailedError``) when the version's latest gate evaluation against
        ``alias`` is missing, has a failed required gate, or is stale (the holder or the
        gate config changed since); ``force=True`` with a ``reason`` overrides, audited.
        See ``modelyard.registry.promotion``.
        """
        return self.promote_with_evidence(ref, alias, force=force, reason=reason).version

    def promote_with_evidence(
        self,
        ref: str | ModelRef,
        alias: str = "production",
        *,
        force: bool = False,
        reason: str | None = None,
        actor: str | None = None,
    ) -> Promotion:
        """``promote``, answering what it did and on which evidence (``actor`` as in
        ``set_alias``)."""
        # imported here, not above: gates.runner imports this module (a cycle), and a
        # process that only loads models (a server) need not import the gates
        from modelyard.registry.promotion import promote

        version = self.get_version(ref)
        done = promote(
            self._store,
            self._db,
            self.settings,
            version,
            alias,
            force=force,
            reason=reason,
            actor=actor or _actor(),
            now=_now_ms(),
        )
        moved = self._store.resolve(ModelRef(version.name, version=version.version))
        return replace(done, version=moved)

    def evidence(self, ref: str | ModelRef | ModelVersion) -> list[Evidence]:
        """The latest gate evidence of a version against each alias it was gated against."""
        from modelyard.registry.promotion import evidence_for  # see promote_with_evidence

        version = ref if isinstance(ref, ModelVersion) else self.get_version(ref)
        holders = {
            alias: v
            for m in self.list_models()
            if m.name == version.name
            for alias, v in m.aliases.items()
        }
        return evidence_for(self._db, self.settings, version, holders)

    def evaluations(self, name: str) -> list[GateReport]:
        """Every gate evaluation of model ``name``, oldest first."""
        from modelyard.gates.records import list_evaluations  # see promote_with_evidence

        return list_evaluations(self._db, name)

    def remove_alias(self, name: str, alias: str, *, reason: str | None = None) -> int:
        return self._store.remove_alias(name, alias, actor=_actor(), reason=reason, now=_now_ms())

    def rollback(
        self, name: str, alias: str, *, reason: str | None = None, actor: str | None = None
    ) -> ModelVersion:
        """Point ``alias`` back at the version that held it before its last move."""
        check_alias(alias)
        previous = self._store.rollback(
            name, alias, actor=actor or _actor(), reason=reason, now=_now_ms()
        )
        return self._store.resolve(ModelRef(name, version=previous))

    def archive(
        self, ref: str | ModelRef, *, reason: str | None = None, actor: str | None = None
    ) -> ModelVersion:
        version = self.get_version(ref)
        self._store.archive(
            version.name, version.version, actor=actor or _actor(), reason=reason, now=_now_ms()
        )
        return self._store.resolve(ModelRef(version.name, version=version.version))

    def set_package(self, ref: str | ModelRef, package_id: str, *, reason: str) -> ModelVersion:
        """Point a version at a re-written package of the same model (optimize does this)."""
        version = self.get_version(ref)
        read_manifest(self.artifacts, package_id)  # refuse a package whose manifest differs
        self._store.set_package(
            version.name,
            version.version,
            package_id,
            actor=_actor(),
            reason=reason,
            now=_now_ms(),
        )
        return self._store.resolve(ModelRef(version.name, version=version.version))

    def collect_garbage(
        self, *, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False
    ) -> GcReport:
        """Remove stale temporary files and unreferenced blobs older than ``grace_s``.

        Never removes anything a package, a registry version or a run references; see
        ``modelyard.registry.gc``. ``dry_run`` lists what would go, with its bytes.
        """
        return run_gc(self._db, self.artifacts, grace_s=grace_s, dry_run=dry_run)

    def record_package(self, package_id: str, manifest: Manifest) -> None:
        self._store.record_package(
            package_id,
            flavor=manifest.flavor,
            model_class=manifest.model_class,
            run_id=manifest.lineage.run_id,
            now=_now_ms(),
        )
