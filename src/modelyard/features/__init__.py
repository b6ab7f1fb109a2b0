"""Feature pipelines: definitions, point-in-time correct training sets, online stores."""

from __future__ import annotations

from modelyard.features.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureService,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
    SqlSource,
    on_demand_feature_view,
)
from modelyard.features.offline import get_historical_features
from modelyard.features.online import get_online_features, open_online_store

__all__ = [
    "Aggregation",
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureView",
    "FileSource",
    "OnDemandFeatureView",
    "SqlSource",
    "get_historical_features",
    "get_online_features",
    "on_demand_feature_view",
    "open_online_store",
]
