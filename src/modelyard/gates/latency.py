"""The latency gate: p50/p99 of the runtime the server would use, at each batch size.

The candidate is opened exactly as ``modelyard serve`` opens it
(:func:`modelyard.models.runtimes.open_serving_runtime` with the project's
``serving.runtime``), with the serving worker's thread settings (OpenMP and BLAS pools
pinned to one thread; onnxruntime sessions with the serving options), and fed arrays built
from the evaluation rows the way the server builds a request
(:func:`modelyard.models.runtimes.build_inputs` with the candidate's signature). Each
timed call scores a different slice of the rows (cycling when there are fewer rows than
calls), so a budget is checked on the data, not on one cached row.

Timing reuses ``models.optimize`` (``call_times_ns``, ``one_thread``): ``models optimize``
and this gate measure the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError, ModelyardError
from modelyard.gates.base import GateContext, GateResult, result_of
from modelyard.gates.candidate_runtime import features, serving_runtime, signature_of
from modelyard.models.optimize import call_times_ns, one_thread
from modelyard.models.runtimes import Inputs, build_inputs

__all__ = ["LatencyGate"]

#: timed calls at batch size 1 unless told otherwise
DEFAULT_REPEATS = 200
#: at least this many timed calls at any batch size (a p99 needs some tail)
MIN_REPEATS = 50
#: timing one batch size stops after this many seconds of calls (and ``MIN_REPEATS`` calls)
MAX_SECONDS_PER_BATCH = 5.0


def _ms(values_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(values_ns, q)) / 1e6


class LatencyGate:
    """p50/p99 (and mean) of the candidate's serving runtime per batch size, vs budgets.

    ``repeats`` timed calls at batch size 1; a batch of ``b`` rows gets
    ``max(50, repeats / sqrt(b))`` (a big batch is slower and steadier). ``warmup``
    untimed calls come first at each batch size. A budget left ``None`` is only measured.
    Fails naming the batch size and the budget exceeded.
    """

    kind = "latency"

    def __init__(
        self,
        batch_sizes: Sequence[int] = (1, 256),
        p50_ms: float | None = None,
        p99_ms: float | None = None,
        repeats: int = DEFAULT_REPEATS,
        warmup: int = 3,
        *,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        sizes = [int(b) for b in batch_sizes]
        if not sizes or any(b < 1 for b in sizes):
            raise InvalidInputError(
                f"Expected batch sizes of at least 1, got {list(batch_sizes)}", loc="batch_sizes"
            )
        if repeats < 1:
            raise InvalidInputError(f"Expected repeats >= 1, got {repeats}", loc="repeats")
        if warmup < 0:
            raise InvalidInputError(f"Expected warmup >= 0, got {warmup}", loc="warmup")
        self.batch_sizes = tuple(sizes)
        self.p50_ms = p50_ms
        self.p99_ms = p99_ms
        self.repeats = repeats
        self.warmup = warmup
        self.name = name or "latency"
        self.required = required

    def repeats_for(self, batch_size: int) -> int:
        """Timed calls at ``batch_size``."""
        if batch_size == 1:
            return self.repeats
        return max(min(MIN_REPEATS, self.repeats), round(self.repeats / math.sqrt(batch_size)))

    def _result(
        self,
        passed: bool,
        summary: str,
        numbers: Mapping[str, Any],
        details: tuple[Mapping[str, Any], ...] = (),
    ) -> GateResult:
        return result_of(self, passed, summary, numbers, details)

    def _budgets(self) -> dict[str, float | None]:
        return {"p50_ms_budget": self.p50_ms, "p99_ms_budget": self.p99_ms}

    def evaluate(self, ctx: GateContext) -> GateResult:
        try:
            runtime = serving_runtime(ctx)
            inputs = build_inputs(signature_of(ctx), features(ctx))
        except ModelyardError as exc:
            return self._result(False, f"cannot time the serving runtime: {exc}", self._budgets())
        if inputs.rows == 0:
            return self._result(False, "no evaluation rows to time", self._budgets())
        numbers: dict[str, Any] = {"runtime": runtime.name, **self._budgets()}
        details: list[dict[str, Any]] = []
        over: list[str] = []
        with one_thread():
            for size in self.batch_sizes:
                batches = _batches(inputs, size, self.repeats_for(size))
                try:
                    times = call_times_ns(
                        runtime,
                        batches,
                        warmup=self.warmup,
                        max_seconds=MAX_SECONDS_PER_BATCH,
                        min_calls=min(MIN_REPEATS, len(batches)),
                    )
                except Exception as exc:  # a runtime failing on the rows is a verdict
                    summary = f"{runtime.name} failed at batch {size}: {type(exc).__name__}: {exc}"
                    return self._result(False, summary, numbers, tuple(details))
                row = {
                    "batch_size": size,
                    "p50_ms": _ms(times, 50),
                    "p99_ms": _ms(times, 99),
                    "mean_ms": float(times.mean()) / 1e6,
                    "calls": len(times),
                }
                details.append(row)
                for key in ("p50_ms", "p99_ms", "mean_ms", "calls"):
                    numbers[f"{key}@{size}"] = row[key]
                for key, budget in (("p50_ms", self.p50_ms), ("p99_ms", self.p99_ms)):
                    if budget is not None and not row[key] <= budget:
                        quantile = key.split("_")[0]
                        over.append(
                            f"batch {size}: {quantile} {row[key]:.3g} ms > {budget:g} ms budget"
                        )
        measured = ", ".join(
            f"batch {d['batch_size']}: p50 {d['p50_ms']:.3g} ms, p99 {d['p99_ms']:.3g} ms"
            for d in details
        )
        if over:
            return self._result(
                False, f"{runtime.name} " + "; ".join(over), numbers, tuple(details)
            )
        return self._result(True, f"{runtime.name} {measured}", numbers, tuple(details))


def _batches(inputs: Inputs, size: int, count: int) -> list[Inputs]:
    """``count`` batches of ``size`` consecutive rows, cycling through ``inputs``.

    At most as many distinct batches as it takes to cover the rows once are built (then
    reused), so a big batch size on many rows does not copy the rows ``count`` times.
    """
    rows = inputs.rows
    distinct = min(count, max(1, math.ceil(rows / size)))
    pool = [inputs.take((i * size + np.arange(size)) % rows) for i in range(distinct)]
    return [pool[i % distinct] for i in range(count)]
