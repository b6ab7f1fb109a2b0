"""A ready-made step: a point-in-time correct training set from the feature store.

``training_set`` is a step like any other: call it in a ``@pipeline`` with a feature
service and the entity rows, either an upstream step's output or, for a time window, a
Parquet file of entity rows (labels, events)::

    rows = load_entities(Path("entities.parquet"))
    ts = training_set(service="delay_model", entities=rows)
    ts = training_set(service="delay_model", start="2013-01-01", end="2013-03-01",
                      entity_source="data/labels.parquet")

Its output is exactly ``FeatureStore.get_historical_features`` of those rows (the rows
whose entity time is in ``[start, end)`` when a window is given: each still gets the
features as of its own time).

Its cache key holds, besides the step's parameters and the entity frame's digest, what
the store would join (the step's ``fingerprint``, computed before the key is): the
sha256 of the applied definitions the service reads (the service, its views, its
on-demand views and their input views) and the content digest of every source those
views read (local files by their bytes; a glob by each matching file; a SQL or remote
source by the digest of its rows), and of the ``entity_source`` file. So an edited
source file, an applied definition change or another window reruns the step, and an
unchanged one is a cache hit. File digests are kept per process by
``(path, device, inode, size, mtime, ctime)``, and only for a file last changed more
than a second before it was read (as git treats "racily clean" files): a rewrite with
the same size and a restored mtime still changes the ctime, so content decides.

When it runs, it records the training set as a lineage input of kind ``features`` (the
digest of the frame, with the service, the views and their versions), each source file
as an input of kind ``file``, and the frame as a tracked data set input of the step's
run.
"""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import Any

import duckdb
import pandas as pd

from modelyard.config import Settings, load_settings
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError, NotFoundError
from modelyard.features.definitions import FeatureView, FileSource, Source
from modelyard.features.offline import entities_in_window
from modelyard.features.repo import DefinitionKind
from modelyard.features.store import FeatureStore
from modelyard.pipelines.context import current_step, project_settings
from modelyard.pipelines.steps import step
from modelyard.tracking import fluent
from modelyard.tracking.client import ActiveRun
from modelyard.tracking.digest import digest_frame, digest_path

__all__ = [
    "CACHE_PARTS_TAG",
    "FeatureSet",
    "build_training_set",
    "feature_set",
    "file_digest",
    "source_digest",
    "training_set",
    "training_set_fingerprint",
]

#: the step run's tag holding its cache key's parts (written by the runner)
CACHE_PARTS_TAG = "modelyard.cache_parts"

#: a file changed less than this long before it was hashed is hashed again next time
RACY_NS = 1_000_000_000
_GLOB = frozenset("*?[{")

StatKey = tuple[str, int, int, int, int, int]


class DigestCache:
    """File digests by stat key, for one process (thread-safe).

    An object rather than a module-level dict: a step's source hash takes plain
    constants of its module (a dict included) as code, and a filling cache is not code.
    """

    def __init__(self) -> None:
        self._entries: dict[StatKey, str] = {}
        self._lock = threading.Lock()

    def get(self, key: StatKey) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: StatKey, digest: str) -> None:
        with self._lock:
            self._entries[key] = digest

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_digests = DigestCache()


