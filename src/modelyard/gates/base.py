"""The core types of promotion gates: a gate, what it is handed, what it answers.

A gate is any object with ``name``, ``kind``, ``required`` and ``evaluate(ctx)``;
``evaluate`` returns a :class:`GateResult` and never raises for data reasons (a gate
that cannot be evaluated answers a failed result saying why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from modelyard.config import Settings
from modelyard.models.package import PackagedModel
from modelyard.store.artifacts import ArtifactStore

if TYPE_CHECKING:  # the registry imports gate records: a runtime import would be a cycle
    from modelyard.registry.entities import ModelVersion

__all__ = ["GATE_KINDS", "Gate", "GateContext", "GateResult"]

#: every kind of gate, in the order a report lists them
GATE_KINDS = (
    "metric",
    "champion",
    "slices",
    "latency",
    "parity",
    "signature",
    "behaviour",
    "data",
)


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome with the numbers it measured."""

    gate: str  # unique name in the set, e.g. "metric:auc", "champion:auc"
    kind: str  # one of GATE_KINDS
    passed: bool
    required: bool
    summary: str  # one line: "auc 0.812 >= 0.700"
    numbers: Mapping[str, Any]  # JSON-able measured values (finite floats or None)
    ci: tuple[float, float] | None  # CI of the key statistic, when there is one
    details: tuple[Mapping[str, Any], ...] = ()  # worst slices, failing cases, breaking changes

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a result (``--json``, HTTP)."""
        return {
            "gate": self.gate,
            "kind": self.kind,
            "passed": self.passed,
            "required": self.required,
            "summary": self.summary,
            "numbers": dict(self.numbers),
            "ci": None if self.ci is None else list(self.ci),
            "details": [dict(d) for d in self.details],
        }


@dataclass
class GateContext:
    """What every gate is handed: both models, the evaluation rows and their label."""

    settings: Settings
    candidate: ModelVersion
    candidate_model: PackagedModel
    champion: ModelVersion | None  # None: no holder of the ``against`` alias
    champion_model: PackagedModel | None
    frame: pd.DataFrame  # evaluation rows (features + label)
    label: str
    eval_digest: str  # tracking.digest.digest_frame(frame).digest
    #: the artifact store the packages live in (their profiles, held-out rows); None:
    #: the project's (``settings.artifacts``)
    artifacts: ArtifactStore | None = None
    _scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _model(self, which: str) -> PackagedModel:
        if which == "candidate":
            return self.candidate_model
        if which == "champion":
            if self.champion_model is None:
                raise LookupError("There is no champion to score")
            return self.champion_model
        raise ValueError(f"Expected which='candidate' or 'champion', got {which!r}")

    def scores(self, which: str = "candidate") -> np.ndarray:
        """The native model's scores on the evaluation rows (cached per model).

        A binary classifier gives the probability of its second class
        (``predict_proba[:, 1]``); any other model gives its predictions.
        """
        cached = self._scores.get(which)
        if cached is not None:
            return cached
        model = self._model(which)
        manifest = model.manifest
        features = self.features(which)
        if manifest.task == "classification" and manifest.classes and len(manifest.classes) == 2:
            values = np.asarray(model.scores(features), dtype=np.float64)
            result = values[:, 1] if values.ndim == 2 else values
        else:
            predicted = np.asarray(model.predict(features))
            result = predicted.reshape(len(features), -1)[:, 0] if predicted.ndim > 1 else predicted
        self._scores[which] = result
        return result

    def features(self, which: str = "candidate") -> pd.DataFrame:
        """The evaluation rows less the label; only the model's signature columns when
        it has a signature (an evaluation set may carry more, e.g. slice columns)."""
        features = self.frame.drop(columns=[self.label])
        signature = self._model(which).manifest.signature
        if signature is not None:
            names = [n for n in signature.names if n in features.columns]
            if len(names) == len(signature.names):
                features = features[names]
        return features

    def artifact_store(self) -> ArtifactStore:
        """The artifact store of the packages (the project's unless one was handed in)."""
        if self.artifacts is None:
            self.artifacts = ArtifactStore(self.settings.artifacts)
        return self.artifacts

    def labels(self) -> np.ndarray:
        """The label column as an array."""
        return self.frame[self.label].to_numpy()


@runtime_checkable
class Gate(Protocol):
    """A promotion gate: ``evaluate`` answers a result, never raises for data reasons."""

    name: str
    kind: str
    required: bool

    def evaluate(self, ctx: GateContext) -> GateResult: ...


def result_of(
    gate: Gate,
    passed: bool,
    summary: str,
    numbers: Mapping[str, Any],
    details: tuple[Mapping[str, Any], ...] = (),
) -> GateResult:
    """The result of ``gate`` (its name, kind and required flag) with no interval."""
    return GateResult(
        gate=gate.name,
        kind=gate.kind,
        passed=passed,
        required=gate.required,
        summary=summary,
        numbers=numbers,
        ci=None,
        details=details,
    )
