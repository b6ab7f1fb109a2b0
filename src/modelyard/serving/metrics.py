"""Prometheus metrics of the server, per model and version.

Requests and errors are counted by protocol, status and error type; latency is split
into the phases of a request (``queue``: waiting for a batch, ``decode`` and
``validate``, ``lookup`` of online features, ``predict``, ``encode``, ``log``: the
durable prediction log) so a slow p99 points at its cause. With several worker
processes, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``modelyard serve`` and ``/metrics``
aggregates every worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Answered", "ServerMetrics"]

#: the phases of an answered request, in the order ``Answered.observe`` takes them
PHASES = ("decode", "lookup", "validate", "queue", "predict", "encode", "log")

_PHASE_BUCKETS = (
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Answered:
    """The metric children one kind of answered request updates (model, version,
    protocol, route), looked up once: ``labels()`` costs microseconds per call."""

    phases: tuple[Any, ...]
    requests: Any
    rows: Any

    def observe(self, seconds: tuple[float, ...], rows: int) -> None:
        """Count one answered request of ``rows`` rows; ``seconds`` per phase (``PHASES``)."""
        for child, value in zip(self.phases, seconds, strict=True):
            child.observe(value)
        self.requests.inc()
        self.rows.inc(rows)


class ServerMetrics:
    """The server's metric families, in their own registry (tests make many servers)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        # In multiprocess mode values go to files and a collector reads them all back.
        target = None if self.multiprocess else self.registry
        self.requests = Counter(
            "modelyard_requests",
            "Prediction requests answered",
            ["model", "version", "protocol", "status"],
            registry=target,
        )
        self.errors = Counter(
            "modelyard_errors",
            "Requests that failed, by error type",
            ["model", "type"],
            registry=target,
        )
        self.rows = Counter(
            "modelyard_rows", "Rows predicted", ["model", "version", "route"], registry=target
        )
        self.latency = Histogram(
            "modelyard_phase_seconds",
            "Time spent per phase of a request",
            ["model", "version", "phase"],
            buckets=_PHASE_BUCKETS,
            registry=target,
        )
        self.batch_rows = Histogram(
            "modelyard_batch_rows",
            "Rows per model call",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=target,
        )
        self.loaded = Gauge(
            "modelyard_model_loaded",
            "1 for each model version being served, by route",
            ["model", "version", "route"],
            registry=target,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "modelyard_swaps",
            "Alias moves handled, by outcome",
            ["model", "outcome"],
            registry=target,
        )
        # the latest monitored window of each served version (``modelyard monitor``):
        # effect / threshold per feature and output, so > 1 means past the threshold
        self.feature_drift = Gauge(
            "modelyard_feature_drift",
            "Drift of each feature in the latest monitored window: effect / threshold",
            ["model", "version", "feature"],
            registry=target,
            multiprocess_mode="max",
        )
        self.feature_drifted = Gauge(
            "modelyard_feature_drifted",
            "1 when the feature drifted in the latest monitored window",
            ["model", "version", "feature"],
            registry=target,
            multiprocess_mode="max",
        )
        self.prediction_drift = Gauge(
            "modelyard_prediction_drift",
            "Drift of each model output in the latest monitored window: effect / threshold",
            ["model", "version", "output"],
            registry=target,
            multiprocess_mode="max",
        )
        self.drift_window_end = Gauge(
            "modelyard_drift_window_end_seconds",
            "End of the latest monitored window (Unix seconds)",
            ["model", "version"],
            registry=target,
            multiprocess_mode="max",
        )
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self._answered: dict[tuple[str, str, str, str], Answered] = {}

    def answered(self, model: str, version: str, protocol: str, route: str) -> Answered:
        """The children a 200 answer of ``model`` ``version`` over ``protocol`` updates."""
        key = (model, version, protocol, route)
        found = self._answered.get(key)
        if found is None:
            found = Answered(
                phases=tuple(self.latency.labels(model, version, p) for p in PHASES),
                requests=self.requests.labels(model, version, protocol, "200"),
                rows=self.rows.labels(model, version, route),
            )
            self._answered[key] = found
        return found

    def export_drift(self, model: str, version: int, end_us: int, summary: dict[str, Any]) -> None:
        """Set the drift gauges of one version from a stored drift window's summary."""
        label = str(version)
        for gauge, key, field in (
            (self.feature_drift, "columns", "feature"),
            (self.prediction_drift, "outputs", "output"),
        ):
            for name, column in summary.get(key, {}).items():
                effect, threshold = column.get("effect"), column.get("threshold")
                if effect is None or not threshold:
                    continue
                gauge.labels(model, label, name).set(effect / threshold)
                if field == "feature":
                    self.feature_drifted.labels(model, label, name).set(
                        1.0 if column.get("drifted") else 0.0
                    )
        self.drift_window_end.labels(model, label).set(end_us / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
