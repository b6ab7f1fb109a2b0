"""A model output read back as the next step's input follows the project's trust settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
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


@step
def openmp_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp")


@pipeline
def thread_flow() -> None:
    openmp_threads()


def test_local_workers_share_the_cores_out_unless_the_user_sized_the_pools(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import sklearn.ensemble  # noqa: F401 - loads OpenMP in this process, so forked workers have it

    from modelyard.pipelines.executors import THREAD_VARIABLES, ProcessExecutor, worker_threads

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cores = os.cpu_count() or 1
    assert worker_threads(2) == max(1, cores // 2)
    assert worker_threads(cores * 4) == 1
    run = run_pipeline(thread_flow, settings=settings, executor=ProcessExecutor(2), cache=False)
    assert run.load("openmp_threads") == max(1, cores // 2)
    # the user's setting wins: the workers keep the pools as this process has them
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
    run = run_pipeline(thread_flow, settings=settings, executor=ProcessExecutor(2), cache=False)
    assert run.load("openmp_threads") == openmp_threads.fn()


_PRELOAD_PROBE = """
import sys
from sklearn.linear_model import LogisticRegression
from modelyard.config import init_project, load_settings
from modelyard.pipelines import pipeline, run_pipeline, step

@step
def fit_model() -> LogisticRegression:
    return LogisticRegression().fit([[0.0], [1.0]], [0, 1])

@pipeline
def preload_flow() -> None:
    fit_model()

init_project(sys.argv[1])
assert "skops.io" not in sys.modules
run = run_pipeline(preload_flow, settings=load_settings(sys.argv[1]), executor=sys.argv[2])
print(run.steps["fit_model"].status, "skops.io" in sys.modules)
"""


@pytest.mark.parametrize("engine", ["local", "inline"])
def test_the_parent_imports_skops_once_before_the_pool_forks_and_a_cached_run_never(
    tmp_path: Path, engine: str
) -> None:
    # a worker that stores a scikit-learn model needs skops, whose import lists every
    # estimator (seconds); imported in the parent first, the forked workers share it.
    # A run whose steps all come from the cache forks nothing and imports nothing.
    def probe() -> str:
        result = subprocess.run(
            [sys.executable, "-c", _PRELOAD_PROBE, str(tmp_path / "p"), engine],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1]

    assert probe() == "completed True"
    assert probe() == "cached False"
