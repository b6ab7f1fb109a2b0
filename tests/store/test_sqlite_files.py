"""Processes opening one fresh SQLite file at once: every one opens it, none is refused.

SQLite answers two connections switching a file to WAL at the same moment with "database
is locked" at once (no busy wait): the online store opened by parallel materialization
tasks failed so. Every SQLite file modelyard shares across processes opens through
``connect_shared``; the metadata database, the online store and Optuna's study file each
get the same race here.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from modelyard.features.online.sqlite import SQLiteOnlineStore
from modelyard.store.database import open_database
from modelyard.store.sqlite_files import connect_shared

PROCESSES = 6
ROUNDS = 3


def _open_raw(path: str, barrier: mp.synchronize.Barrier, index: int) -> None:
    barrier.wait()
    conn = connect_shared(path, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (?)", (index,))
    conn.close()


def _open_online(path: str, barrier: mp.synchronize.Barrier, index: int) -> None:
    barrier.wait()
    SQLiteOnlineStore(f"sqlite:///{path}").close()


def _open_metadata(path: str, barrier: mp.synchronize.Barrier, index: int) -> None:
    barrier.wait()
    open_database(f"sqlite:///{path}").close()


@pytest.mark.parametrize("target", [_open_raw, _open_online, _open_metadata])
def test_processes_open_a_fresh_file_at_once(tmp_path: Path, target: object) -> None:
    ctx = mp.get_context("fork")
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"shared-{round_}.db")
        barrier = ctx.Barrier(PROCESSES)
        procs = [
            ctx.Process(target=target, args=(path, barrier, i))  # type: ignore[arg-type]
            for i in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [p.exitcode for p in procs] == [0] * PROCESSES, f"round {round_}"
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        if target is _open_raw:
            rows = sorted(i for (i,) in conn.execute("SELECT i FROM t"))
            assert rows == list(range(PROCESSES))
        conn.close()
