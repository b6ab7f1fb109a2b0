"""Training pipelines: steps, pipelines, the step cache, runs and tuning."""

from __future__ import annotations

from modelyard.pipelines.definition import Pipeline, pipeline
from modelyard.pipelines.materializers import Materializer, StoredOutput, register_materializer
from modelyard.pipelines.steps import Step, step

__all__ = [
    "Materializer",
    "Pipeline",
    "Step",
    "StoredOutput",
    "pipeline",
    "register_materializer",
    "step",
]
