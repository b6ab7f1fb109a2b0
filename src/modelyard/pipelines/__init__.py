"""Training pipelines: steps, pipelines, the step cache, runs and tuning."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelyard.pipelines.context import StepContext, current_step
from modelyard.pipelines.definition import Pipeline, pipeline
from modelyard.pipelines.executors import Executor
from modelyard.pipelines.materializers import Materializer, StoredOutput, register_materializer
from modelyard.pipelines.project import load_pipelines
from modelyard.pipelines.runner import PipelineRun, StepEvent, StepResult, run_pipeline
from modelyard.pipelines.steps import Step, step

if TYPE_CHECKING:
    from modelyard.pipelines.feature_steps import training_set
    from modelyard.pipelines.tuning import TuneResult, tune

#: names imported on first use: tuning imports optuna, which `import modelyard` must not
_LAZY = {"tune": "modelyard.pipelines.tuning", "TuneResult": "modelyard.pipelines.tuning"}
_LAZY["training_set"] = "modelyard.pipelines.feature_steps"  # pandas, DuckDB, features


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
    "TuneResult",
    "load_pipelines",
    "pipeline",
    "register_materializer",
    "step",
    "training_set",
    "tune",
]
