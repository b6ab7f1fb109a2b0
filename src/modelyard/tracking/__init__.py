"""Experiment tracking: experiments, runs, params, metrics, dataset inputs and artifacts."""

from __future__ import annotations

from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import (
    ArtifactEntry,
    DatasetInput,
    Experiment,
    Metric,
    Run,
    RunStatus,
)

__all__ = [
    "ArtifactEntry",
    "DatasetInput",
    "Experiment",
    "Metric",
    "Run",
    "RunStatus",
    "TrackingClient",
]
