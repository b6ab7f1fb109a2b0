"""One agent at a time: a lease row in ``agent_leases``.

A pass of ``modelyard agent`` holds the lease ``agent`` while it works. ``acquire``
takes the lease when it is free, already ours, held by a process of this host that no
longer runs (killed: its lease is taken over at once, not after the TTL), or held by
another host past its expiry (a live process of this host keeps it past the TTL: a long
retrain is still working).
The holder is ``host:pid:token``; every step is one transaction on the metadata store,
so two agents on two hosts sharing a PostgreSQL store exclude each other too. Times are
the wall clock (never the agent's ``--as-of`` clock).

>>> from modelyard.store.database import open_database
>>> db = open_database("sqlite://")
>>> first, second = AgentLease(db, ttl_s=60), AgentLease(db, ttl_s=60)
>>> first.acquire(), second.acquire()
(True, False)
>>> second.holder_seen == first.holder
True
>>> first.release(); second.acquire()
True
"""

from __future__ import annotations

import os
import socket
import time

from sqlalchemy import and_, delete, insert, select, update

from modelyard.errors import InvalidInputError
from modelyard.store.database import Database
from modelyard.store.processes import pid_alive
from modelyard.store.schema import agent_leases

__all__ = ["AgentLease"]


def _now_us() -> int:
    return time.time_ns() // 1000


class AgentLease:
    """The lease ``name`` for this process, held at most ``ttl_s`` past its last renewal."""

    def __init__(self, db: Database, name: str = "agent", *, ttl_s: float = 600.0) -> None:
        if not ttl_s > 0:
            raise InvalidInputError(f"Expected a lease ttl_s > 0, got {ttl_s!r}", loc="ttl_s")
        self.db = db
        self.name = name
        self.ttl_us = int(ttl_s * 1e6)
        self.host = socket.gethostname()
        self._pid = os.getpid()
        self.holder = f"{self.host}:{self._pid}:{os.urandom(6).hex()}"
        #: who held the lease when ``acquire`` last failed (``host:pid:token``)
        self.holder_seen: str | None = None

    def _free(self, holder: str, expires_us: int, now: int) -> bool:
        """Ours, or another host's expired lease, or a process of this host that died.

        A live process of this host keeps its lease past the TTL (a long retrain).
        """
        if holder == self.holder:
            return True
        host, pid_text, _ = [*holder.rsplit(":", 2), "", ""][:3]
        if host == self.host and pid_text.isdigit():
            return not pid_alive(int(pid_text))
        return expires_us <= now

    def acquire(self) -> bool:
        """Take (or keep) the lease; False when another live agent holds it."""
        self.holder = self._current_holder()
        now = _now_us()
        t = agent_leases.c
        with self.db.write() as conn:
            row = conn.execute(select(agent_leases).where(t.name == self.name)).first()
            if row is None:
                conn.execute(
                    insert(agent_leases).values(
                        name=self.name,
                        holder=self.holder,
                        acquired_us=now,
                        expires_us=now + self.ttl_us,
                    )
                )
            elif self._free(row.holder, row.expires_us, now):
                acquired = row.acquired_us if row.holder == self.holder else now
                conn.execute(
                    update(agent_leases)
                    .where(and_(t.name == self.name, t.holder == row.holder))
                    .values(holder=self.holder, acquired_us=acquired, expires_us=now + self.ttl_us)
                )
            else:
                self.holder_seen = row.holder
                return False
        self.holder_seen = None
        return True

    def renew(self) -> bool:
        """Push the expiry out by the TTL; False when the lease is no longer ours."""
        now = _now_us()
        t = agent_leases.c
        with self.db.write() as conn:
            done = conn.execute(
                update(agent_leases)
                .where(and_(t.name == self.name, t.holder == self.holder))
                .values(expires_us=now + self.ttl_us)
            )
        return done.rowcount == 1

    def release(self) -> None:
        """Give the lease up (only if it is ours)."""
        t = agent_leases.c
        with self.db.write() as conn:
            conn.execute(
                delete(agent_leases).where(and_(t.name == self.name, t.holder == self.holder))
            )

    def _current_holder(self) -> str:
        """The holder string, renewed after a fork (the child is another process)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            return f"{self.host}:{self._pid}:{os.urandom(6).hex()}"
        return self.holder
