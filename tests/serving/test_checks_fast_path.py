"""The fast paths of check_values (one matrix comparison; a few rows checked in Python)
agree with the per-column checks they skip."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.errors import Problem
from modelyard.models.runtimes import Inputs, build_inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs import check_values
from modelyard.serving.codecs.checks import _category, _range


def _per_column(signature: Signature, inputs: Inputs) -> list[Problem]:
    """The oracle: every column through the per-column checks."""
    found = []
    for spec, values in zip(signature.columns, inputs.columns, strict=True):
        problem = _range(spec, values) or _category(spec, values)
        if problem is not None:
            found.append(problem)
    return found


def _data(rng: np.random.Generator, rows: int, with_text: bool, wide: bool) -> dict[str, Any]:
    """In range (and known categories) unless ``wide``, when some values fall outside."""
    spread = 0.2 if wide else 0.0
    data: dict[str, Any] = {
        "a": rng.uniform(-spread, 1 + spread, rows),
        "b": rng.integers(-7 if wide else -5, 8 if wide else 6, rows),
        "c": rng.normal(0, 1e6, rows),
        "d": np.where(rng.random(rows) < 0.1, np.nan, rng.uniform(9 if wide else 10, 20, rows)),
    }
    if with_text:
        levels, p = ["basic", "pro", "max", "new"], [0.4, 0.3, 0.25, 0.05 if wide else 0.0]
        data["plan"] = rng.choice(levels, rows, p=np.array(p) / sum(p))
    return data


def test_fast_paths_find_what_the_column_checks_find() -> None:
    rng = np.random.default_rng(5)
    numeric = [
        ColumnSpec(name="a", dtype="float", min=0.0, max=1.0),
        ColumnSpec(name="b", dtype="int", min=-5, max=5),
        ColumnSpec(name="c", dtype="float"),  # unbounded
        ColumnSpec(name="d", dtype="float", min=10.0),  # one side, with missing values
    ]
    text = ColumnSpec(name="plan", dtype="string", categories=["basic", "pro", "max"])
    clean = 0
    for trial in range(600):
        with_text = bool(trial % 2)
        signature = Signature(columns=numeric + ([text] if with_text else []))
        rows = int(rng.integers(1, 40))  # both sides of the small-request path
        inputs = build_inputs(signature, _data(rng, rows, with_text, wide=trial % 3 == 0))
        assert (inputs.matrix is None) == with_text
        expected = _per_column(signature, inputs)
        assert check_values(signature, inputs, mode="log") == expected
        clean += not expected
    assert 10 < clean < 590  # both outcomes were exercised
