"""Feature pipelines: definitions, point-in-time correct training sets, online stores."""

from __future__ import annotations

from modelyard.features.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    SqlSource,
)

__all__ = [
    "Aggregation",
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureView",
    "FileSource",
    "SqlSource",
]
