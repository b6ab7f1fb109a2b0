"""SQL for the registry. Every change happens in one write transaction with its audit record.

Writes to one registered model are serialised: SQLite's write transactions take the
database lock up front (``BEGIN IMMEDIATE``); on PostgreSQL the transaction locks the
model's row (``SELECT ... FOR UPDATE``) before it reads the alias it is about to move.
So two processes moving one alias both finish, one after the other, and the audit
shows both moves in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc

from modelyard.errors import ConflictError, NotFoundError, did_you_mean
from modelyard.registry.entities import AuditEntry, ModelVersion, RegisteredModel
from modelyard.registry.refs import LATEST, ModelRef
from modelyard.store.database import Database
from modelyard.store.schema import (
    model_aliases,
    model_packages,
    model_versions,
    registered_models,
    registry_audit,
)

__all__ = ["SQLRegistryStore"]

ACTIVE = "active"
ARCHIVED = "archived"
#: the audit actions that point an alias at a version (what a rollback undoes)
ALIAS_MOVES = ("alias", "promote", "promote_forced", "rollback")


class SQLRegistryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- packages ------------------------------------------------------------------

    def record_package(
        self, package_id: str, *, flavor: str, model_class: str, run_id: str | None, now: int
    ) -> None:
        try:
            with self.db.write() as conn:
                self._add_package(conn, package_id, flavor, model_class, run_id, now)
        except sa_exc.IntegrityError:
            pass  # recorded concurrently: the same content has the same id

    def _add_package(
        self,
        conn: Connection,
        package_id: str,
        flavor: str,
        model_class: str,
        run_id: str | None,
        now: int,
    ) -> None:
        """Insert the package's row unless it is there (the same content, the same id)."""
        exists = conn.execute(
            select(model_packages.c.id).where(model_packages.c.id == package_id)
        ).first()
        if exists is None:
            conn.execute(
                insert(model_packages).values(
                    id=package_id,
                    flavor=flavor,
                    model_class=model_class,
                    run_id=run_id,
                    created_at=now,
                )
            )

    def packages_of_run(self, run_id: str) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(model_packages.c.id)
                    .where(model_packages.c.run_id == run_id)
                    .order_by(model_packages.c.created_at)
                ).scalars()
            )

    def package_exists(self, package_id: str) -> bool:
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(model_packages.c.id).where(model_packages.c.id == package_id)
                ).first()
                is not None
            )

    # -- models and versions --------------------------------------------------------

    def _lock_model(self, conn: Connection, name: str, now: int, *, create: bool) -> None:
        """Make sure the model row exists and hold its lock until the transaction ends."""
        query = select(registered_models.c.name).where(registered_models.c.name == name)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is not None:
            return
        if not create:
            raise self._no_model(conn, name)
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(
                pg_insert(registered_models)
                .values(name=name, tags="{}", created_at=now, updated_at=now)
                .on_conflict_do_nothing()
            )
            conn.execute(query)  # now lock the row that exists, ours or theirs
        else:
            conn.execute(
                insert(registered_models).values(
                    name=name, tags="{}", created_at=now, updated_at=now
                )
            )

    def _no_model(self, conn: Connection, name: str) -> NotFoundError:
        return NotFoundError(
            f"No model named {name!r}.{did_you_mean(name, self._names(conn), 'models')}"
        )

    def _names(self, conn: Connection) -> list[str]:
        return list(conn.execute(select(registered_models.c.name)).scalars())

    def _audit(
        self,
        conn: Connection,
        name: str,
        action: str,
        *,
        actor: str,
        now: int,
        alias: str | None = None,
        version_from: int | None = None,
        version_to: int | None = None,
        reason: str | None = None,
    ) -> None:
        conn.execute(
            insert(registry_audit).values(
                name=name,
                action=action,
                alias=alias,
                version_from=version_from,
                version_to=version_to,
                actor=actor,
                reason=reason,
                at=now,
            )
        )

    def create_version(
        self,
        name: str,
        package_id: str,
        *,
        run_id: str | None,
        description: str | None,
        actor: str,
        now: int,
    ) -> int:
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=True)
            last = conn.execute(
                select(func.max(model_versions.c.version)).where(model_versions.c.name == name)
            ).scalar()
            version = int(last or 0) + 1
            conn.execute(
                insert(model_versions).values(
                    name=name,
                    version=version,
                    package_id=package_id,
                    run_id=run_id,
                    status=ACTIVE,
                    description=description,
                    created_by=actor,
                    created_at=now,
                )
            )
            conn.execute(
                update(registered_models)
                .where(registered_models.c.name == name)
                .values(updated_at=now)
            )
            self._audit(conn, name, "register", actor=actor, now=now, version_to=version)
        return version

    def restore_version(
        self,
        version: ModelVersion,
        *,
        flavor: str,
        model_class: str,
        actor: str,
        reason: str,
        now: int,
    ) -> str | None:
        """Record ``version`` under its own number (an image's store restoring the version
        it was built from): None once recorded, or the package the number already names,
        which is left as it is (a version never changes what it names)."""
        with self.db.write() as conn:
            self._lock_model(conn, version.name, now, create=True)
            held = conn.execute(
                select(model_versions.c.package_id).where(
                    model_versions.c.name == version.name,
                    model_versions.c.version == version.version,
                )
            ).first()
            if held is not None:
                return str(held[0])
            self._add_package(conn, version.package_id, flavor, model_class, None, now)
            conn.execute(
                insert(model_versions).values(
                    name=version.name,
                    version=version.version,
                    package_id=version.package_id,
                    run_id=None,
                    status=ACTIVE,
                    description=version.description,
                    created_by=version.created_by,
                    created_at=version.created_at,
                )
            )
            self._audit(
                conn,
                version.name,
                "register",
                actor=actor,
                now=now,
                version_to=version.version,
                reason=reason,
            )
        return None

    def _version_row(self, conn: Connection, name: str, version: int) -> Any:
        row = conn.execute(
            select(model_versions).where(
                model_versions.c.name == name, model_versions.c.version == version
            )
        ).first()
        if row is None:
            known = list(
                conn.execute(
                    select(model_versions.c.version)
                    .where(model_versions.c.name == name)
                    .order_by(model_versions.c.version)
                ).scalars()
            )
            if (
                not known
                and conn.execute(
                    select(registered_models.c.name).where(registered_models.c.name == name)
                ).first()
                is None
            ):
                raise self._no_model(conn, name)
            raise NotFoundError(
                f"Model {name!r} has no version {version}; versions: "
                f"{', '.join(map(str, known)) or 'none'}"
            )
        return row

    def _aliases_of(self, conn: Connection, name: str) -> dict[str, int]:
        return {
            r.alias: r.version
            for r in conn.execute(
                select(model_aliases.c.alias, model_aliases.c.version).where(
                    model_aliases.c.name == name
                )
            )
        }

    def _version(self, row: Any, aliases: dict[str, int]) -> ModelVersion:
        return ModelVersion(
            name=row.name,
            version=row.version,
            package_id=row.package_id,
            run_id=row.run_id,
            status=row.status,
            description=row.description,
            created_by=row.created_by,
            created_at=row.created_at,
            aliases=sorted(a for a, v in aliases.items() if v == row.version),
        )

    def resolve(self, ref: ModelRef) -> ModelVersion:
        with self.db.read() as conn:
            if (
                conn.execute(
                    select(registered_models.c.name).where(registered_models.c.name == ref.name)
                ).first()
                is None
            ):
                raise self._no_model(conn, ref.name)
            aliases = self._aliases_of(conn, ref.name)
            if ref.version is not None:
                version = ref.version
            elif ref.alias == LATEST:
                latest = conn.execute(
                    select(func.max(model_versions.c.version)).where(
                        model_versions.c.name == ref.name, model_versions.c.status == ACTIVE
                    )
                ).scalar()
                if latest is None:
                    raise NotFoundError(f"Model {ref.name!r} has no active version")
                version = int(latest)
            else:
                if ref.alias not in aliases:
                    known = ", ".join(sorted(aliases)) or "none"
                    raise NotFoundError(
                        f"Model {ref.name!r} has no alias {ref.alias!r}; aliases: {known}"
                    )
                version = aliases[str(ref.alias)]
            return self._version(self._version_row(conn, ref.name, version), aliases)

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self.db.read() as conn:
            aliases = self._aliases_of(conn, name)
            rows = conn.execute(
                select(model_versions)
                .where(model_versions.c.name == name)
                .order_by(model_versions.c.version.desc())
            ).all()
            if (
                not rows
                and conn.execute(
                    select(registered_models.c.name).where(registered_models.c.name == name)
                ).first()
                is None
            ):
                raise self._no_model(conn, name)
        return [self._version(r, aliases) for r in rows]

    def list_models(self) -> list[RegisteredModel]:
        with self.db.read() as conn:
            models = conn.execute(
                select(registered_models).order_by(registered_models.c.name)
            ).all()
            latest = dict(  # as name@latest: archived versions do not count
                conn.execute(
                    select(model_versions.c.name, func.max(model_versions.c.version))
                    .where(model_versions.c.status == ACTIVE)
                    .group_by(model_versions.c.name)
                ).all()
            )
            aliases: dict[str, dict[str, int]] = {}
            for r in conn.execute(select(model_aliases)):
                aliases.setdefault(r.name, {})[r.alias] = r.version
        return [
            RegisteredModel(
                name=m.name,
                description=m.description,
                tags=json.loads(m.tags),
                created_at=m.created_at,
                updated_at=m.updated_at,
                latest_version=latest.get(m.name),
                aliases=dict(sorted(aliases.get(m.name, {}).items())),
            )
            for m in models
        ]

    # -- aliases, archive, audit -------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str | None,
        now: int,
    ) -> int | None:
        """Point ``alias`` at ``version``; return the version it pointed at before."""
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            current = self._alias_version(conn, name, alias)
            self._move_alias(
                conn,
                name,
                alias,
                current,
                version,
                action="alias",
                actor=actor,
                reason=reason,
                now=now,
            )
        return current

    def move_alias_checked(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        check: Callable[[int | None], tuple[str, str | None]],
        actor: str,
        now: int,
    ) -> int | None:
        """``set_alias`` that first calls ``check(current holder)`` under the model's lock.

        ``check`` raises to refuse the move (a promotion whose evidence names another
        champion than the one holding the alias now), nothing written then; or returns
        the action and the reason the audit trail records for the move.
        """
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            current = self._alias_version(conn, name, alias)
            action, reason = check(current)
            self._move_alias(
                conn,
                name,
                alias,
                current,
                version,
                action=action,
                actor=actor,
                reason=reason,
                now=now,
            )
        return current

    def _alias_version(self, conn: Connection, name: str, alias: str) -> int | None:
        current = conn.execute(
            select(model_aliases.c.version).where(
                model_aliases.c.name == name, model_aliases.c.alias == alias
            )
        ).scalar()
        return None if current is None else int(current)

    def _move_alias(
        self,
        conn: Connection,
        name: str,
        alias: str,
        current: int | None,
        version: int,
        *,
        action: str,
        actor: str,
        reason: str | None,
        now: int,
    ) -> None:
        """Point ``alias`` (now at ``current``) at ``version``, under the model's lock."""
        row = self._version_row(conn, name, version)
        if row.status == ARCHIVED:
            raise ConflictError(
                f"{name}/{version} is archived and can hold no alias; register or pick an "
                "active version"
            )
        if current is None:
            conn.execute(
                insert(model_aliases).values(
                    name=name, alias=alias, version=version, updated_at=now
                )
            )
        else:
            conn.execute(
                update(model_aliases)
                .where(model_aliases.c.name == name, model_aliases.c.alias == alias)
                .values(version=version, updated_at=now)
            )
        self._audit(
            conn,
            name,
            action,
            actor=actor,
            now=now,
            alias=alias,
            version_from=current,
            version_to=version,
            reason=reason,
        )

    def remove_alias(
        self,
        name: str,
        alias: str,
        *,
        actor: str,
        reason: str | None,
        now: int,
        expected: int | None = None,
    ) -> int:
        """Remove ``alias``; return the version it held.

        With ``expected``, only while the alias holds that version (checked under the
        model's lock): ConflictError naming the holder otherwise, nothing written.
        """
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            current = conn.execute(
                select(model_aliases.c.version).where(
                    model_aliases.c.name == name, model_aliases.c.alias == alias
                )
            ).scalar()
            if current is None:
                raise NotFoundError(f"Model {name!r} has no alias {alias!r}")
            if expected is not None and int(current) != expected:
                raise ConflictError(
                    f"Alias {alias!r} of {name!r} holds v{current}, not v{expected}: left as it is"
                )
            conn.execute(
                delete(model_aliases).where(
                    model_aliases.c.name == name, model_aliases.c.alias == alias
                )
            )
            self._audit(
                conn,
                name,
                "unalias",
                actor=actor,
                now=now,
                alias=alias,
                version_from=current,
                reason=reason,
            )
        return int(current)

    def rollback(self, name: str, alias: str, *, actor: str, reason: str | None, now: int) -> int:
        """Point ``alias`` back at the version it held before its last move; return that.

        The last move is read and undone in one transaction, under the model's lock, so
        a move that lands in between is never silently overwritten.
        """
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            current = self._alias_version(conn, name, alias)
            if current is None:
                known = ", ".join(sorted(self._aliases_of(conn, name))) or "none"
                raise NotFoundError(f"Model {name!r} has no alias {alias!r}; aliases: {known}")
            last = conn.execute(
                select(registry_audit.c.version_from, registry_audit.c.version_to)
                .where(
                    registry_audit.c.name == name,
                    registry_audit.c.alias == alias,
                    registry_audit.c.action.in_(ALIAS_MOVES),
                )
                .order_by(registry_audit.c.id.desc())
                .limit(1)
            ).first()
            if last is None or last.version_from is None:
                raise ConflictError(f"Alias {name}@{alias} has no previous holder to roll back to")
            if last.version_to != current:  # pragma: no cover - every move is audited
                raise ConflictError(
                    f"{name}@{alias} is at {current}, not where its last recorded move left "
                    f"it ({last.version_to}); look at `modelyard models history {name}`"
                )
            previous = int(last.version_from)
            self._move_alias(
                conn,
                name,
                alias,
                current,
                previous,
                action="rollback",
                actor=actor,
                reason=reason or f"rollback from {current}",
                now=now,
            )
        return previous

    def archive(self, name: str, version: int, *, actor: str, reason: str | None, now: int) -> None:
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            row = self._version_row(conn, name, version)
            holding = sorted(a for a, v in self._aliases_of(conn, name).items() if v == version)
            if holding:
                raise ConflictError(
                    f"{name}/{version} holds the alias(es) {', '.join(holding)}; move them "
                    "to another version before archiving it"
                )
            if row.status == ARCHIVED:
                return
            conn.execute(
                update(model_versions)
                .where(and_(model_versions.c.name == name, model_versions.c.version == version))
                .values(status=ARCHIVED)
            )
            self._audit(
                conn, name, "archive", actor=actor, now=now, version_from=version, reason=reason
            )

    def set_package(
        self, name: str, version: int, package_id: str, *, actor: str, reason: str, now: int
    ) -> None:
        """Point a version at a re-written package of the same model (e.g. optimized)."""
        with self.db.write() as conn:
            self._lock_model(conn, name, now, create=False)
            self._version_row(conn, name, version)
            if (
                conn.execute(
                    select(model_packages.c.id).where(model_packages.c.id == package_id)
                ).first()
                is None
            ):
                raise NotFoundError(f"No package with id {package_id!r}; log it first")
            conn.execute(
                update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(package_id=package_id)
            )
            self._audit(
                conn,
                name,
                "repackage",
                actor=actor,
                now=now,
                version_from=version,
                version_to=version,
                reason=reason,
            )

    def history(self, name: str, *, limit: int = 1000) -> list[AuditEntry]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(registry_audit)
                .where(registry_audit.c.name == name)
                .order_by(registry_audit.c.id)
                .limit(limit)
            ).all()
            if not rows:
                raise self._no_model(conn, name)
        return [
            AuditEntry(
                id=r.id,
                name=r.name,
                action=r.action,
                alias=r.alias,
                version_from=r.version_from,
                version_to=r.version_to,
                actor=r.actor,
                reason=r.reason,
                at=r.at,
            )
            for r in rows
        ]
