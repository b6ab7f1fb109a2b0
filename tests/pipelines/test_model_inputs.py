"""A model output read back as the next step's input follows the project's trust settings."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from modelyard.config import Settings
from modelyard.errors import StepFailedError
from modelyard.pipelines import pipeline, run_pipeline, step
from tests.pipelines.mat_models import MatThreshold, mat_data


@step
def fit_custom() -> Any:  # untyped: the consumer cannot name the class it loads
    return MatThreshold(0.25)


@step
def score_custom(model: Any) -> list[float]:
    frame, _ = mat_data(20)
    return [float(p) for p in model.predict_proba(frame)[:, 1]]


@pipeline
def custom_model_flow() -> None:
    score_custom(fit_custom())


@pytest.mark.parametrize("engine", ["inline", "local"])
def test_a_custom_model_passes_between_steps_only_when_the_project_trusts_code(
    settings: Settings, engine: str
) -> None:
    with pytest.raises(StepFailedError, match="trust_code"):
        run_pipeline(custom_model_flow, settings=settings, executor=engine)
    trusting = msgspec.structs.replace(
        settings, models=msgspec.structs.replace(settings.models, trust_code=True)
    )
    run = run_pipeline(custom_model_flow, settings=trusting, executor=engine)
    frame, _ = mat_data(20)
    expected = MatThreshold(0.25).predict_proba(frame)[:, 1]
    assert np.array_equal(np.asarray(run.load("score_custom")), expected)
    # the run's own load follows the same settings
    assert run.load("fit_custom").cut == 0.25
