"""``FeatureStore``: the project's feature definitions, applied, materialized and served.

``plan()`` compares the definitions in code with the ones last applied; ``apply()`` checks
every view against its source and records the definitions, content-hashed and versioned,
in the metadata store (a view removed from code becomes inactive). ``materialize`` writes
the latest row per entity to the online store; ``materialize_incremental`` picks up rows
that became available since the last run, late arrivals included.

The read paths (``get_online_features``, ``get_historical_features``, ``list_views``,
``get_view``, ...) serve the applied definitions from a snapshot cached in the
``FeatureStore``: one consistent read of the metadata store, decoded once. An ``apply``
by the same ``FeatureStore`` replaces it at once; an apply by another process or instance
is seen within ``features.definitions_cache_s`` seconds (after that long, one small query
compares the store's definitions generation with the snapshot's and reloads only when it
moved). A call always sees one whole snapshot, never a mix of two applies; 0 reads the
definitions on every call. ``plan``, ``apply`` and ``materialize`` always read them fresh.

>>> import pathlib, tempfile
>>> from modelyard.config import init_project, load_settings
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_project(root)
>>> _ = (root / "features.py").write_text(
...     "from modelyard.features import Entity\\ncarrier = Entity('carrier', ['carrier'])\\n")
>>> store = FeatureStore(load_settings(root, environ={}))
>>> [(c.kind, c.name, c.action) for c in store.apply().changes]
[('entity', 'carrier', 'add')]
>>> store.plan().changes[0].action
'unchanged'
>>> store.close()
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from sqlalchemy import case, func, null, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.config import Settings
from modelyard.engine import EngineName, engine_for
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.features.definitions import FeatureService, FeatureView, OnDemandFeatureView
from modelyard.features.materialize import Window, materialize_view
from modelyard.features.offline import get_historical_features as _historical
from modelyard.features.online import OnlineFeatures, OnlineStore, open_online_store
from modelyard.features.online import get_online_features as _online
from modelyard.features.partitioned import (
    materialize_partitioned,
    partitioned_historical_features,
)
from modelyard.features.repo import (
    Definition,
    DefinitionKind,
    Definitions,
    canonical_json,
    decode_definition,
    load_definitions,
    resolve_view,
    sha256_of,
)
from modelyard.features.skew import (
    LoggedSkewReport,
    SkewReport,
    check_logged_skew,
    check_view_skew,
)
from modelyard.features.validation import check_views
from modelyard.store.database import Database, open_database
from modelyard.store.schema import feature_definitions as defs_t
from modelyard.store.schema import materializations as mat_t

__all__ = ["Change", "FeatureStore", "MaterializeResult", "Plan", "Progress"]

Action = Literal["add", "change", "remove", "unchanged"]
#: called with (view name, rows written so far for it) after each written batch
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Change:
    """What applying would do to one definition."""

    kind: DefinitionKind
    name: str
    action: Action
    version_from: int | None
    version_to: int | None
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "version_from": self.version_from,
            "version_to": self.version_to,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Plan:
    """Every definition's change since the last apply."""

    changes: list[Change]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "pending": len(self.pending)}


@dataclass(frozen=True)
class AppliedDefinition:
    kind: DefinitionKind
    name: str
    version: int
    sha256: str
    definition: str
    applied_at: int


#: (rows ever recorded, rows active): every apply that changes anything moves it (adds and
#: changes insert rows, a remove-only apply lowers the active count), never back.
Generation = tuple[int, int]


