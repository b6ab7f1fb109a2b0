"""The graph a pipeline builds: its steps as nodes, their outputs and who feeds whom.

A :class:`Graph` is what :meth:`modelyard.pipelines.Pipeline.build` returns: every step
call of the pipeline function as a :class:`StepNode` (in call order), each input as an
:class:`OutputRef` to an upstream node's output. The runner walks :meth:`Graph.order`.

>>> g = Graph("p", {}, {})
>>> g.order()
[]
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.pipelines.steps import Step

__all__ = ["Graph", "OutputRef", "OutputSpec", "StepNode"]


@dataclass(frozen=True)
class OutputSpec:
    """One output a step declares.

    ``name`` is ``"output"`` for a single output, the names of ``@step(outputs=...)`` or
    ``output_0``, ``output_1``... for a tuple; ``type`` the declared type (``Any`` when
    the function has no return annotation).
    """

    name: str
    type: Any


@dataclass(frozen=True)
class OutputRef:
    """What calling a step inside a ``@pipeline`` returns: one output of one node."""

    node: str
    output: str
    type: Any


@dataclass(frozen=True)
class StepNode:
    """One call of a step in a pipeline."""

    name: str  # unique in the graph: the step's name, then name_2, ... or with_options(id=)
    step: Step
    params: Mapping[str, Any]  # argument -> validated constant (JSON-able or pathlib.Path)
    inputs: Mapping[str, OutputRef]  # argument -> upstream output
    after: tuple[str, ...]  # extra ordering dependencies by node name
    outputs: tuple[OutputSpec, ...]


@dataclass(frozen=True)
class Graph:
    """The nodes of one pipeline built with one set of parameters."""

    pipeline: str
    params: Mapping[str, Any]  # the pipeline's validated parameters
    nodes: Mapping[str, StepNode] = field(default_factory=dict)  # in call order

    @cached_property
    def _upstream(self) -> dict[str, frozenset[str]]:
        return {
            name: frozenset({ref.node for ref in node.inputs.values()} | set(node.after))
            for name, node in self.nodes.items()
        }

    @cached_property
    def _downstream_direct(self) -> dict[str, set[str]]:
        direct: dict[str, set[str]] = {name: set() for name in self.nodes}
        for name, ups in self._upstream.items():
            for up in ups:
                direct.setdefault(up, set()).add(name)
        return direct

    @cached_property
    def _order(self) -> tuple[str, ...]:
        position = {name: i for i, name in enumerate(self.nodes)}
        waiting = {name: len(ups) for name, ups in self._upstream.items()}
        ready = [position[name] for name, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        names = list(self.nodes)
        order: list[str] = []
        while ready:
            name = names[heapq.heappop(ready)]
            order.append(name)
            for down in self._downstream_direct.get(name, ()):
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, position[down])
        if len(order) != len(
            self.nodes
        ):  # Pipeline.build refuses cycles; a hand-made graph may not
            stuck = sorted(set(self.nodes) - set(order))
            raise ValueError(f"The graph of {self.pipeline!r} has a cycle through {stuck}")
        return tuple(order)

    def order(self) -> list[str]:
        """The node names in topological order; among ready nodes, call order."""
        return list(self._order)

    def upstream(self, name: str) -> frozenset[str]:
        """The nodes ``name`` depends on directly (its inputs' producers and ``after``)."""
        return self._upstream[name]

    def downstream(self, name: str) -> frozenset[str]:
        """Every node that depends on ``name``, directly or through others."""
        _ = self._upstream[name]  # KeyError for an unknown node
        seen: set[str] = set()
        todo = [name]
        while todo:
            for down in self._downstream_direct.get(todo.pop(), ()):
                if down not in seen:
                    seen.add(down)
                    todo.append(down)
        return frozenset(seen)
