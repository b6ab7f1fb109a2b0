"""A model's named outputs from its scores: shared by the server and batch scoring.

A classifier's scores are class probabilities: its outputs are ``label`` (the most
probable class) and one ``proba_<class>`` per class. A regressor's are ``prediction``
(or ``output_<i>`` for several targets).

>>> from modelyard.models.manifest import OutputSpec
>>> specs = [OutputSpec(name="label", dtype="string", classes=["no", "yes"]),
...          OutputSpec(name="proba_no", dtype="float"),
...          OutputSpec(name="proba_yes", dtype="float")]
>>> out = outputs_from_scores(specs, np.array([[0.2, 0.8]]), task="classification",
...                           classes=["no", "yes"])
>>> out["label"].tolist(), out["proba_yes"].tolist()
(['yes'], [0.8])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelyard.errors import ModelError
from modelyard.models.manifest import OutputSpec

__all__ = ["outputs_from_scores"]


def _column(scores: np.ndarray, index: int, name: str) -> np.ndarray:
    if index >= scores.shape[1]:
        raise ModelError(
            f"The model returned {scores.shape[1]} score columns; output {name!r} needs "
            f"column {index}"
        )
    return np.ascontiguousarray(scores[:, index])


def outputs_from_scores(
    outputs: Sequence[OutputSpec],
    scores: np.ndarray,
    *,
    task: str,
    classes: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """Each declared output as a 1-d array: labels (object), probabilities, predictions."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores.reshape(-1, 1)
    result: dict[str, np.ndarray] = {}
    labelled = task == "classification" and classes
    if labelled and scores.shape[1] != len(classes or ()):
        raise ModelError(
            f"The model returned {scores.shape[1]} score columns for {len(classes or ())} classes"
        )
    names = list(classes or ())
    for spec in outputs:
        if spec.name == "label" and labelled:
            labels = np.asarray(names, dtype=object)
            result["label"] = labels[np.argmax(scores, axis=1)]
        elif spec.name.startswith("proba_") and spec.name[6:] in names:
            result[spec.name] = _column(scores, names.index(spec.name[6:]), spec.name)
        elif spec.name == "prediction":
            result[spec.name] = _column(scores, 0, spec.name)
        elif spec.name.startswith("output_") and spec.name[7:].isdigit():
            result[spec.name] = _column(scores, int(spec.name[7:]), spec.name)
        else:
            raise ModelError(f"No way to compute the output {spec.name!r} from the scores")
    return result
