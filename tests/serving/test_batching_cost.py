"""Batch admission by a fitted cost model: fixed cost per call plus cost per row."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from modelyard.models.runtimes import Inputs
from modelyard.serving.batching import BatchCost, Batcher, Overloaded


def _inputs(rows: int) -> Inputs:
    column = np.arange(rows, dtype=np.float64)
    return Inputs(names=("x",), columns=(column,), matrix=column.reshape(-1, 1))


@pytest.mark.parametrize(("fixed", "per_row"), [(0.01, 0.001), (0.05, 0.0), (0.0, 0.002)])
def test_the_fit_equals_least_squares(fixed: float, per_row: float) -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 65, size=40)
    seconds = fixed + per_row * sizes + rng.normal(0, 1e-4, size=sizes.size)
    cost = BatchCost(decay=1.0)  # no decay: plain least squares
    for rows, spent in zip(sizes.tolist(), seconds.tolist(), strict=True):
        cost.observe(rows, spent)
    slope, intercept = np.polyfit(sizes, seconds, 1)
    assert cost.per_row_s == pytest.approx(max(0.0, slope), abs=1e-9)
    assert cost.fixed_s == pytest.approx(max(0.0, intercept), abs=1e-9)
    assert cost.seconds(100, 64) == pytest.approx(
        2 * cost.fixed_s + 100 * cost.per_row_s, rel=1e-12
    )


def test_a_model_with_a_large_fixed_cost_is_not_shed_early() -> None:
    """30 ms per call whatever the rows: 200 queued rows are 4 calls, 0.12 s < 0.5 s."""

    def predict(inputs: Inputs) -> dict[str, np.ndarray]:
        time.sleep(0.03)
        return {"y": inputs.columns[0] * 2}

    async def main() -> tuple[int, int, list[np.ndarray]]:
        batcher = Batcher(
            predict, max_batch_rows=64, max_delay_s=0.002, max_queue_rows=10_000, timeout_s=0.5
        )
        try:
            # calls of 1 and of 64 rows teach it the cost is per call
            await batcher.submit(_inputs(1))
            await asyncio.gather(*(batcher.submit(_inputs(1)) for _ in range(64)))
            assert batcher._cost.fixed_s > 0.02
            results = await asyncio.gather(
                *(batcher.submit(_inputs(20)) for _ in range(10)), return_exceptions=True
            )
        finally:
            batcher.close()
        shed = sum(isinstance(r, Overloaded) for r in results)
        answers = [r["y"] for r in results if isinstance(r, dict)]
        return shed, len(answers), answers

    shed, answered, answers = asyncio.run(main())
    assert shed == 0 and answered == 10
    for y in answers:
        np.testing.assert_array_equal(y, np.arange(20) * 2.0)


def test_a_slow_per_row_model_is_still_shed() -> None:
    """10 ms per row: 1,000 queued rows are 10 s, far past a 0.2 s deadline."""
    cost = BatchCost()
    for rows in (1, 8, 32, 4):
        cost.observe(rows, 0.01 * rows)
    assert cost.seconds(1000, 64) == pytest.approx(10.0, rel=1e-6)