def _stat_key(path: Path) -> StatKey:
    st = path.stat()
    return (
        str(path.resolve()),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (a folder: of its files and names), cached per process.

    A regular file's digest is reused while its ``(path, device, inode, size, mtime,
    ctime)`` is unchanged, and only when it was last changed more than ``RACY_NS`` before
    it was read; anything else is hashed again.
    """
    target = Path(path)
    if not target.exists():
        raise NotFoundError(f"No file or folder at {target}")
    if not stat.S_ISREG(target.stat().st_mode):
        return digest_path(target).digest  # a folder: its files may change under it
    key = _stat_key(target)
    found = _digests.get(key)
    if found is not None:
        return found
    taken = time.time_ns()
    digest = digest_path(target).digest
    settled = max(key[4], key[5]) < taken - RACY_NS
    if settled and _stat_key(target) == key:
        _digests.put(key, digest)
    return digest


def _sha(parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_digest(source: Source) -> str:
    """The content digest of what a (resolved) view source reads, 64 hex.

    A local file: its bytes. A glob: each matching file's name and bytes (the files
    DuckDB would read). A SQL query or a remote file: the digest of its rows, read once.
    """
    if isinstance(source, FileSource) and "://" not in source.path:
        if not any(c in _GLOB for c in source.path):
            return file_digest(source.path)
        con = duckdb.connect(":memory:")
        try:
            found = con.execute("SELECT file FROM glob(?)", [source.path]).fetchall()
        except duckdb.Error as exc:
            raise InvalidInputError(
                f"Cannot list the source files {source.path}: {exc}", loc="source"
            ) from exc
        finally:
            con.close()
        files = sorted(str(r[0]) for r in found)
        if not files:
            raise NotFoundError(f"No files match the source {source.path}")
        return _sha([[name, file_digest(name)] for name in files])
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = con.sql(f"SELECT * FROM {source.relation()}").to_arrow_table()
    except duckdb.Error as exc:
        what = source.path if isinstance(source, FileSource) else "query"
        raise InvalidInputError(f"Cannot read the source {what}: {exc}", loc="source") from exc
    finally:
        con.close()
    return digest_frame(table).digest


@dataclass(frozen=True)
class FeatureSet:
    """What a training set of a service reads: applied definitions and source contents."""

    service: str
    definitions: Mapping[str, str]  # "kind:name" -> sha256 of the applied definition
    versions: Mapping[str, int]  # "kind:name" -> applied version
    sources: Mapping[str, str]  # view name -> content digest of its source
    paths: Mapping[str, str]  # view name -> its local source path ("" when not a file)

    def parts(self) -> dict[str, Any]:
        """The JSON-able parts that enter a cache key."""
        return {
            "service": self.service,
            "definitions": dict(self.definitions),
            "sources": dict(self.sources),
        }

    def describe(self) -> str:
        views = ", ".join(
            f"{k.partition(':')[2]} v{v}" for k, v in self.versions.items() if k.startswith("view:")
        )
        return f"service {self.service} v{self.versions[f'service:{self.service}']} views {views}"


def feature_set(store: FeatureStore, service: str) -> FeatureSet:
    """The applied definitions ``service`` reads and the digests of their sources."""
    applied = store.get_service(service)
    views = {v.name: v for v in store.list_views()}
    odfvs = {o.name: o for o in store.applied_on_demand()}
    wanted: list[tuple[DefinitionKind, str]] = [("service", service)]
    for ref in applied.refs():
        name = ref.partition(":")[0]
        if name in odfvs:
            wanted.append(("on_demand", name))
            wanted.extend(("view", r.partition(":")[0]) for r in odfvs[name].inputs)
        else:
            wanted.append(("view", name))
    definitions: dict[str, str] = {}
    versions: dict[str, int] = {}
    for kind, name in wanted:
        record = store.applied(kind, name)
        definitions[f"{kind}:{name}"] = record.sha256
        versions[f"{kind}:{name}"] = record.version
    sources: dict[str, str] = {}
    paths: dict[str, str] = {}
    for kind, name in wanted:
        if kind != "view" or name in sources:
            continue
        view: FeatureView = views[name]
        source = view.source
        local = isinstance(source, FileSource) and "://" not in source.path
        paths[name] = source.path if isinstance(source, FileSource) and local else ""
        sources[name] = source_digest(source)
    return FeatureSet(service, definitions, versions, sources, paths)


def parse_bound(value: str | None, name: str) -> datetime | None:
    """A window bound: an ISO date (midnight UTC) or an ISO time with a UTC offset."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInputError(
            f"Expected {name} as an ISO date (2013-01-01, midnight UTC) or a time with a UTC "
            f"offset (2013-01-01T06:00Z, 2013-01-01T06:00+01:00), got {value!r}",
            loc=name,
        )
    return moment


