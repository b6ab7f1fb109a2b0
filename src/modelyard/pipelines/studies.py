"""Where tuning studies live: an Optuna journal in the project's metadata database.

A study is kept as Optuna's *journal* (every change to a study or trial is one appended
log record, replayed in memory by ``optuna.storages.JournalStorage``), stored in one
table beside the metadata database, never inside our Alembic-managed tables:

- PostgreSQL: table ``optuna_journal`` in the schema ``modelyard_optuna`` of the same
  database (our ``alembic_version`` in ``public`` is never seen by Optuna);
- SQLite: the file ``<name>.optuna.db`` next to the metadata file (WAL, ``synchronous=
  NORMAL``), so tuning writes never hold the tracking store's write lock;
- an in-memory SQLite store: an in-memory study (one process only).

Why a journal and not Optuna's RDB storage: the RDB storage's ORM reads cost ~40 ms per
trial on SQLite (measured: 43-51 ms with WAL, 177 ms without, against ~5 ms in memory),
while the journal replays in memory and writes one short transaction per change. Appends
are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory
lock) and numbered without gaps, so every process replays the same order: trial numbers
are unique across processes. ``storage="rdb"`` keeps Optuna's RDB storage in the same
places for tools that read it (optuna-dashboard).

A trial whose process died (SIGKILL) stays RUNNING in the journal; ``reap_dead_trials``
marks those of dead processes on this host as FAIL (each trial records its host and pid
in the system attribute ``modelyard.owner``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState
from sqlalchemy import BigInteger, Column, Connection, Integer, MetaData, Table, Text, select, text
from sqlalchemy.engine import make_url

from modelyard.errors import InvalidInputError, NotFoundError, did_you_mean
from modelyard.store.database import Database, open_database
from modelyard.store.processes import pid_alive
from modelyard.store.sqlite_files import connect_shared

__all__ = [
    "OWNER_ATTR",
    "PG_SCHEMA",
    "DatabaseJournal",
    "close_study_storages",
    "open_study_storage",
    "owner_tag",
    "reap_dead_trials",
    "refresh_study_storage",
    "require_study",
    "study_location",
]

PG_SCHEMA = "modelyard_optuna"
OWNER_ATTR = "modelyard.owner"
_PG_LOCK_KEY = 0x6F7074756E61  # "optuna": serialises appends and the schema's creation
_STORAGE_KINDS = ("journal", "rdb")

_BigSeq = BigInteger().with_variant(Integer(), "sqlite")


def _journal_table(schema: str | None) -> Table:
    return Table(
        "optuna_journal",
        MetaData(schema=schema),
        Column("seq", _BigSeq, primary_key=True, autoincrement=False),
        Column("log", Text, nullable=False),
        comment="Optuna journal records, one per change to a study or trial, numbered from 0",
    )


_TABLES = {None: _journal_table(None), PG_SCHEMA: _journal_table(PG_SCHEMA)}


def _memory(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in url
    )


def study_location(db_url: str) -> str:
    """The URL where the studies of the metadata store ``db_url`` are kept."""
    parsed = make_url(db_url)
    if parsed.get_backend_name() != "sqlite":
        return db_url
    if _memory(db_url):
        return "sqlite://"
    path = Path(parsed.database or "").expanduser()
    sibling = path.with_name(f"{path.stem}.optuna{path.suffix or '.db'}")
    return parsed.set(database=str(sibling)).render_as_string(hide_password=False)


class DatabaseJournal(BaseJournalBackend):
    """Optuna's journal in one table: append in order, read from a record number on.

    Round trips are what a trial costs, so two are saved: the read that follows each
    append is answered from the append's own transaction, and reads within ``fresh_s``
    of the last one return nothing new (another process's trials are seen that much
    later; this process's own writes are never missed). Each trial created here records
    its owner (``host:pid``, system attribute ``modelyard.owner``) in its creation record.
    """

    def __init__(self, db_url: str, *, fresh_s: float = 0.01) -> None:
        location = study_location(db_url)
        self._db: Database = open_database(location, migrate=False)
        self._pg = self._db.dialect == "postgresql"
        self._table = _TABLES[PG_SCHEMA if self._pg else None]
        # the records from the reader's position up to our last append, read in the
        # append's own transaction (under the write lock): the read that follows each
        # append needs no round trip of its own
        self._snapshot: tuple[int, list[dict[str, Any]]] | None = None
        self._position = 0  # how many records the reader has been given
        self._fresh_s = fresh_s
        self._read_at = -math.inf  # monotonic time of the last read from the table
        self._lock = threading.Lock()
        self._create()

    def _create(self) -> None:
        with self._db.write() as conn:
            if self._pg:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{PG_SCHEMA}"'))
            self._table.create(conn, checkfirst=True)

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        with self._lock:
            snapshot, self._snapshot = self._snapshot, None
            now = time.monotonic()
            recent = log_number_from == self._position and now - self._read_at < self._fresh_s
        if snapshot is not None and snapshot[0] == log_number_from:
            found = snapshot[1]
        elif recent:
            return []
        else:
            with self._db.read() as conn:
                found = self._since(conn, log_number_from)
        with self._lock:
            self._position = log_number_from + len(found)
            self._read_at = now
        return found

    def _since(self, conn: Connection, log_number_from: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(self._table.c.log)
            .where(self._table.c.seq >= log_number_from)
            .order_by(self._table.c.seq)
        ).all()
        return [json.loads(row[0]) for row in rows]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` after every record committed before (numbers without gaps)."""
        with self._lock:
            position = self._position
        with self._db.write() as conn:
            if self._pg:  # numbers are taken and committed one writer at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            before = self._since(conn, position)
            first = position + len(before)
            encoded = [json.dumps(_owned(log)) for log in logs]
            conn.execute(
                self._table.insert(),
                [{"seq": first + i, "log": log} for i, log in enumerate(encoded)],
            )
        with self._lock:
            self._snapshot = (position, before + [json.loads(log) for log in encoded])
            self._read_at = time.monotonic()

    def refresh(self) -> None:
        """The next read goes to the table: another process's writes are seen at once."""
        with self._lock:
            self._read_at = -math.inf

    def close(self) -> None:
        self._db.close()


def _owned(log: dict[str, Any]) -> dict[str, Any]:
    """A trial created RUNNING here records this process as its owner (no extra write)."""
    if (
        log.get("op_code") != JournalOperation.CREATE_TRIAL
        or log.get("state", TrialState.RUNNING.value) != TrialState.RUNNING.value
    ):
        return log
    return {**log, "system_attrs": {**log.get("system_attrs", {}), OWNER_ATTR: owner_tag()}}


_storages: dict[tuple[int, str, str], BaseStorage] = {}
_storages_lock = threading.Lock()


def open_study_storage(db_url: str, kind: str = "journal") -> BaseStorage:
    """The Optuna storage for the studies of metadata store ``db_url`` (one per process)."""
    if kind not in _STORAGE_KINDS:
        raise InvalidInputError(
            f"Expected a study storage ({', '.join(_STORAGE_KINDS)}), got {kind!r}",
            loc="storage",
        )
    key = (os.getpid(), db_url, kind)
    with _storages_lock:
        found = _storages.get(key)
        if found is None:
            found = _storages[key] = _open(db_url, kind)
        return found


def close_study_storages() -> None:
    """Close the connections of every storage this process opened (they reopen on use)."""
    with _storages_lock:
        opened = list(_storages.values())
        _storages.clear()
    for storage in opened:
        if isinstance(storage, JournalStorage) and isinstance(storage._backend, DatabaseJournal):
            storage._backend.close()
        elif isinstance(storage, RDBStorage):
            storage.engine.dispose()


def refresh_study_storage(storage: BaseStorage) -> None:
    """Make ``storage``'s next read see every write committed so far, by any process."""
    if isinstance(storage, JournalStorage) and isinstance(storage._backend, DatabaseJournal):
        storage._backend.refresh()


def _open(db_url: str, kind: str) -> BaseStorage:
    if _memory(db_url):
        return InMemoryStorage()
    if kind == "journal":
        return JournalStorage(DatabaseJournal(db_url))
    return _rdb(db_url)


def _rdb(db_url: str) -> BaseStorage:
    """Optuna's RDB storage in its own schema (PostgreSQL) or sibling file (SQLite)."""
    location = study_location(db_url)
    parsed = make_url(location)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        Path(path).parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            return connect_shared(path)

        return RDBStorage(location, engine_kwargs={"creator": connect})
    # the schema first (under the lock, so two processes do not race on it), then
    # Optuna's tables and its own alembic_version inside that schema only
    DatabaseJournal(db_url).close()
    options = {"connect_args": {"options": f"-csearch_path={PG_SCHEMA}"}}
    return RDBStorage(location, engine_kwargs=options)


def owner_tag() -> str:
    """``host:pid`` of this process, as trials record it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def reap_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process on this host is gone; their numbers."""
    host = socket.gethostname()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.system_attrs.get(OWNER_ATTR, ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        reaped.append(trial.number)
    return reaped


def require_study(storage: BaseStorage, name: str) -> optuna.Study:
    """The study called ``name``; NotFoundError listing similar names otherwise."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in storage.get_all_studies()]
        raise NotFoundError(
            f"No study named {name!r}.{did_you_mean(name, known, 'studies')}"
        ) from None
