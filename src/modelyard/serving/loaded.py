"""A model version loaded for serving: verified package, serving runtime, warmed up.

Loading opens the runtime the package names through the registry (onnxruntime with one
intra-op thread, from the graph alone; a native fast path, or the native model, from the
whole package), every file it reads checked against its hash, and warms it on the
package's held-out rows. Warm-up is also a last parity check: the runtime must reproduce
the scores the native model gave on those rows when the package was written, or the
version is not served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.config import ServingRuntime
from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.manifest import Manifest, OutputSpec
from modelyard.models.package import read_holdout
from modelyard.models.runtimes import Inputs, Runtime, build_inputs
from modelyard.models.serving_model import check_parity
from modelyard.models.signature import Signature
from modelyard.registry.client import ModelRegistry
from modelyard.serving.codecs import outputs_from_scores

__all__ = ["LoadedModel", "load_version"]

_WARM_CALLS = 20


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version, ready to answer: ``predict`` maps inputs to named outputs."""

    name: str
    version: int
    package_id: str
    manifest: Manifest
    signature: Signature
    runtime: Runtime
    #: measured at warm-up: median microseconds of a 1-row call
    row_latency_us: float
    loaded_at: float

    @property
    def specs(self) -> list[OutputSpec]:
        return list(self.manifest.outputs)

    @property
    def feature_service(self) -> str | None:
        return self.manifest.lineage.feature_service

    def scores(self, inputs: Inputs) -> np.ndarray:
        # Extreme inputs may overflow inside the model: that is a value for the client
        # (NaN/inf, sent as null), not a failed request. errstate is thread-local.
        with np.errstate(all="ignore"):
            return self.runtime.scores(inputs)

    def outputs(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return outputs_from_scores(
            self.manifest.outputs,
            scores,
            task=self.manifest.task,
            classes=self.manifest.classes,
        )

    def predict(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Named outputs (``label`` and ``proba_<class>``, or ``prediction``) per row."""
        return self.outputs(self.scores(inputs))


def _warm(runtime: Runtime, inputs: Inputs, expected: np.ndarray | None, where: str) -> float:
    got = runtime.scores(inputs)
    if expected is not None:
        check_parity(runtime.name, got, expected, where=where, refusal="not serving it")
    one = inputs.take([0])
    times = []
    for _ in range(_WARM_CALLS):
        start = time.perf_counter_ns()
        runtime.scores(one)
        times.append(time.perf_counter_ns() - start)
    return float(np.median(times)) / 1000.0


def load_version(
    registry: ModelRegistry,
    name: str,
    version: int,
    *,
    trust: bool = False,
    runtime: ServingRuntime = "auto",
) -> LoadedModel:
    """Load, verify and warm ``name`` version ``version`` for serving.

    ``runtime="native"`` serves the logged model itself instead of the package's serving
    runtime (the warm-up parity check still applies).
    """
    found = registry.get_version(f"{name}/{version}")
    manifest: Manifest
    manifest, opened = registry.open_runtime(found.package_id, trust=trust, choice=runtime)
    if manifest.signature is None:
        raise InvalidInputError(
            f"{name} v{version} has no input signature, so requests cannot be checked; "
            "log it with a training frame (or signature=) to serve it",
            loc="signature",
        )
    where = f"{name} v{version}"
    expected: np.ndarray | None = None
    data: Any = None
    if manifest.holdout is not None:
        data, expected = read_holdout(registry.artifacts, manifest)
        data, expected = data.head(64), expected[:64]
    if data is None or len(data) == 0:
        raise ModelError(f"{where}: the package has no held-out rows to warm up on")
    inputs = build_inputs(manifest.signature, data)
    latency = _warm(opened, inputs, expected, where)
    return LoadedModel(
        name=name,
        version=version,
        package_id=found.package_id,
        manifest=manifest,
        signature=manifest.signature,
        runtime=opened,
        row_latency_us=latency,
        loaded_at=time.time(),
    )