def _window(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    lo, hi = parse_bound(start, "start"), parse_bound(end, "end")
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidInputError(
            f"Expected start before end, got start {start!r} and end {end!r}", loc="start"
        )
    return lo, hi


def _entity_path(settings: Settings, entity_source: str | PurePath) -> Path:
    path = Path(entity_source).expanduser()
    if not path.is_absolute():
        path = settings.project_dir / path
    if path.suffix not in (".parquet", ".pq"):
        raise InvalidInputError(
            f"Expected entity_source as a .parquet file of entity rows, got {entity_source!r}; "
            "for other formats load the rows in a step and pass entities=<its output>",
            loc="entity_source",
        )
    if not path.is_file():
        raise NotFoundError(f"No entity_source file at {path}")
    return path


def training_set_fingerprint(settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """The extra cache-key parts of a ``training_set`` call (see the module docstring).

    When what it needs cannot be read (no such service, a missing source), the parts
    hold the reason and a fresh nonce: the key matches nothing, the step runs and
    fails with the store's own message.
    """
    try:
        _window(params.get("start"), params.get("end"))
        with FeatureStore(settings) as store:
            parts = feature_set(store, str(params["service"])).parts()
        entity_source = params.get("entity_source")
        if entity_source is not None:
            parts["entity_source"] = file_digest(_entity_path(settings, entity_source))
        return parts
    except Exception as exc:  # deliberate: any failure gives a key that matches nothing
        return {"unavailable": f"{type(exc).__name__}: {exc}", "nonce": uuid.uuid4().hex}


def build_training_set(
    settings: Settings,
    service: str,
    entities: pd.DataFrame | None = None,
    *,
    start: str | None = None,
    end: str | None = None,
    entity_source: str | PurePath | None = None,
    entity_time_column: str = "event_timestamp",
    as_served: bool = False,
    full_feature_names: bool = False,
    assume_utc: bool = False,
) -> tuple[pd.DataFrame, FeatureSet, dict[str, str]]:
    """The training set, what it read and the entity source's digest (when one was read).

    The sources are digested before and after the join; a source that changed in
    between is a ``ConflictError`` (the frame would match neither digest).
    """
    if (entities is None) == (entity_source is None):
        got = "both" if entities is not None else "neither"
        raise InvalidInputError(
            "Expected the entity rows from exactly one of entities=<a step's output> and "
            f"entity_source=<a .parquet file>, got {got}",
            loc="entities",
        )
    lo, hi = _window(start, end)
    read: dict[str, str] = {}
    if entity_source is not None:  # then entities is None (checked above)
        path = _entity_path(settings, entity_source)
        read[str(path)] = file_digest(path)
        entities = pd.read_parquet(path)
        if file_digest(path) != read[str(path)]:
            raise ConflictError(f"The entity_source {path} changed while it was read; run again")
    if not isinstance(entities, pd.DataFrame):
        raise InvalidInputError(
            f"Expected entities as a pandas DataFrame, got {type(entities).__name__}",
            loc="entities",
        )
    if lo is not None or hi is not None:
        entities = entities_in_window(
            entities, lo, hi, entity_time_column=entity_time_column, assume_utc=assume_utc
        )
    with FeatureStore(settings) as store:
        before = feature_set(store, service)
        frame = store.get_historical_features(
            entities,
            service,
            as_served=as_served,
            assume_utc=assume_utc,
            entity_time_column=entity_time_column,
            full_feature_names=full_feature_names,
        )
        after = feature_set(store, service)
    if after != before:
        changed = sorted(k for k in after.sources if after.sources[k] != before.sources.get(k))
        what = f"the source of {', '.join(changed)}" if changed else "the applied definitions"
        raise ConflictError(
            f"Training set of service {service!r}: {what} changed while it was built; run again"
        )
    return frame, before, read


# -- the step ----------------------------------------------------------------------------


def _settings() -> Settings:
    """The pipeline run's settings (in the step and its fingerprint); else the project here."""
    found = project_settings()
    return found if found is not None else load_settings()


def _fingerprint(params: Mapping[str, Any]) -> dict[str, Any]:
    try:
        settings = _settings()
    except ModelyardError as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}", "nonce": uuid.uuid4().hex}
    return training_set_fingerprint(settings, params)


def _read_parts(read: FeatureSet, entity_digests: Mapping[str, str]) -> dict[str, Any]:
    parts = read.parts()
    if entity_digests:
        [parts["entity_source"]] = entity_digests.values()
    return parts


def _check_key(run: ActiveRun, read: dict[str, Any]) -> None:
    """The step read what its cache key says it read, or it fails (nothing is cached).

    The key's parts are computed before the step runs, maybe elsewhere; a source edited
    in between would otherwise store this frame under the key of the old content.
    """
    raw = run.info().tags.get(CACHE_PARTS_TAG)
    if raw is None:
        return
    keyed = json.loads(raw).get("fingerprint")
    if not isinstance(keyed, dict) or "unavailable" in keyed:
        # a key with a nonce matches no later run: the result is never reused
        return
    if keyed != read:
        changed = sorted(k for k in {*keyed, *read} if keyed.get(k) != read.get(k))
        raise ConflictError(
            f"The feature data changed between the step's cache key and its run "
            f"({', '.join(changed)} differ); run the pipeline again"
        )


def _record(
    frame: pd.DataFrame,
    read: FeatureSet,
    entity_digests: Mapping[str, str],
    window: str,
    *,
    entity_file_recorded: bool,
) -> None:
    """Lineage inputs and the tracked data set input of the running step (if any).

    ``entity_file_recorded``: the entity file was a ``Path`` argument, which the runner
    records itself.
    """
    try:
        context = current_step()
    except NotFoundError:
        return
    run = fluent.active_run()
    description = f"{read.describe()}{window}"
    if run is not None:
        _check_key(run, _read_parts(read, entity_digests))
        digest = run.log_input(
            frame, f"training_set:{read.service}", "training", source=description
        ).digest
    else:
        digest = digest_frame(frame).digest
    context.record_input("training_set", digest, kind="features", description=description)
    for view, path in read.paths.items():
        if path:
            context.record_input(
                f"source:{view}", read.sources[view], kind="file", description=path
            )
    for path, entity_digest in entity_digests.items():
        if not entity_file_recorded:
            context.record_input("entity_source_file", entity_digest, kind="file", description=path)


@step(fingerprint=_fingerprint)
def training_set(
    service: str,
    entities: pd.DataFrame | None = None,
    start: str | None = None,
    end: str | None = None,
    entity_source: str | Path | None = None,
    entity_time_column: str = "event_timestamp",
    as_served: bool = False,
    full_feature_names: bool = False,
    assume_utc: bool = False,
) -> pd.DataFrame:
    """A point-in-time correct training set of feature service ``service``.

    The entity rows are ``entities`` (an upstream step's frame: join keys, the entity
    time ``entity_time_column`` and any labels) or the Parquet file ``entity_source``
    (relative to the project); with ``start``/``end`` (an ISO date, midnight UTC, or a
    time with a UTC offset) only the rows whose time is in ``[start, end)``. The result
    is ``FeatureStore.get_historical_features(rows, service, as_served=...,
    full_feature_names=..., assume_utc=..., entity_time_column=...)``.
    """
    frame, read, entity_digests = build_training_set(
        _settings(),
        service,
        entities,
        start=start,
        end=end,
        entity_source=entity_source,
        entity_time_column=entity_time_column,
        as_served=as_served,
        full_feature_names=full_feature_names,
        assume_utc=assume_utc,
    )
    window = "" if start is None and end is None else f" window [{start or ''}, {end or ''})"
    recorded = isinstance(entity_source, PurePath)
    _record(frame, read, entity_digests, window, entity_file_recorded=recorded)
    return frame
