"""Micro-batching on a live server: concurrent requests coalesce; overload is a 429."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pandas as pd

from modelyard.config import BatchingSettings
from modelyard.models.runtimes import Inputs
from modelyard.serving.deployments import make_served

from .conftest import NAME, LiveServer, Project, ServeFactory, make_frame, records, serving

PREDICT = f"/v1/models/{NAME}:predict"


@dataclasses.dataclass
class _Slow:
    """The model's runtime, plus a fixed sleep per call (not per row): batching pays off."""

    inner: Any
    delay_s: float
    name: str = "slow"

    def scores(self, inputs: Inputs) -> np.ndarray:
        time.sleep(self.delay_s)
        return np.asarray(self.inner.scores(inputs))


def _slow_down(server: LiveServer, delay_s: float) -> None:
    state = server.state
    deployment = state.deployments[NAME]
    assert deployment.primary is not None
    old = deployment.primary
    model = dataclasses.replace(old.model, runtime=_Slow(old.model.runtime, delay_s))
    deployment.primary = make_served(model, state.settings.serving.batching, state._on_batch)
    old.close()


def test_concurrent_requests_are_coalesced_and_each_gets_its_own_rows(
    project: Project, serve: ServeFactory
) -> None:
    # a generous deadline: this test is about coalescing, not shedding
    batching = BatchingSettings(mode="on", max_batch_rows=64, max_delay_ms=5.0, timeout_ms=20_000)
    server = serve(serving(project.settings, batching=batching))
    _slow_down(server, 0.03)
    frame, _ = make_frame(seed=5, rows=96)
    chunks = [frame.iloc[i : i + 1 + i % 3] for i in range(0, 96, 3)]  # 1 to 3 rows each

    def ask(chunk: pd.DataFrame) -> tuple[int, list[float], str]:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answer = http.post(PREDICT, json={"instances": records(chunk)})
        probs = [p["probabilities"]["1"] for p in answer.json().get("predictions", [])]
        return answer.status_code, probs, answer.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(ask, chunks))
    for chunk, (status, probs, text) in zip(chunks, results, strict=True):
        assert status == 200, text
        np.testing.assert_allclose(probs, project.proba(1, chunk), atol=1e-6)

    batcher = server.state.deployments[NAME].primary.batcher  # type: ignore[union-attr]
    assert batcher is not None
    assert batcher.stats.rows == sum(len(c) for c in chunks)
    assert max(batcher.stats.sizes) > 3  # more than one request's rows in one call
    assert batcher.stats.batches < len(chunks)
    metrics = httpx.get(f"{server.url}/metrics").text
    big = [
        line
        for line in metrics.splitlines()
        if line.startswith("modelyard_batch_rows_bucket") and 'le="2.0"' in line
    ]
    count = [line for line in metrics.splitlines() if line.startswith("modelyard_batch_rows_count")]
    assert big and count
    assert float(big[0].split()[-1]) < float(count[0].split()[-1])  # some batches > 2 rows


def test_a_burst_past_the_queue_gets_429_with_retry_after_and_no_5xx(
    project: Project, serve: ServeFactory
) -> None:
    batching = BatchingSettings(mode="on", max_batch_rows=4, max_delay_ms=1.0, max_queue_rows=4)
    server = serve(serving(project.settings, batching=batching))
    _slow_down(server, 0.05)
    frame, _ = make_frame(seed=6, rows=64)
    chunks = [frame.iloc[i : i + 2] for i in range(0, 64, 2)]

    def ask(chunk: pd.DataFrame) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return http.post(PREDICT, json={"instances": records(chunk)})

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(ask, chunks))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0 and statuses.count(200) > 0
    for chunk, answer in zip(chunks, answers, strict=True):
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.json()["error"]["type"] == "overloaded"
        else:
            probs = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
            np.testing.assert_allclose(probs, project.proba(1, chunk), atol=1e-6)
    # after the burst it answers again
    assert (
        httpx.post(f"{server.url}{PREDICT}", json={"instances": records(frame.head(1))}).status_code
        == 200
    )
