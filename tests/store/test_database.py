from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, inspect, text

import modelyard.store
from modelyard.errors import InvalidInputError, StorageError
from modelyard.store.database import Database, open_database
from modelyard.store.schema import HEAD_REVISION, metadata
from modelyard.store.urls import redact_text, redact_url

TABLES = set(metadata.tables) | {"alembic_version"}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


@contextmanager
def _statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends to its database while the block runs."""
    seen: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _ddl(statements: list[str]) -> list[str]:
    return [s for s in statements if re.match(r"\s*(CREATE|ALTER|DROP)\b", s, re.IGNORECASE)]


def _schema_diff(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def _tables(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(inspect(conn).get_table_names())


# -- migrating on open -----------------------------------------------------------------


def test_head_revision_is_the_newest_migration() -> None:
    # a store at HEAD_REVISION is taken as fully migrated, so it must be Alembic's head
    config = Config()
    config.set_main_option(
        "script_location", str(Path(modelyard.store.__file__).parent / "migrations")
    )
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [HEAD_REVISION]


def test_opening_a_fresh_store_migrates_it_to_head(db_url: str) -> None:
    with _statements() as seen:
        db = open_database(db_url)
    try:
        assert db.revision() == HEAD_REVISION
        assert set(_tables(db)) == TABLES
        with db.read() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == [HEAD_REVISION]
        # the statement recorder sees the migration's DDL: the no-DDL check below is real
        assert len(_ddl(seen)) >= len(metadata.tables)
    finally:
        db.close()


def test_migrated_schema_matches_the_tables(db: Database) -> None:
    # Alembic compares the live database with schema.metadata: the hand-written
    # migration must create exactly these tables, columns, types, indexes and keys
    assert _schema_diff(db) == []


def test_schema_comparison_would_notice_a_difference(db: Database) -> None:
    # the oracle above is only worth something if it sees drift: drop one index
    with db.write() as conn:
        conn.execute(text("DROP INDEX ix_params_key_value"))
    diff = _schema_diff(db)
    assert [(d[0], d[1].name) for d in diff] == [("add_index", "ix_params_key_value")]


def test_opening_a_migrated_store_runs_no_migration(db_url: str) -> None:
    open_database(db_url).close()
    with _statements() as seen:
        db = open_database(db_url)
    try:
        assert _ddl(seen) == []
        # the only query is the revision check
        queries = [s for s in seen if s.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
        assert queries == ["SELECT version_num FROM alembic_version"]
        assert db.revision() == HEAD_REVISION
    finally:
        db.close()


def test_open_without_migrate_leaves_a_fresh_store_empty(db_url: str) -> None:
    db = open_database(db_url, migrate=False)
    try:
        assert db.revision() is None
        assert _tables(db) == []
    finally:
        db.close()
    db = open_database(db_url)
    try:
        assert db.revision() == HEAD_REVISION
    finally:
        db.close()


def test_in_memory_sqlite_is_migrated_and_shared_by_connections() -> None:
    db = open_database("sqlite://")
    try:
        with db.write() as conn:
            conn.execute(
                text("INSERT INTO experiments (id, name, created_at) VALUES ('e1', 'churn', 1)")
            )
        # a second connection sees the same (one, shared) in-memory database
        with db.read() as conn:
            assert conn.execute(text("SELECT name FROM experiments")).scalar_one() == "churn"
        assert db.revision() == HEAD_REVISION
    finally:
        db.close()


# -- transactions ----------------------------------------------------------------------


def test_write_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    insert = text("INSERT INTO experiments (id, name, created_at) VALUES (:id, :name, 1)")
    with db.write() as conn:
        conn.execute(insert, {"id": "e1", "name": "kept"})
    with pytest.raises(RuntimeError, match="boom"), db.write() as conn:
        conn.execute(insert, {"id": "e2", "name": "dropped"})
        raise RuntimeError("boom")
    with db.read() as conn:
        names = conn.execute(text("SELECT name FROM experiments")).scalars().all()
    assert names == ["kept"]


def test_a_failing_query_is_a_storage_error(db: Database) -> None:
    with (
        pytest.raises(StorageError, match=r"Metadata store .* failed: .*no_such_table"),
        db.read() as conn,
    ):
        conn.execute(text("SELECT * FROM no_such_table"))


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.close()
    # WAL is a property of the file: another program opening it sees it too
    with sqlite3.connect(tmp_path / "meta.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_a_sqlite_file_in_rollback_mode_is_switched_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "made-elsewhere.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (body TEXT)")
    raw.commit()
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    raw.close()
    db = open_database(f"sqlite:///{path}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert set(_tables(db)) == TABLES | {"notes"}
    finally:
        db.close()


def test_sqlite_write_takes_the_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    db = open_database(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        # a read transaction does not block another writer
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        # a write transaction holds the write lock before it writes anything, so a
        # second writer queues at BEGIN rather than failing later on a lock upgrade
        with db.write():
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        db.close()


# -- several processes opening one fresh store ------------------------------------------

_OPENER = """
import os, sys, time
from pathlib import Path
url, ready, go = sys.argv[1:4]
from modelyard.store.database import open_database
Path(ready, str(os.getpid())).touch()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.001)
db = open_database(url)
print(db.revision())
db.close()
"""


def _open_at_once(url: str, workdir: Path, processes: int = 5) -> list[tuple[int, str, str]]:
    """Start ``processes`` interpreters that all open ``url`` at the same moment."""
    ready, go = workdir / "ready", workdir / "go"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, url, str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < processes:
            assert time.monotonic() < deadline, "the opener processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()  # every process is waiting on this: they open the store together
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            results.append((p.returncode, out.strip(), err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_processes_opening_a_fresh_store_at_once_all_succeed(db_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "race"
    workdir.mkdir()
    results = _open_at_once(db_url, workdir)
    assert [(rc, out) for rc, out, _ in results] == [(0, HEAD_REVISION)] * len(results), results
    db = open_database(db_url, migrate=False)
    try:
        assert db.revision() == HEAD_REVISION
        assert _tables(db) == sorted(TABLES)  # each table once, nothing else
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert _schema_diff(db) == []
    finally:
        db.close()


# -- bad URLs and unreachable servers -----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "mysql://alice:s3cret@db/ml",
        "mongodb://alice:s3cret@db/ml",
        "postgresql+nosuchdriver://alice:s3cret@db/ml",
        "sqlite+nosuchdriver:///meta.db",
    ],
)
def test_a_bad_url_is_invalid_input_naming_db_url(url: str) -> None:
    with pytest.raises(InvalidInputError, match=r" - at db_url$") as info:
        open_database(url)
    assert "s3cret" not in str(info.value)
    assert info.value.loc == "db_url"


def test_an_unreachable_postgres_is_a_storage_error_without_the_password() -> None:
    # built in pieces so that no source line a traceback quotes holds the password
    url = "postgresql+psycopg://alice:" + "s3cret" + "@127.0.0.1:1/db"
    shown = re.escape("Metadata store postgresql+psycopg://alice:***@127.0.0.1:1/db failed: ")
    with pytest.raises(StorageError, match=shown) as info:
        open_database(url)
    err = info.value
    assert "s3cret" not in str(err)
    assert "s3cret" not in repr(err)
    assert "s3cret" not in "".join(traceback.format_exception(err))
    assert "s3cret" not in str(err.to_dict())


def test_a_plain_postgresql_url_is_accepted_and_redacted() -> None:
    url = "postgresql://alice:s3cret@127.0.0.1:1/db"
    with pytest.raises(StorageError, match=r"postgresql://alice:\*\*\*@") as info:
        open_database(url)
    assert "s3cret" not in str(info.value)


def test_an_unusable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=r"Metadata store sqlite:///.*a-file/meta\.db"):
        open_database(f"sqlite:///{blocker / 'meta.db'}")


def test_database_repr_hides_the_password() -> None:
    db = open_database("postgresql+psycopg://alice:s3cret@h/db", migrate=False)
    try:
        assert repr(db) == "Database('postgresql+psycopg://alice:***@h/db')"
    finally:
        db.close()


# -- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://al:s3cret@db:5432/ml", "postgresql+psycopg://al:***@db:5432/ml"),
        ("postgresql://alice:pa:ss@db/ml", "postgresql://alice:***@db/ml"),
        ("postgresql://alice:p%40ss@db/ml", "postgresql://alice:***@db/ml"),
        ("postgresql://:token@db/ml", "postgresql://:***@db/ml"),
        ("s3://KEY:SECRET@bucket/prefix", "s3://KEY:***@bucket/prefix"),
        ("postgresql://alice@db/ml", "postgresql://alice@db/ml"),
        ("sqlite:////tmp/meta.db", "sqlite:////tmp/meta.db"),
        ("file:///data/a:b@c", "file:///data/a:b@c"),
        ("s3://bucket/key:with@chars", "s3://bucket/key:with@chars"),
        ("/tmp/artifacts", "/tmp/artifacts"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_hides_passwords_of_the_given_urls_anywhere() -> None:
    url = "postgresql://bob:hunter2@db/ml"
    # a driver may echo the password without its URL
    assert (
        redact_text("auth failed for bob (password hunter2)", url)
        == "auth failed for bob (password ***)"
    )
    assert (
        redact_text(f"cannot reach {url} now", url) == "cannot reach postgresql://bob:***@db/ml now"
    )


def test_redact_text_hides_a_percent_encoded_password_in_both_forms() -> None:
    url = "postgresql://bob:p%40ss%2Fw0rd@db/ml"
    said = redact_text("password 'p@ss/w0rd' and 'p%40ss%2Fw0rd' rejected", url)
    assert "p@ss/w0rd" not in said
    assert "p%40ss%2Fw0rd" not in said


def test_redact_text_hides_passwords_of_urls_it_was_not_given() -> None:
    text_in = "tried postgresql://a:one@h1/db then s3://K:two@bucket/x\nand mysql://c:three@h3"
    said = redact_text(text_in)
    assert said == "tried postgresql://a:***@h1/db then s3://K:***@bucket/x\nand mysql://c:***@h3"


def test_redact_text_leaves_text_without_credentials_alone() -> None:
    plain = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    assert redact_text(plain, "postgresql://alice@h/db") == plain
    assert redact_text(plain, "postgresql://alice:@h/db") == plain


def test_sqlite_path_with_tilde_goes_to_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    db = open_database("sqlite:///~/meta/modelyard.db")
    try:
        assert (tmp_path / "home" / "meta" / "modelyard.db").is_file()
        assert not (tmp_path / "~").exists()
    finally:
        db.close()
