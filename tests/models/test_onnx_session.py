"""Every onnxruntime session modelyard opens turns onnxruntime's telemetry off first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from modelyard.config import init_project, load_settings
from modelyard.models.runtimes import OnnxRuntime, open_serving_runtime
from modelyard.registry.client import ModelRegistry


def _graph() -> tuple[pd.DataFrame, bytes]:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    model = LogisticRegression().fit(frame.to_numpy(), (frame.a > 0).astype(int))
    graph = convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, 2]))],
        options={id(model): {"zipmap": False}},
    )
    return frame, graph.SerializeToString()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, in order, onnxruntime's telemetry switch and every session it opens.

    Both spies wrap onnxruntime's real objects (our code is not patched): a session
    that opened before telemetry went off shows up as "session" before "disable".
    """
    seen: list[str] = []
    real_disable = onnxruntime.disable_telemetry_events
    real_session = onnxruntime.InferenceSession

    def disable() -> None:
        seen.append("disable")
        real_disable()

    def session(*args: Any, **kwargs: Any) -> Any:
        seen.append("session")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", disable)
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return seen


def _every_session_after_disable(seen: list[str]) -> bool:
    return bool(seen) and all(
        "disable" in seen[:i] for i, what in enumerate(seen) if what == "session"
    )


def test_the_serving_runtime_turns_telemetry_off(calls: list[str]) -> None:
    _, graph = _graph()
    OnnxRuntime(graph, ["a", "b"], classification=True)
    assert "session" in calls
    assert _every_session_after_disable(calls), calls


def test_loading_an_onnx_package_and_serving_it_turn_telemetry_off(
    tmp_path: Path, calls: list[str]
) -> None:
    frame, graph = _graph()
    init_project(tmp_path)
    with ModelRegistry(load_settings(tmp_path, environ={})) as registry:
        logged = registry.log_model(graph, name="g", training_frame=frame)
        calls.clear()
        loaded = registry.load(str(logged.ref))
        open_serving_runtime(loaded, registry.artifacts)
    assert calls.count("session") >= 1
    assert _every_session_after_disable(calls), calls
