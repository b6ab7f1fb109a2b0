"""The latest monitored drift window of each served version, on the server's /metrics."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from modelyard.store.monitor_results import MonitorResults, WindowResult
from tests.serving.conftest import NAME, Project, ServeFactory, serving

DAY_US = 86_400_000_000


def _window(day: int, amount_effect: float) -> WindowResult:
    summary = {
        "columns": {
            "amount": {"effect": amount_effect, "threshold": 0.1, "drifted": amount_effect > 0.1},
            "age": {"effect": 0.02, "threshold": 0.1, "drifted": False},
            "plan": {"effect": None, "threshold": 0.1, "drifted": False},  # not computed
        },
        "outputs": {"proba_1": {"effect": 0.3, "threshold": 0.1, "drifted": True}},
    }
    return WindowResult(NAME, 1, "drift", day * DAY_US, (day + 1) * DAY_US, 100, True, summary)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_drift_gauges_follow_the_latest_stored_window(
    project: Project, serve: ServeFactory
) -> None:
    results = MonitorResults(project.registry.db)
    results.save_windows([_window(1, 0.05), _window(2, 0.25)])  # day 2 is the latest
    server = serve(serving(project.settings, watch_interval_s=0.2))
    labels = (("feature", "amount"), ("model", NAME), ("version", "1"))
    with server.client() as client:
        samples = _samples(client.get("/metrics").text)
        assert samples[("modelyard_feature_drift", labels)] == 0.25 / 0.1
        assert samples[("modelyard_feature_drifted", labels)] == 1.0
        age = (("feature", "age"), ("model", NAME), ("version", "1"))
        assert samples[("modelyard_feature_drifted", age)] == 0.0
        output = (("model", NAME), ("output", "proba_1"), ("version", "1"))
        assert samples[("modelyard_prediction_drift", output)] == 0.3 / 0.1
        assert samples[("modelyard_drift_window_end_seconds", labels[1:])] == 3 * 86_400
        assert not any(dict(key[1]).get("feature") == "plan" for key in samples)

        results.save_window(_window(3, 0.04))  # a newer, calm window
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            samples = _samples(client.get("/metrics").text)
            if samples[("modelyard_feature_drifted", labels)] == 0.0:
                break
            time.sleep(0.1)
        assert samples[("modelyard_feature_drifted", labels)] == 0.0
        assert samples[("modelyard_feature_drift", labels)] == 0.04 / 0.1
