"""The cheap objective both tuning sides minimise, and its search space.

A few microseconds of arithmetic, so what a tuning run costs beyond it is the tool's
overhead: sampling, storage, tracking. Each side times every call of the objective and
subtracts the sum from the wall time. Standard library only.
"""

from __future__ import annotations

import math
import time

__all__ = ["HIGH", "LOW", "Timer", "cheap"]

#: x in [LOW["x"], HIGH["x"]] (float), y in [LOW["y"], HIGH["y"]] (int)
LOW = {"x": -10.0, "y": -5}
HIGH = {"x": 10.0, "y": 5}


def cheap(x: float, y: int) -> float:
    """A bumpy bowl with its minimum near x=2, y=-1."""
    return (x - 2.0) ** 2 + (y + 1) ** 2 + math.sin(3.0 * x)


class Timer:
    """Adds up the seconds spent inside the objective."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: float, y: int) -> float:
        start = time.perf_counter()
        value = cheap(x, y)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return value
