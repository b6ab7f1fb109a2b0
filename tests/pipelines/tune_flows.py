"""A pipeline whose step tunes (``test_tuning.py``): its trials are the step run's children."""

from __future__ import annotations

from modelyard import pipeline, step
from modelyard.pipelines.tuning import tune


@step(cache=False)
def search(n: int = 5) -> dict[str, float]:
    result = tune(
        lambda p: (p["x"] - 1.0) ** 2, space={"x": (-3.0, 3.0)}, n_trials=n, seed=0, study="in-step"
    )
    return {"best": float(result.best_value or 0.0)}


@pipeline
def tuned(n: int = 5) -> None:
    search(n=n)
