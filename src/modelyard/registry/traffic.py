"""The traffic policy of each served model, in the metadata store: versioned and audited.

Every worker of every replica serves a model by one policy (``TrafficSettings``: the
primary alias, a canary alias and its weight, a shadow alias, a sticky key). It lives in
the ``traffic_policies`` table, so a change made through any replica (or the agent, or a
script) reaches all of them: each worker polls the policy versions of the models it
serves every ``serving.watch_interval_s`` (one primary-key query) and re-reads a policy
only when its version moved.

- **Versioned.** A model's policy version starts at 1 and rises by one per change. A
  writer may name the version it read (``expected_version``, 0: "none stored yet"); the
  write happens only if the policy is still at that version, else ``ConflictError``
  (compare-and-set: of racing writers that read the same version exactly one wins).
  Writes to one model are serialised (SQLite's ``BEGIN IMMEDIATE``; PostgreSQL locks the
  policy's row) so writers that do not name a version queue and each gets its own
  version.
- **Audited.** Each change writes a ``traffic_audit`` row in the same transaction: who,
  when, the old and the new policy, the reason.
- **Validated against the registry** when set: the model must be registered, every alias
  the policy names must be held by a version, and the canary and shadow must take every
  request the primary takes (:func:`modelyard.models.signature.differences`, with value
  ranges under ``serving.value_checks: reject``). The error names the field.
- ``modelyard.yaml``'s ``serving.traffic.MODEL`` stays the policy of a model while the
  store holds none (:meth:`TrafficPolicies.effective`).
- The file earlier versions kept (``.modelyard/traffic.json``, written by one host without
  a lock) is migrated once, on the first start of a server (:meth:`migrate_file`): each
  policy it holds is stored when the store has none for that model, audited as
  ``migrated from traffic.json``, and the file is renamed ``traffic.json.migrated``.

Watching uses each model's own version rather than one global counter (such as the
largest audit id): transactions may commit out of id order, so a global maximum could
pass a change by; a model's version only moves under that model's lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update

from modelyard.config import STATE_DIR, Settings, TrafficSettings
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError, StorageError
from modelyard.models.signature import Signature, differences
from modelyard.registry.client import ModelRegistry, _actor
from modelyard.registry.entities import ModelVersion
from modelyard.store.database import Database
from modelyard.store.schema import traffic_audit, traffic_policies

__all__ = [
    "MIGRATED_REASON",
    "PolicyChange",
    "StoredPolicy",
    "TrafficPolicies",
    "decode_policy",
    "encode_policy",
    "legacy_traffic_file",
]

logger = logging.getLogger("modelyard.registry")

#: the reason of the audit row of a policy migrated from the old file
MIGRATED_REASON = "migrated from traffic.json"
_FIELDS = ("primary", "canary", "shadow")
_INSERT_RETRIES = 3


def legacy_traffic_file(settings: Settings) -> Path:
    """Where servers before the traffic store kept admin traffic changes (one host)."""
    return settings.project_dir / STATE_DIR / "traffic.json"


def encode_policy(policy: TrafficSettings) -> str:
    """``policy`` as the JSON text the store keeps (keys sorted: equal policies, equal text)."""
    return json.dumps(msgspec.to_builtins(policy), sort_keys=True)


def decode_policy(text: str, where: str) -> TrafficSettings:
    """A stored policy back; StorageError naming ``where`` when the row is not one."""
    try:
        return msgspec.convert(json.loads(text), TrafficSettings)
    except (ValueError, msgspec.ValidationError, InvalidInputError) as exc:
        raise StorageError(f"The stored traffic policy of {where} is not readable: {exc}") from None


@dataclass(frozen=True)
class StoredPolicy:
    """A model's policy as stored, at ``version``."""

    model: str
    version: int
    policy: TrafficSettings
    updated_at: int  # ms since the epoch
    updated_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "policy": msgspec.to_builtins(self.policy),
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class PolicyChange:
    """One audited change: ``policy_from`` (None for the first) became ``policy_to``."""

    id: int
    model: str
    version: int
    policy_from: TrafficSettings | None
    policy_to: TrafficSettings
    actor: str
    reason: str | None
    at: int  # ms since the epoch

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "policy_from": None
            if self.policy_from is None
            else msgspec.to_builtins(self.policy_from),
            "policy_to": msgspec.to_builtins(self.policy_to),
            "actor": self.actor,
            "reason": self.reason,
            "at": self.at,
        }


