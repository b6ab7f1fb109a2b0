"""Opening SQLite files that several processes share: WAL mode switched under a file lock.

Switching a database to WAL needs an exclusive lock, and SQLite answers two connections
switching at once with "database is locked" at once instead of waiting (waiting could
deadlock), so processes opening a fresh file take turns on a lock file beside it.

>>> import tempfile, pathlib
>>> path = str(pathlib.Path(tempfile.mkdtemp()) / "x.db")
>>> conn = connect_shared(path)
>>> conn.execute("PRAGMA journal_mode").fetchone()[0]
'wal'
>>> conn.close()
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BUSY_MS", "connect_shared", "file_lock", "use_wal"]

# How long a writer waits for another one's lock before SQLite gives up.
BUSY_MS = 30_000


@contextmanager
def file_lock(database: str) -> Iterator[None]:
    """An exclusive lock, across processes, on a file next to a SQLite database."""
    with open(f"{database}.migrate.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def use_wal(conn: sqlite3.Connection, database: str) -> None:
    """WAL mode, ``synchronous=NORMAL`` and a busy timeout on an open connection."""
    conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        with file_lock(database):
            conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def connect_shared(database: str, *, autocommit: bool = False) -> sqlite3.Connection:
    """A connection to a SQLite file other processes open too, in WAL mode.

    ``autocommit`` leaves transactions to the caller's own ``BEGIN`` statements.
    """
    conn = sqlite3.connect(database, timeout=BUSY_MS / 1000, check_same_thread=False)
    if autocommit:
        conn.isolation_level = None
    try:
        use_wal(conn, database)
    except BaseException:
        conn.close()
        raise
    return conn
