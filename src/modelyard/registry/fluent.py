"""``modelyard.log_model`` and ``modelyard.load_model`` at the package root.

``log_model`` inside an active run records the run (and its data sets) as the model's
lineage; outside a run it packages the model alone.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, overload

from modelyard.errors import InvalidInputError
from modelyard.models.package import PackagedModel
from modelyard.models.serving_model import ServingModel
from modelyard.models.signature import Signature
from modelyard.registry.client import LoggedModel, ModelRegistry
from modelyard.tracking.fluent import active_run, get_client

__all__ = ["get_registry", "load_model", "log_model"]

_registry: ContextVar[ModelRegistry | None] = ContextVar("modelyard_registry", default=None)


def get_registry(project: str | Path | None = None) -> ModelRegistry:
    """The registry of this context's project (sharing the tracking client's database)."""
    client = get_client(project)
    registry = _registry.get()
    if registry is None or registry.settings is not client.settings:
        registry = ModelRegistry(client.settings, db=client.db, artifacts=client.artifacts)
        _registry.set(registry)
    return registry


def log_model(
    model: Any,
    *,
    name: str | None = None,
    training_frame: Any = None,
    signature: Signature | None = None,
    no_signature: bool = False,
    metrics: dict[str, float] | None = None,
    holdout_frame: Any = None,
    flavor: str | None = None,
    project: str | Path | None = None,
    feature_service: str | None = None,
) -> LoggedModel:
    """Package ``model`` (and register it as a new version of ``name`` if given)."""
    run = active_run()
    if run is not None:
        run.client.flush()  # the run's latest metrics become the package's metrics
    return get_registry(project).log_model(
        model,
        name=name,
        training_frame=training_frame,
        signature=signature,
        no_signature=no_signature,
        metrics=metrics,
        run_id=None if run is None else run.id,
        holdout_frame=holdout_frame,
        flavor=flavor,
        feature_service=feature_service,
    )


@overload
def load_model(
    ref: str,
    *,
    trust: bool = ...,
    project: str | Path | None = ...,
    runtime: Literal["native"] = ...,
) -> PackagedModel: ...


@overload
def load_model(
    ref: str, *, trust: bool = ..., project: str | Path | None = ..., runtime: Literal["serving"]
) -> ServingModel: ...


def load_model(
    ref: str,
    *,
    trust: bool = False,
    project: str | Path | None = None,
    runtime: str = "native",
) -> PackagedModel | ServingModel:
    """Load ``name/3``, ``name@production`` or ``name@latest``, verified.

    ``runtime="native"`` (the default) gives the logged model; ``runtime="serving"`` the
    runtime the server answers with (the one ``models optimize`` chose: ONNX where it
    passed parity), behind the same signature checks, its ``predict`` / ``predict_proba``
    equal to the native model's within the package's parity tolerance.
    """
    if runtime == "serving":
        return get_registry(project).load_serving(ref, trust=trust)
    if runtime != "native":
        raise InvalidInputError(
            f"Expected runtime 'native' or 'serving', got {runtime!r}", loc="runtime"
        )
    return get_registry(project).load(ref, trust=trust)
