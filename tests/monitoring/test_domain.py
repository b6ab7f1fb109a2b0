"""The domain classifier catches what no single column shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InvalidInputError
from modelyard.monitoring import Reference, domain_classifier


def _pairs(rng: np.random.Generator, n: int, rho: float) -> pd.DataFrame:
    x = rng.normal(size=n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return pd.DataFrame(
        {"x": x, "y": y, "plan": pd.Series(rng.choice(["a", "b", "c"], n), dtype=object)}
    )


def test_a_correlation_flip_is_caught_by_the_classifier_only() -> None:
    rng = np.random.default_rng(0)
    reference, current = _pairs(rng, 20_000, 0.8), _pairs(rng, 5_000, -0.8)
    # Same marginals: the column engine sees nothing ...
    assert Reference.from_data(reference).compare(current).drifted_columns == []
    # ... the classifier separates the two samples.
    result = domain_classifier(reference, current, max_rows=10_000)
    assert result.drifted
    assert result.ci_low > 0.7
    assert result.ci_low < result.auc < result.ci_high
    assert result.importances["x"] > 0.05 and result.importances["y"] > 0.05
    assert abs(result.importances["plan"]) < 0.02
    assert result.n_reference == 5_000 and result.n_current == 5_000


def test_no_shift_gives_an_auc_near_one_half() -> None:
    rng = np.random.default_rng(1)
    result = domain_classifier(_pairs(rng, 6_000, 0.8), _pairs(rng, 6_000, 0.8), seed=3)
    assert not result.drifted
    assert result.ci_low < 0.5 < result.ci_high
    assert set(result.to_dict()) >= {"auc", "ci_low", "ci_high", "importances"}


def test_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        domain_classifier({"x": np.ones(100)}, {"z": np.ones(100)})
    with pytest.raises(InvalidInputError):
        domain_classifier({"x": np.ones(5)}, {"x": np.ones(100)})
