"""Lay out a directed graph in topological layers, for an SVG the template draws.

A node's layer is the length of the longest path reaching it from a source, so every
edge points to a later layer (left to right); nodes in a layer are stacked in the order
given. The answer holds only numbers and text: the template writes the SVG elements
(autoescaped), nothing here builds markup.

>>> g = layout([GraphNode("a", "load"), GraphNode("b", "train"), GraphNode("c", "eval")],
...            [("a", "b"), ("a", "c"), ("b", "c")])
>>> [(n["id"], n["layer"]) for n in g["nodes"]]
[('a', 0), ('b', 1), ('c', 2)]
>>> len(g["edges"]), g["width"] > 0
(3, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GraphNode", "layout", "layers_of"]

NODE_W = 190
NODE_H = 46
GAP_X = 70
GAP_Y = 22
MARGIN = 12
#: characters of a label that fit a node's width
LABEL_CHARS = 26


@dataclass(frozen=True)
class GraphNode:
    """One box: ``id`` (unique), its label, a CSS class, a link and a second line."""

    id: str
    label: str
    css: str = ""
    href: str | None = None
    sub: str = ""
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def layers_of(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: the longest path to it from a node with no incoming edge; a
    node with no incoming edge goes one layer before its earliest consumer.

    Edges naming unknown nodes are ignored; nodes on a cycle (never expected: lineage
    and step graphs are acyclic) go one layer after everything else, so nothing is lost.
    """
    known = set(ids)
    incoming: dict[str, int] = dict.fromkeys(ids, 0)
    out: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in dict.fromkeys(edges):  # duplicates once
        if a in known and b in known and a != b:
            out[a].append(b)
            incoming[b] += 1
    layer = dict.fromkeys(ids, 0)
    ready = [i for i in ids if incoming[i] == 0]
    done: set[str] = set()
    while ready:
        node = ready.pop(0)
        done.add(node)
        for nxt in out[node]:
            layer[nxt] = max(layer[nxt], layer[node] + 1)
            incoming[nxt] -= 1
            if incoming[nxt] == 0:
                ready.append(nxt)
    if len(done) < len(ids):
        last = max((layer[i] for i in done), default=-1) + 1
        for i in ids:
            if i not in done:
                layer[i] = last
        return layer
    # a source feeding only later layers sits just before its first consumer, so its
    # edge does not run behind the boxes between (an agent action beside its version)
    fed = {b for targets in out.values() for b in targets}
    for i in ids:
        if i not in fed and out[i]:
            layer[i] = max(layer[i], min(layer[b] for b in out[i]) - 1)
    return layer


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def layout(nodes: Sequence[GraphNode], edges: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Positions of ``nodes`` and SVG paths of ``edges`` (``from`` -> ``to``)."""
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError("node ids must be unique")
    layer = layers_of(ids, edges)
    rows: dict[int, int] = {}
    placed: dict[str, dict[str, Any]] = {}
    for n in nodes:
        col = layer[n.id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        placed[n.id] = {
            "id": n.id,
            "label": _short(n.label),
            "full_label": n.label,
            "sub": _short(n.sub),
            "title": n.title or n.label,
            "css": n.css,
            "href": n.href,
            "layer": col,
            "x": MARGIN + col * (NODE_W + GAP_X),
            "y": MARGIN + row * (NODE_H + GAP_Y),
            "w": NODE_W,
            "h": NODE_H,
            **n.extra,
        }
    drawn = []
    for a, b in dict.fromkeys(edges):
        if a not in placed or b not in placed or a == b:
            continue
        s, t = placed[a], placed[b]
        x1, y1 = s["x"] + NODE_W, s["y"] + NODE_H / 2
        x2, y2 = t["x"], t["y"] + NODE_H / 2
        mid = (x1 + x2) / 2
        drawn.append(
            {
                "from": a,
                "to": b,
                "d": f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}",
            }
        )
    columns = max(layer.values(), default=-1) + 1
    tallest = max(rows.values(), default=0)
    return {
        "nodes": list(placed.values()),
        "edges": drawn,
        "width": 2 * MARGIN + max(columns, 1) * NODE_W + max(columns - 1, 0) * GAP_X,
        "height": 2 * MARGIN + max(tallest, 1) * NODE_H + max(tallest - 1, 0) * GAP_Y,
    }
