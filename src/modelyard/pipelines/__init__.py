"""Training pipelines: steps, pipelines, the step cache, runs and tuning."""

from __future__ import annotations

from modelyard.pipelines.context import StepContext, current_step
from modelyard.pipelines.definition import Pipeline, pipeline
from modelyard.pipelines.executors import Executor
from modelyard.pipelines.materializers import Materializer, StoredOutput, register_materializer
from modelyard.pipelines.project import load_pipelines
from modelyard.pipelines.runner import PipelineRun, StepEvent, StepResult, run_pipeline
from modelyard.pipelines.steps import Step, step

__all__ = [
    "Executor",
    "PipelineRun",
    "StepContext",
    "StepEvent",
    "StepResult",
    "current_step",
    "run_pipeline",
    "Materializer",
    "Pipeline",
    "Step",
    "StoredOutput",
    "load_pipelines",
    "pipeline",
    "register_materializer",
    "step",
]
