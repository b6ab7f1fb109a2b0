"""The metadata database: one SQLAlchemy engine, migrated to the head revision on open.

SQLite (the default) runs in WAL mode with a busy timeout, and a write transaction
takes the write lock up front (``BEGIN IMMEDIATE``) so two writers queue instead of
failing on a lock upgrade. PostgreSQL (``postgresql+psycopg://``) serves teams.
Opening a store that is already at the head revision costs one query; migrating a
fresh one is serialised across processes (a lock file next to a SQLite file, an
advisory lock on PostgreSQL), so several processes may open a fresh store at once.

>>> from modelyard.store.schema import HEAD_REVISION
>>> db = open_database("sqlite://")
>>> db.revision() == HEAD_REVISION
True
>>> db.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from modelyard.errors import InvalidInputError, MissingExtraError, StorageError
from modelyard.store.schema import HEAD_REVISION
from modelyard.store.sqlite_files import BUSY_MS, file_lock, use_wal
from modelyard.store.urls import redact_text, redact_url

__all__ = ["Database", "open_database"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6D6F64656C79  # "modely": the advisory lock that serialises migrations


class Database:
    """A migrated metadata database; ``read()`` and ``write()`` hand out connections."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.dialect = engine.dialect.name

    def __repr__(self) -> str:
        return f"Database({redact_url(self.url)!r})"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (a deferred transaction, rolled back at the end)."""
        with self._translate(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block succeeds."""
        with (
            self._translate(),
            self.engine.connect().execution_options(modelyard_write=True) as conn,
            conn.begin(),
        ):
            yield conn

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.IntegrityError:
            raise  # callers turn these into ConflictError with the user's terms
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DatabaseError) as exc:
            detail = redact_text(str(exc.orig) if exc.orig else str(exc), self.url)
            raise StorageError(
                f"Metadata store {redact_url(self.url)} failed: {_one_line(detail)}"
            ) from None

    def revision(self) -> str | None:
        """The Alembic revision the store is at, or None for an empty database."""
        with self.read() as conn:
            return _current_revision(conn)

    def close(self) -> None:
        self.engine.dispose()


def _one_line(detail: str) -> str:
    """A driver's message on one line (libpq adds hints on indented lines)."""
    return " ".join(detail.split())


def _current_revision(conn: Connection) -> str | None:
    try:
        with conn.begin_nested() if conn.in_transaction() else conn.begin():
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except (sa_exc.OperationalError, sa_exc.ProgrammingError):
        return None
    return None if row is None else str(row[0])


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or "mode=memory" in url
    if not memory:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"Metadata store {redact_url(url)} failed: cannot create its folder: {exc}"
            ) from exc
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": BUSY_MS / 1000},
    }
    if memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each sees an empty db
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        if not memory:
            use_wal(dbapi_conn, database)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("modelyard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _make_engine(url: str) -> Engine:
    try:
        return _engine_for(url)
    except sa_exc.ArgumentError as exc:  # includes NoSuchModuleError: an unknown driver
        raise InvalidInputError(
            f"Expected a database URL such as sqlite:///path/to.db or "
            f"postgresql+psycopg://user@host/db, got {redact_url(url)!r}",
            loc="db_url",
        ) from exc
    except ValueError as exc:  # SQLAlchemy parses the port with int(): ":abc", ":"
        raise InvalidInputError(
            f"Expected a database URL with a numeric port (host:5432), got "
            f"{redact_url(url)!r}: {redact_text(str(exc), url)}",
            loc="db_url",
        ) from exc


def _engine_for(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        try:
            return create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise MissingExtraError("A PostgreSQL metadata store", "postgres") from exc
    raise InvalidInputError(
        f"Expected a sqlite:// or postgresql:// URL, got {redact_url(url)!r}", loc="db_url"
    )


@contextmanager
def _migration_lock(db: Database, conn: Connection) -> Iterator[None]:
    if db.dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        return
    database = make_url(db.url).database or ""
    if database in ("", ":memory:"):
        yield
        return
    with file_lock(database):
        yield


def _upgrade(db: Database) -> None:
    from alembic import command
    from alembic.config import Config

    with db._translate(), db.engine.connect() as conn, _migration_lock(db, conn):
        if _current_revision(conn) == HEAD_REVISION:
            return  # another process migrated while we waited for the lock
        if conn.in_transaction():
            conn.commit()
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open the metadata store at ``url``, migrating it to the head revision."""
    if url.startswith("sqlite:///~"):  # SQLite itself would open a folder named "~"
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser())
    db = Database(url, _make_engine(url))
    if migrate and db.revision() != HEAD_REVISION:
        _upgrade(db)
    return db