@dataclass(frozen=True)
class _Snapshot:
    """The applied definitions as of one read of the metadata store, decoded once."""

    generation: Generation
    records: dict[tuple[str, str], AppliedDefinition]
    views: dict[str, FeatureView]  # resolved against the project, by name
    services: dict[str, FeatureService]
    has_on_demand: bool  # any applied on-demand view

    def record(self, kind: DefinitionKind, name: str) -> AppliedDefinition:
        """The applied record of one definition; a NotFoundError names the known ones."""
        found = self.records.get((kind, name))
        if found is None:
            known = sorted(n for k, n in self.records if k == kind)
            hint = difflib.get_close_matches(name, known, n=1)
            maybe = f" Did you mean {hint[0]!r}?" if hint else ""
            raise NotFoundError(
                f"No applied feature {kind} named {name!r}.{maybe} "
                f"Known: {', '.join(known) or 'none (run modelyard features apply)'}."
            )
        return found

    def on_demand_key(self) -> frozenset[tuple[str, str]]:
        """(name, sha256) of every applied on-demand view."""
        return frozenset((n, a.sha256) for (k, n), a in self.records.items() if k == "on_demand")


@dataclass(frozen=True)
class MaterializeResult:
    """One view's materialization: rows written and the newest availability time seen."""

    view: str
    rows: int
    start: datetime | None
    end: datetime
    watermark: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows,
            "start": None if self.start is None else self.start.isoformat(),
            "end": self.end.isoformat(),
            "watermark": None if self.watermark is None else self.watermark.isoformat(),
        }


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise InvalidInputError(
            f"Expected a timezone-aware time, got the naive {moment.isoformat()}", loc="time"
        )
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class FeatureStore:
    """The feature definitions of a project and the stores that hold their values."""

    def __init__(
        self,
        settings: Settings,
        *,
        online_store: OnlineStore | None = None,
        db: Database | None = None,
    ) -> None:
        self.settings = settings
        self._db = db if db is not None else open_database(settings.db_url)
        self._own_db = db is None
        self._online = online_store
        self._own_online = online_store is None
        self._cache_s = settings.features.definitions_cache_s
        self._snap: _Snapshot | None = None
        self._checked_at = 0.0  # time.monotonic() when self._snap was last known current
        # on-demand views loaded from code, for the applied (name, sha256) set they match
        self._on_demand: tuple[frozenset[tuple[str, str]], list[OnDemandFeatureView]] | None
        self._on_demand = None

    def close(self) -> None:
        if self._online is not None and self._own_online:
            self._online.close()
            self._online = None
        if self._own_db:
            self._db.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def online_store(self) -> OnlineStore:
        if self._online is None:
            self._online = open_online_store(self.settings.features.online_store)
        return self._online

    # -- definitions -----------------------------------------------------------------

    def definitions(self) -> Definitions:
        """The definitions in the project's code now."""
        return load_definitions(self.settings.project_dir, self.settings.features.modules)

    def _applied(self) -> dict[tuple[str, str], AppliedDefinition]:
        """The applied definitions now (read fresh, for plan and apply)."""
        return self._snapshot(fresh=True).records

    def _snapshot(self, *, fresh: bool = False) -> _Snapshot:
        """The cached applied definitions, checked against the store when older than the bound."""
        started = time.monotonic()
        snap = self._snap
        if snap is not None and not fresh and self._cache_s > 0:
            if started - self._checked_at < self._cache_s:
                return snap
            if self._generation() == snap.generation:
                self._checked_at = started
                return snap
        snap = self._load()
        self._snap, self._checked_at = snap, started
        return snap

    def _generation(self) -> Generation:
        active = func.count(case((defs_t.c.active.is_(True), 1)))
        with self._db.read() as conn:
            row = conn.execute(select(func.count(), active).select_from(defs_t)).one()
        return int(row[0]), int(row[1])

    def _load(self) -> _Snapshot:
        """Every definition row in one statement: one consistent state on any backend."""
        definition = case((defs_t.c.active.is_(True), defs_t.c.definition), else_=null())
        columns = [c for c in defs_t.c if c.name != "definition"]
        with self._db.read() as conn:
            rows = conn.execute(select(*columns, definition.label("definition"))).all()
        records = {
            (r.kind, r.name): AppliedDefinition(
                r.kind, r.name, r.version, r.sha256, r.definition, r.applied_at
            )
            for r in rows
            if r.active
        }
        views: dict[str, FeatureView] = {}
        services: dict[str, FeatureService] = {}
        for (kind, name), record in sorted(records.items()):
            if kind == "view":
                views[name] = self._resolve(_as_view(decode_definition(kind, record.definition)))
            elif kind == "service":
                service = decode_definition(kind, record.definition)
                assert isinstance(service, FeatureService)  # decode_definition("service") is one
                services[name] = service
        has_on_demand = any(k == "on_demand" for k, _ in records)
        return _Snapshot((len(rows), len(records)), records, views, services, has_on_demand)

    def _latest_versions(self) -> dict[tuple[str, str], int]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(defs_t.c.kind, defs_t.c.name, func.max(defs_t.c.version)).group_by(
                    defs_t.c.kind, defs_t.c.name
                )
            ).all()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    def _plan(self, code: Definitions) -> Plan:
        applied = self._applied()
        latest = self._latest_versions()
        changes: list[Change] = []
        seen: set[tuple[str, str]] = set()
        for kind, name, definition in code.items():
            seen.add((kind, name))
            digest = sha256_of(definition)
            old = applied.get((kind, name))
            next_version = latest.get((kind, name), 0) + 1
            if old is None:
                changes.append(Change(kind, name, "add", None, next_version, digest))
            elif old.sha256 != digest:
                changes.append(Change(kind, name, "change", old.version, next_version, digest))
            else:
                changes.append(Change(kind, name, "unchanged", old.version, old.version, digest))
        for key, old in sorted(applied.items()):
            if key not in seen:
                changes.append(Change(old.kind, old.name, "remove", old.version, None, old.sha256))
        return Plan(changes)

    def plan(self) -> Plan:
        """What ``apply()`` would change: added, changed and removed definitions."""
        return self._plan(self.definitions())

    def apply(self) -> Plan:
        """Check every view against its source, then record the definitions; the plan done."""
        code = self.definitions()
        _check_services(code)
        _check_on_demand(code)
        check_views([self._resolve(v) for v in code.views.values()])
        plan = self._plan(code)
        by_key: dict[tuple[str, str], Definition] = {(k, n): d for k, n, d in code.items()}
        now = int(time.time() * 1000)
        try:
            self._record_plan(plan, by_key, now)
        except IntegrityError as exc:
            raise ConflictError(
                "Another apply recorded feature definitions at the same time; run it again"
            ) from exc
        finally:
            self._snap = None  # this process sees its own apply at once
        return plan

    def _record_plan(self, plan: Plan, by_key: dict[tuple[str, str], Definition], now: int) -> None:
        with self._db.write() as conn:
            for change in plan.pending:
                match = (defs_t.c.kind == change.kind) & (defs_t.c.name == change.name)
                conn.execute(
                    update(defs_t).where(match & defs_t.c.active.is_(True)).values(active=False)
                )
                if change.action == "remove":
                    continue
                definition = by_key[(change.kind, change.name)]
                conn.execute(
                    defs_t.insert().values(
                        kind=change.kind,
                        name=change.name,
                        version=change.version_to,
                        sha256=change.sha256,
                        definition=canonical_json(definition),
                        applied_at=now,
                        active=True,
                    )
                )

    def _resolve(self, view: FeatureView) -> FeatureView:
        return resolve_view(view, self.settings.project_dir)

    def list_views(self) -> list[FeatureView]:
        """The applied views, by name (relative file paths resolved against the project)."""
        return list(self._snapshot().views.values())

    def applied(self, kind: DefinitionKind, name: str) -> AppliedDefinition:
        """The applied record of one definition; a NotFoundError names the known ones."""
        return self._snapshot().record(kind, name)

    def applied_on_demand(self) -> list[OnDemandFeatureView]:
        """The applied on-demand views as recorded (their code as text, not runnable)."""
        return [
            _as_on_demand(decode_definition("on_demand", a.definition))
            for (k, _), a in sorted(self._snapshot().records.items())
            if k == "on_demand"
        ]

    def list_on_demand(self) -> list[OnDemandFeatureView]:
        """The applied on-demand views, their functions loaded from the project's code.

        The code must be the code that was applied: an on-demand view changed or removed
        since the last apply is an error (training and serving would run different code).
        """
        return self._on_demand_of(self._snapshot())

    def _on_demand_of(self, snap: _Snapshot) -> list[OnDemandFeatureView]:
        """The on-demand views of ``snap`` from code, loaded once per applied set."""
        key = snap.on_demand_key()
        if self._on_demand is not None and self._on_demand[0] == key:
            return self._on_demand[1]
        applied = {n: a for (k, n), a in snap.records.items() if k == "on_demand"}
        found: list[OnDemandFeatureView] = []
        if applied:
            code = self.definitions().on_demand
            for name, record in sorted(applied.items()):
                current = code.get(name)
                if current is None or sha256_of(current) != record.sha256:
                    what = "removed from" if current is None else "changed in"
                    raise ConflictError(
                        f"On-demand view {name!r} was {what} the project's code since "
                        f"version {record.version} was applied; run "
                        "`modelyard features apply` so training and serving run the "
                        "same code"
                    )
                found.append(current)
        self._on_demand = (key, found)
        return found

    def get_view(self, name: str) -> FeatureView:
        """The applied view ``name``."""
        snap = self._snapshot()
        snap.record("view", name)  # the NotFoundError naming the known views
        return snap.views[name]

    def list_services(self) -> list[FeatureService]:
        """The applied services, by name."""
        return list(self._snapshot().services.values())

    def get_service(self, name: str) -> FeatureService:
        snap = self._snapshot()
        snap.record("service", name)
        return snap.services[name]

    def materializations(self, view: str) -> list[MaterializeResult]:
        """The recorded materializations of ``view``, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(mat_t).where(mat_t.c.view == view).order_by(mat_t.c.id)
            ).all()
        return [
            MaterializeResult(
                r.view,
                r.rows,
                _from_us(r.start),
                _from_us(r.end) or _epoch(),
                _from_us(r.watermark),
            )
            for r in rows
        ]

    # -- materialization -------------------------------------------------------------

    def _views(self, names: Sequence[str] | None) -> list[FeatureView]:
        """The applied views named (all when None), read fresh: they are about to be written."""
        snap = self._snapshot(fresh=True)
        if names is None:
            return list(snap.views.values())
        for name in names:
            snap.record("view", name)
        return [snap.views[n] for n in names]

    def _record(self, view: str, window: Window, rows: int, watermark: int | None) -> None:
        with self._db.write() as conn:
            conn.execute(
                mat_t.insert().values(
                    view=view,
                    start=window.start_us,
                    end=window.end_us,
                    watermark=watermark,
                    rows=rows,
                    at=int(time.time() * 1000),
                )
            )

    def _run(
        self,
        view: FeatureView,
        window: Window,
        progress: Progress | None,
        engine: EngineName = "local",
    ) -> MaterializeResult:
        check_views([view])
        report = (lambda n: progress(view.name, n)) if progress else None
        if engine == "ray":
            self._check_ray_store()
            rows, watermark = materialize_partitioned(self.settings, view, window, on_done=report)
        else:
            rows, watermark = materialize_view(view, window, self.online_store, report)
        if watermark is None and window.after_us is not None:
            watermark = window.after_us  # nothing new: keep the mark where it was
        self._record(view.name, window, rows, watermark)
        return MaterializeResult(
            view.name,
            rows,
            _from_us(window.start_us),
            _from_us(window.end_us) or _epoch(),
            _from_us(watermark),
        )

    def _check_ray_store(self) -> None:
        """Ray tasks write the settings' online store: this one must be it."""
        url = self.settings.features.online_store
        given = self._online
        if not self._own_online and given is not None and getattr(given, "url", None) != url:
            raise InvalidInputError(
                "Expected the online store of features.online_store for the ray engine (its "
                "tasks open that one), got a FeatureStore given another online store",
                loc="engine",
            )

    def materialize(
        self,
        start: datetime | None,
        end: datetime,
        views: Sequence[str] | None = None,
        progress: Progress | None = None,
        *,
        engine: str | None = None,
    ) -> list[MaterializeResult]:
        """Write each view's latest row per entity with event time in ``[start, end)``.

        ``engine="ray"`` (default: ``engine`` in modelyard.yaml) writes each view by
        entity-key partition in parallel on Ray (see partitioned.py).
        """
        chosen = engine_for(self.settings, engine, loc="engine")
        start_us = None if start is None else _us(start)
        end_us = _us(end)
        if start_us is not None and start_us >= end_us:
            raise InvalidInputError(
                f"Expected start before end, got start {start} and end {end}", loc="start"
            )
        window = Window(start_us, end_us, None)
        return [self._run(view, window, progress, chosen) for view in self._views(views)]

    def materialize_incremental(
        self,
        end: datetime | None = None,
        views: Sequence[str] | None = None,
        progress: Progress | None = None,
        *,
        engine: str | None = None,
    ) -> list[MaterializeResult]:
        """Write the rows that became available since each view's last watermark."""
        chosen = engine_for(self.settings, engine, loc="engine")
        end_us = _us(end or datetime.now(UTC))
        out = []
        for view in self._views(views):
            window = Window(None, end_us, self._watermark(view.name))
            out.append(self._run(view, window, progress, chosen))
        return out

    def _watermark(self, view: str) -> int | None:
        with self._db.read() as conn:
            value = conn.execute(
                select(func.max(mat_t.c.watermark)).where(mat_t.c.view == view)
            ).scalar()
        return None if value is None else int(value)

    def check_skew(
        self, views: Sequence[str] | None = None, sample: int = 1000
    ) -> list[SkewReport]:
        """Compare what the online store serves with the offline answer, per view.

        The moment compared is the latest end a view was materialized to; a sample of up
        to ``sample`` entities (its source's keys, in order) is checked.
        """
        if sample < 1:
            raise InvalidInputError(f"Expected a sample of at least 1, got {sample}", loc="sample")
        out = []
        for view in self._views(views):
            with self._db.read() as conn:
                end = conn.execute(
                    select(func.max(mat_t.c.end)).where(mat_t.c.view == view.name)
                ).scalar()
            as_of = _from_us(None if end is None else int(end))
            out.append(check_view_skew(view, as_of, self.online_store, sample))
        return out

    def check_logged_skew(
        self, log: pd.DataFrame, *, time_column: str | None = None, max_examples: int = 10
    ) -> LoggedSkewReport:
        """Recompute logged (served) feature vectors offline at their times (see skew.py)."""
        refs = [str(c).removeprefix("feature.") for c in log.columns if ":" in str(c)]
        snap = self._snapshot()
        on_demand = self._on_demand_of(snap) if _names_on_demand(refs, snap.records) else []
        return check_logged_skew(
            log,
            list(snap.views.values()),
            on_demand=on_demand,
            time_column=time_column,
            max_examples=max_examples,
        )

    # -- retrieval -------------------------------------------------------------------

    @staticmethod
    def _features(
        snap: _Snapshot, features: FeatureService | str | Sequence[FeatureView | str]
    ) -> FeatureService | Sequence[FeatureView | str]:
        if isinstance(features, str):
            snap.record("service", features)  # a service by name
            return snap.services[features]
        return features

    def get_historical_features(
        self,
        entity_df: pd.DataFrame,
        features: FeatureService | str | Sequence[FeatureView | str],
        *,
        engine: str | None = None,
        partitions: int | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """A point-in-time correct training set over the applied views (see offline.py).

        ``engine="ray"`` (default: ``engine`` in modelyard.yaml) joins the entity rows in
        ``partitions`` by entity key on Ray, with the same result (see partitioned.py).
        """
        chosen = engine_for(self.settings, engine, loc="engine")
        snap = self._snapshot()
        wanted = self._features(snap, features)
        items = wanted.features if isinstance(wanted, FeatureService) else wanted
        on_demand = self._on_demand_of(snap) if _names_on_demand(items, snap.records) else []
        views = list(snap.views.values())
        if chosen == "ray":
            return partitioned_historical_features(
                self.settings,
                entity_df,
                wanted,
                views=views,
                on_demand=on_demand,
                partitions=partitions,
                **kwargs,
            )
        return _historical(entity_df, wanted, views=views, on_demand=on_demand, **kwargs)

    def get_online_features(
        self,
        entity_rows: Mapping[str, Sequence[Any]] | pa.Table,
        features: FeatureService | str | Sequence[str],
        now: datetime | None = None,
    ) -> OnlineFeatures:
        """The served values of ``features`` for each entity row, in one store read.

        The definitions come from one cached snapshot (see the module's docstring).
        """
        snap = self._snapshot()
        wanted = self._features(snap, features)
        refs = wanted if isinstance(wanted, FeatureService) else [str(f) for f in wanted]
        items = refs.refs() if isinstance(refs, FeatureService) else refs
        asks = snap.has_on_demand and _names_on_demand(items, snap.records)
        on_demand = self._on_demand_of(snap) if asks else []
        return _online(self.online_store, entity_rows, refs, snap.views, now, on_demand=on_demand)


def _names_on_demand(
    items: Sequence[Any], applied: Mapping[tuple[str, str], AppliedDefinition]
) -> bool:
    """Whether any requested item is (or refers to) an applied on-demand view."""
    for item in items:
        if isinstance(item, OnDemandFeatureView):
            return True
        if isinstance(item, str) and ("on_demand", item.partition(":")[0]) in applied:
            return True
    return False


def _check_on_demand(code: Definitions) -> None:
    """Every input of every on-demand view names a feature of a view defined in the code."""
    for odfv in code.on_demand.values():
        if odfv.name in code.views:
            raise InvalidInputError(
                f"An on-demand view and a feature view are both named {odfv.name!r}; "
                "give each a distinct name",
                loc=f"on_demand.{odfv.name}",
            )
        for ref in odfv.inputs:
            view_name, _, feature = ref.partition(":")
            view = code.views.get(view_name)
            if view is None or feature not in view.feature_names:
                known = ", ".join(sorted(code.views)) or "none"
                what = f"view {view_name!r}" if view is None else f"feature {feature!r}"
                raise InvalidInputError(
                    f"On-demand view {odfv.name!r} reads {ref!r}, but no {what} is defined; "
                    f"known views: {known}",
                    loc=f"on_demand.{odfv.name}.inputs",
                )


def _check_services(code: Definitions) -> None:
    """Every ref of every service names a view and a feature defined in the code."""
    for service in code.services.values():
        for ref in service.refs():
            view_name, _, feature = ref.partition(":")
            view: FeatureView | OnDemandFeatureView | None = code.views.get(view_name)
            if view is None:
                view = code.on_demand.get(view_name)
            if view is None or feature not in view.feature_names:
                known = ", ".join(sorted([*code.views, *code.on_demand])) or "none"
                what = f"view {view_name!r}" if view is None else f"feature {feature!r}"
                raise InvalidInputError(
                    f"Service {service.name!r} refers to {ref!r}, but no {what} is defined; "
                    f"known views: {known}",
                    loc=f"services.{service.name}",
                )


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


def _as_view(definition: Definition) -> FeatureView:
    if not isinstance(definition, FeatureView):
        raise InvalidInputError(f"Expected a feature view, got {type(definition).__name__}")
    return definition


def _as_on_demand(definition: Definition) -> OnDemandFeatureView:
    if not isinstance(definition, OnDemandFeatureView):
        raise InvalidInputError(f"Expected an on-demand view, got {type(definition).__name__}")
    return definition