class TrafficPolicies:
    """Read, validate, change and audit traffic policies through a registry's store."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.settings = registry.settings

    @property
    def db(self) -> Database:
        return self.registry.db

    # -- reads ---------------------------------------------------------------------

    def get_policy(self, model: str) -> StoredPolicy | None:
        """The stored policy of ``model``, or None when none was ever stored."""
        with self.db.read() as conn:
            row = conn.execute(
                select(traffic_policies).where(traffic_policies.c.model == model)
            ).first()
        return None if row is None else self._stored(row)

    def effective(self, model: str) -> TrafficSettings | None:
        """The policy ``model`` is served by: the stored one, else ``serving.traffic``'s."""
        stored = self.get_policy(model)
        if stored is not None:
            return stored.policy
        return self.settings.serving.traffic.get(model)

    def versions(self, models: Iterable[str]) -> dict[str, int]:
        """The stored policy version of each of ``models`` that has one (one indexed query)."""
        names = sorted(set(models))
        if not names:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(traffic_policies.c.model, traffic_policies.c.version).where(
                    traffic_policies.c.model.in_(names)
                )
            ).all()
        return {str(row.model): int(row.version) for row in rows}

    def list_policies(self) -> list[StoredPolicy]:
        """Every stored policy, by model name."""
        with self.db.read() as conn:
            rows = conn.execute(select(traffic_policies).order_by(traffic_policies.c.model)).all()
        return [self._stored(row) for row in rows]

    def history(self, model: str) -> list[PolicyChange]:
        """Every audited change of ``model``'s policy, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(traffic_audit)
                .where(traffic_audit.c.model == model)
                .order_by(traffic_audit.c.version)
            ).all()
        where = f"{model} (audit)"
        return [
            PolicyChange(
                id=int(row.id),
                model=str(row.model),
                version=int(row.version),
                policy_from=None
                if row.policy_from is None
                else decode_policy(row.policy_from, where),
                policy_to=decode_policy(row.policy_to, where),
                actor=str(row.actor),
                reason=row.reason,
                at=int(row.at),
            )
            for row in rows
        ]

    def _stored(self, row: Any) -> StoredPolicy:
        return StoredPolicy(
            model=str(row.model),
            version=int(row.version),
            policy=decode_policy(row.policy, repr(str(row.model))),
            updated_at=int(row.updated_at),
            updated_by=str(row.updated_by),
        )

    # -- validation ----------------------------------------------------------------

    def validate(
        self, model: str, policy: TrafficSettings, *, pinned_version: int | None = None
    ) -> None:
        """Refuse ``policy`` for ``model`` unless every alias it names is held by a version
        and every version it routes to takes the requests the primary takes.

        ``pinned_version``: the primary is that version whatever ``policy.primary`` says (a
        server started on ``name/3``). NotFoundError for an unregistered model;
        InvalidInputError naming the field (``primary``, ``canary``, ``shadow``) else.
        """
        if pinned_version is not None:
            primary = self.registry.get_version(f"{model}/{pinned_version}")
        else:
            self.check_model(model)
            primary = self._holder(model, "primary", policy.primary)
        base: Signature | None = None
        strict = self.settings.serving.value_checks == "reject"
        for part, alias in (("canary", policy.canary), ("shadow", policy.shadow)):
            if alias is None:
                continue
            other = self._holder(model, part, alias)
            if other.version == primary.version:
                continue
            base = base or self._signature(primary, "primary")
            found = differences(base, self._signature(other, part), strict_values=strict)
            if found:
                raise InvalidInputError(
                    f"{other.ref} ({alias!r}) cannot be the {part}: it cannot take every "
                    f"request the primary {primary.ref} takes: {'; '.join(found)}",
                    loc=part,
                )

    def check_model(self, model: str) -> None:
        """NotFoundError naming the registered models unless ``model`` is one."""
        names = [m.name for m in self.registry.list_models()]
        if model not in names:
            from_names = ", ".join(sorted(names)) or "none"
            raise NotFoundError(
                f"No registered model named {model!r} to set a traffic policy for "
                f"(registered: {from_names})"
            )

    def _holder(self, model: str, part: str, alias: str) -> ModelVersion:
        try:
            return self.registry.get_version(f"{model}@{alias}")
        except NotFoundError:
            held = sorted(a for v in self.registry.list_versions(model) for a in v.aliases)
            raise InvalidInputError(
                f"No version of {model!r} holds the alias {alias!r} named as {part}; "
                f"its aliases: {', '.join(held) or 'none'}",
                loc=part,
            ) from None

    def _signature(self, found: ModelVersion, part: str) -> Signature:
        signature = self.registry.manifest(found.ref).signature
        if signature is None:
            raise InvalidInputError(
                f"{found.ref} (the {part}) has no input signature, so it cannot be served",
                loc=part,
            )
        return signature

    # -- changes -------------------------------------------------------------------

    def set_policy(
        self,
        model: str,
        policy: TrafficSettings,
        actor: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        *,
        validate: bool = True,
        pinned_version: int | None = None,
        now: int | None = None,
    ) -> StoredPolicy:
        """Store ``policy`` as ``model``'s next version, audited; return what is stored.

        ``expected_version``: the version the caller read (0: none stored); when the
        store is elsewhere, ConflictError and nothing changes. A policy equal to the
        stored one changes nothing (no new version, no audit row). ``validate=False``
        skips the registry checks (only for migrating records kept elsewhere).
        """
        if not isinstance(policy, TrafficSettings):
            raise InvalidInputError(
                f"Expected a TrafficSettings policy, got {type(policy).__name__}", loc="policy"
            )
        if expected_version is not None and expected_version < 0:
            raise InvalidInputError(
                f"Expected expected_version >= 0 (0: no policy stored yet), "
                f"got {expected_version!r}",
                loc="expected_version",
            )
        if validate:
            self.validate(model, policy, pinned_version=pinned_version)
        who = actor or _actor()
        for attempt in range(_INSERT_RETRIES):
            try:
                return self._write(model, policy, who, reason, expected_version, now)
            except sa_exc.IntegrityError:
                # two writers stored the first policy of ``model`` at once: that one won
                if expected_version is not None or attempt == _INSERT_RETRIES - 1:
                    raise self._conflict(model, expected_version) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _conflict(self, model: str, expected: int | None) -> ConflictError:
        stored = self.get_policy(model)
        at = 0 if stored is None else stored.version
        by = "" if stored is None else f" (by {stored.updated_by})"
        return ConflictError(
            f"The traffic policy of {model!r} is at version {at}{by}, not the expected "
            f"{expected}: it changed since it was read; read it again and retry"
        )

    def _write(
        self,
        model: str,
        policy: TrafficSettings,
        actor: str,
        reason: str | None,
        expected: int | None,
        now: int | None,
    ) -> StoredPolicy:
        at = now if now is not None else time.time_ns() // 1_000_000
        text = encode_policy(policy)
        with self.db.write() as conn:
            query = select(traffic_policies).where(traffic_policies.c.model == model)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            current = 0 if row is None else int(row.version)
            if expected is not None and expected != current:
                by = "" if row is None else f" (by {row.updated_by})"
                raise ConflictError(
                    f"The traffic policy of {model!r} is at version {current}{by}, not "
                    f"the expected {expected}: it changed since it was read; read it again "
                    "and retry"
                )
            if row is not None and decode_policy(row.policy, repr(model)) == policy:
                return self._stored(row)
            version = current + 1
            values = {
                "version": version,
                "policy": text,
                "updated_at": at,
                "updated_by": actor,
            }
            if row is None:
                conn.execute(insert(traffic_policies).values(model=model, **values))
            else:
                done = conn.execute(
                    update(traffic_policies)
                    .where(
                        traffic_policies.c.model == model,
                        traffic_policies.c.version == current,
                    )
                    .values(**values)
                )
                if done.rowcount != 1:  # the row lock makes this impossible; never guess
                    raise ConflictError(f"The traffic policy of {model!r} changed meanwhile")
            conn.execute(
                insert(traffic_audit).values(
                    model=model,
                    version=version,
                    policy_from=None if row is None else row.policy,
                    policy_to=text,
                    actor=actor,
                    reason=reason,
                    at=at,
                )
            )
        return StoredPolicy(model, version, policy, at, actor)

    # -- the old file --------------------------------------------------------------

    def migrate_file(self, path: Path | None = None, *, actor: str | None = None) -> list[str]:
        """Store the policies of the old ``traffic.json`` once; return the models stored.

        A model whose policy the store already holds keeps it (another replica or worker
        got there first: the store wins). The file is then renamed ``.migrated``; a file
        that is not JSON is left where it is, with one error line, and nothing stored.
        """
        path = path or legacy_traffic_file(self.settings)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.error("Not migrating %s into the traffic store: unreadable: %s", path, exc)
            return []
        if not isinstance(raw, dict):
            logger.error(
                "Not migrating %s into the traffic store: expected an object of model "
                "names, got %s",
                path,
                type(raw).__name__,
            )
            return []
        stored = []
        for model, value in sorted(raw.items()):
            try:
                policy = msgspec.convert(value, TrafficSettings)
            except (msgspec.ValidationError, InvalidInputError) as exc:
                logger.error("Not migrating the traffic policy of %s in %s: %s", model, path, exc)
                continue
            try:
                self.set_policy(
                    str(model),
                    policy,
                    actor or _actor(),
                    MIGRATED_REASON,
                    expected_version=0,
                    validate=False,
                )
            except ConflictError:
                logger.info(
                    "The traffic store already holds a policy for %s: %s not migrated for it",
                    model,
                    path,
                )
                continue
            stored.append(str(model))
        with contextlib.suppress(FileNotFoundError):  # another worker renamed it
            os.replace(path, path.with_name(path.name + ".migrated"))
        if stored:
            logger.info("Migrated the traffic policies of %s from %s", ", ".join(stored), path)
        return stored
