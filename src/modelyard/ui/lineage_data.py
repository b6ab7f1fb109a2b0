"""What the lineage page shows: the graph behind a model version, and what came after it.

``lineage_graph`` turns ``pipelines.lineage.lineage_of`` (a tree, walked backward from
the ref) into a graph laid out left to right: data digests and code (each step's
function, source hash and git commit) through the pipeline run's steps to the version.
A node the tree reached twice is drawn once. ``version_after`` adds, for a model
version, where it went: the aliases it holds and its alias moves (deployments), its
monitoring windows and incidents, and the agent's retrains that replaced it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, cast, func, select

from modelyard.config import Settings
from modelyard.pipelines.lineage import LineageNode, lineage_of
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.store.database import Database
from modelyard.store.monitor_results import MonitorResults
from modelyard.store.schema import monitor_windows
from modelyard.ui.graph_layout import GraphNode, layout
from modelyard.ui.model_data import agent_actions_of

__all__ = ["lineage_graph", "node_href", "version_after"]


def node_href(node: LineageNode) -> str | None:
    """Where a node's own page is: a version's, a pipeline run's or a run's."""
    if node.kind == "model":
        name, _, number = node.id.rpartition("/")
        return f"/models/{name}/{number}"
    if node.kind == "pipeline":
        return f"/pipelines/runs/{node.id}"
    if node.kind in ("step", "run"):
        return f"/runs/{node.id}"
    return None


def _sub(node: LineageNode) -> str:
    d = node.details
    if node.kind == "data":
        return f"sha256:{str(d.get('digest', node.id))[:12]}"
    if node.kind in ("step", "pipeline"):
        commit = d.get("git_commit")
        code = f"git {str(commit)[:8]}{'*' if d.get('git_dirty') else ''}" if commit else ""
        source = d.get("source_hash")
        if not code and source:
            code = f"source {str(source)[:8]}"
        return " · ".join(x for x in (str(d.get("status", "")), code) if x)
    if node.kind == "model":
        return str(d.get("status", ""))
    return str(d.get("state", d.get("status", "")))


def _title(node: LineageNode) -> str:
    return node.label


def lineage_graph(settings: Settings, db: Database, ref: str) -> dict[str, Any]:
    """The backward lineage of ``ref`` as a laid-out graph plus the tree's nodes' details."""
    found = lineage_of(settings, ref, db=db)
    nodes: dict[str, GraphNode] = {}
    details: dict[str, dict[str, Any]] = {}
    edges: list[tuple[str, str]] = []

    def key(node: LineageNode) -> str:
        return f"{node.kind}:{node.id}"

    def visit(node: LineageNode) -> None:
        k = key(node)
        if k not in nodes:
            nodes[k] = GraphNode(
                id=k,
                label=_short_label(node),
                css=f"lin-{node.kind}",
                href=node_href(node),
                sub=_sub(node),
                title=_title(node),
            )
            details[k] = {**node.details, "node": node.kind, "id": node.id, "label": node.label}
        for child in node.children:
            edges.append((key(child), k))  # upstream -> downstream: left to right
            visit(child)

    visit(found.root)
    # sources first, so the layout stacks the inputs of a layer in reading order
    ordered = list(reversed(list(nodes.values())))
    graph = layout(ordered, edges)
    kinds: dict[str, int] = {}
    for n in details.values():
        kinds[n["node"]] = kinds.get(n["node"], 0) + 1
    return {
        "ref": ref,
        "root": key(found.root),
        "graph": graph,
        "details": [details[n.id] for n in ordered],
        "kinds": kinds,
    }


def _short_label(node: LineageNode) -> str:
    d = node.details
    if node.kind == "model":
        return f"model {node.id}"
    if node.kind == "step":
        return f"step {d.get('step', node.id[:8])}"
    if node.kind == "pipeline":
        return f"pipeline {d.get('pipeline', node.id[:8])}"
    if node.kind == "data":
        name = d.get("as") or d.get("output")
        return f"{name} ({d.get('kind', 'data')})" if name else f"data ({d.get('kind', 'data')})"
    if node.kind == "run":
        return f"run {d.get('name') or node.id[:8]}"
    return node.label


def version_after(registry: ModelRegistry, db: Database, name: str, version: int) -> dict[str, Any]:
    """Where ``name/version`` went: aliases, alias moves, windows, incidents, retrains."""
    found = registry.get_version(ModelRef(name, version=version))
    moves = [
        e.to_dict()
        for e in registry.history(name)
        if e.alias is not None and version in (e.version_from, e.version_to)
    ]
    t = monitor_windows.c
    with db.read() as conn:
        windows = [
            {
                "kind": kind,
                "windows": int(n),
                "alarms": int(alarms or 0),
                "first_start_us": int(first),
                "last_end_us": int(last),
            }
            for kind, n, alarms, first, last in conn.execute(
                select(
                    t.kind,
                    func.count(),
                    func.sum(cast(t.alarm, Integer)),
                    func.min(t.window_start),
                    func.max(t.window_end),
                )
                .where(t.model == name, t.version == version)
                .group_by(t.kind)
                .order_by(t.kind)
            ).all()
        ]
    incidents = [i.to_dict() for i in MonitorResults(db).incidents(name, version)]
    actions = agent_actions_of(db, name, version=version)
    return {
        "version": found.to_dict(),
        "aliases": found.aliases,
        "moves": moves,
        "windows": windows,
        "incidents": incidents,
        "replaced_by": [a for a in actions if a["champion_version"] == version],
        "made_by": [a for a in actions if a["candidate_version"] == version],
    }
