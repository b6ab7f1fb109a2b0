"""The flights pipeline as a Metaflow flow: ``python metaflow_flow.py run --data PATH``.

Metaflow needs a ``start`` and an ``end`` step: ``start`` loads, ``end`` evaluates, so the
flow has the same 5 steps as the others. Copied beside ``common.py`` into a work folder
and run there with the Metaflow venv's python (local runtime, local datastore).
"""

from __future__ import annotations

import common
from metaflow import FlowSpec, Parameter, step


class FlightsFlow(FlowSpec):
    data = Parameter("data", type=str, required=True, help="the flights CSV")
    max_depth = Parameter("max_depth", type=int, default=6)
    test_month = Parameter("test_month", type=int, default=2)

    @step
    def start(self) -> None:  # load
        self.frame = common.load(self.data)
        self.next(self.features)

    @step
    def features(self) -> None:
        self.table = common.features(self.frame)
        self.next(self.split)

    @step
    def split(self) -> None:
        self.train_frame, self.test_frame = common.split(self.table, self.test_month)
        self.next(self.train)

    @step
    def train(self) -> None:
        self.model = common.train(self.train_frame, self.max_depth)
        self.next(self.end)

    @step
    def end(self) -> None:  # evaluate
        self.metrics = common.evaluate(self.model, self.test_frame)


if __name__ == "__main__":
    FlightsFlow()
