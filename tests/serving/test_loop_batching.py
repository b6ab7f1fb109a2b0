"""Coalescing on the event loop (``batching.mode: auto`` for a fast model), in process.

A request alone in the worker is scored at once in its own task (no loop turn to wait
for: nobody could join it); requests that arrive together share one model call, each
getting its own rows; both count as batches in the statistics and the metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import numpy as np
import pandas as pd

from modelyard.config import BatchingSettings
from modelyard.models.runtimes import Inputs
from modelyard.serving.app import create_app
from modelyard.serving.batching import LoopBatcher
from modelyard.serving.deployments import make_served

from .conftest import NAME, Project, make_frame, records, serving

PREDICT = f"/v1/models/{NAME}:predict"


@dataclasses.dataclass
class _Watched:
    """The model's runtime, noting the task each call ran in (None: a loop callback)."""

    inner: Any
    tasks: list[asyncio.Task[Any] | None]
    name: str = "watched"

    def scores(self, inputs: Inputs) -> np.ndarray:
        self.tasks.append(asyncio.current_task())
        return np.asarray(self.inner.scores(inputs))


async def _scenario(project: Project, chunks: list[pd.DataFrame], together: bool) -> Any:
    settings = serving(project.settings, batching=BatchingSettings(mode="auto"))
    app = create_app(settings, [NAME], environ={})
    tasks: list[asyncio.Task[Any] | None] = []
    async with app.router.lifespan_context(app):
        state = app.state.server
        deployment = state.deployments[NAME]
        old = deployment.primary
        # measured fast at warm-up (the auto mode's choice), whatever this machine's speed
        watched = _Watched(old.model.runtime, tasks)
        model = dataclasses.replace(old.model, runtime=watched, row_latency_us=1.0)
        deployment.primary = make_served(model, settings.serving.batching, state._on_batch)
        old.close()
        batcher = deployment.primary.batcher
        assert isinstance(batcher, LoopBatcher)  # a fast model: coalesced on the loop
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def ask(chunk: pd.DataFrame) -> httpx.Response:
                return await http.post(PREDICT, json={"instances": records(chunk)})

            if together:
                answers = await asyncio.gather(*(ask(c) for c in chunks))
            else:
                answers = [await ask(c) for c in chunks]
            metrics = (await http.get("/metrics")).text
    return answers, batcher.stats, tasks, metrics


def _check_answers(project: Project, chunks: list[pd.DataFrame], answers: Any) -> None:
    for chunk, answer in zip(chunks, answers, strict=True):
        assert answer.status_code == 200, answer.text
        probs = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(probs, project.proba(1, chunk), atol=1e-6)


def _batch_count(metrics: str) -> float:
    lines = [x for x in metrics.splitlines() if x.startswith("modelyard_batch_rows_count")]
    assert lines, metrics[:500]
    return float(lines[0].rsplit(" ", 1)[1])


def test_a_lone_request_is_scored_at_once_in_its_own_task(project: Project) -> None:
    frame, _ = make_frame(seed=3, rows=18)
    chunks = [frame.iloc[i : i + 1 + i % 2] for i in range(0, 18, 3)]  # 1 or 2 rows
    answers, stats, tasks, metrics = asyncio.run(_scenario(project, chunks, together=False))
    _check_answers(project, chunks, answers)
    assert stats.batches == len(chunks) and list(stats.sizes) == [len(c) for c in chunks]
    assert all(task is not None for task in tasks)  # no loop turn: the request's own task
    assert _batch_count(metrics) >= len(chunks)


def test_requests_arriving_together_share_a_call_each_with_its_own_rows(
    project: Project,
) -> None:
    frame, _ = make_frame(seed=4, rows=30)
    chunks = [frame.iloc[i : i + 1 + i % 3] for i in range(0, 30, 3)]
    answers, stats, tasks, _ = asyncio.run(_scenario(project, chunks, together=True))
    _check_answers(project, chunks, answers)
    assert stats.rows == sum(len(c) for c in chunks)
    assert stats.batches < len(chunks) and max(stats.sizes) > 3  # several requests' rows
    assert None in tasks  # a shared call runs from the loop's turn, not a request's task
