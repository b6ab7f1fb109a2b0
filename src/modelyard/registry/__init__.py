"""The model registry: packages, versions, aliases and their audit trail."""

from __future__ import annotations

from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import AuditEntry, ModelVersion, RegisteredModel
from modelyard.registry.refs import ModelRef

__all__ = ["AuditEntry", "ModelRef", "ModelRegistry", "ModelVersion", "RegisteredModel"]
