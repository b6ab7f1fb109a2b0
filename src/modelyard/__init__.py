"""modelyard: take a model from a notebook to production and keep it healthy there.

The public API is what this module exports. ``import modelyard`` stays light: no
pandas, scikit-learn or web framework is imported until a feature needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelyard.config import Settings, init_project, load_settings
from modelyard.errors import (
    ConflictError,
    InvalidInputError,
    ModelyardError,
    NotFoundError,
    StorageError,
)
from modelyard.version import __version__

if TYPE_CHECKING:
    from modelyard.batch import BatchResult, predict_batch
    from modelyard.models.flavors.custom import PythonModel
    from modelyard.pipelines import pipeline, step
    from modelyard.pipelines.tuning import tune
    from modelyard.registry.client import LoggedModel, ModelRegistry
    from modelyard.registry.fluent import get_registry, load_model, log_model
    from modelyard.tracking.client import ActiveRun, TrackingClient
    from modelyard.tracking.entities import Run, RunStatus
    from modelyard.tracking.fluent import (
        active_run,
        end_run,
        get_client,
        log_artifact,
        log_artifacts,
        log_input,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        search_runs,
        set_client,
        set_tag,
        set_tags,
        start_run,
    )

#: names loaded on first use, so that ``import modelyard.anything`` (the command line
#: included) pays only for what it uses: the registry brings SQLAlchemy and the
#: flavors, the pipelines package its runner (pyarrow, the process pool), tune optuna
_FLUENT = (
    "active_run end_run get_client log_artifact log_artifacts log_input log_metric "
    "log_metrics log_param log_params search_runs set_client set_tag set_tags start_run"
)
_LAZY = {
    "PythonModel": "modelyard.models.flavors.custom",
    "LoggedModel": "modelyard.registry.client",
    "ModelRegistry": "modelyard.registry.client",
    "get_registry": "modelyard.registry.fluent",
    "load_model": "modelyard.registry.fluent",
    "log_model": "modelyard.registry.fluent",
    "ActiveRun": "modelyard.tracking.client",
    "TrackingClient": "modelyard.tracking.client",
    "Run": "modelyard.tracking.entities",
    "RunStatus": "modelyard.tracking.entities",
    **dict.fromkeys(_FLUENT.split(), "modelyard.tracking.fluent"),
    "pipeline": "modelyard.pipelines",
    "step": "modelyard.pipelines",
    "tune": "modelyard.pipelines.tuning",  # optuna
    "BatchResult": "modelyard.batch",
    "predict_batch": "modelyard.batch",  # pyarrow, the registry
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActiveRun",
    "BatchResult",
    "ConflictError",
    "InvalidInputError",
    "LoggedModel",
    "ModelRegistry",
    "ModelyardError",
    "NotFoundError",
    "PythonModel",
    "Run",
    "RunStatus",
    "Settings",
    "StorageError",
    "TrackingClient",
    "__version__",
    "active_run",
    "end_run",
    "get_client",
    "get_registry",
    "init_project",
    "load_model",
    "load_settings",
    "log_artifact",
    "log_artifacts",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "pipeline",
    "predict_batch",
    "search_runs",
    "set_client",
    "set_tag",
    "set_tags",
    "start_run",
    "step",
    "tune",
]
