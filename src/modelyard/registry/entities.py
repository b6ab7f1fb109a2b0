"""Value types of the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditEntry", "ModelVersion", "RegisteredModel"]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    package_id: str
    run_id: str | None
    status: str  # active | archived
    description: str | None
    created_by: str
    created_at: int
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "package_id": self.package_id,
            "run_id": self.run_id,
            "status": self.status,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    tags: dict[str, str]
    created_at: int
    updated_at: int
    latest_version: int | None
    aliases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "latest_version": self.latest_version,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    name: str
    action: str
    alias: str | None
    version_from: int | None
    version_to: int | None
    actor: str
    reason: str | None
    at: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
