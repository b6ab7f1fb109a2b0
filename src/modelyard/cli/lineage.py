"""``modelyard lineage REF [--forward] [--json]``: where a model or data came from or went."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, fmt_time, print_json
from modelyard.pipelines.lineage import LineageNode, lineage_of

_STYLE = {
    "model": "bold magenta",
    "pipeline": "bold",
    "step": "bold cyan",
    "run": "bold",
    "action": "bold green",
    "incident": "bold red",
}


def _details(node: LineageNode) -> list[str]:
    """The lines shown under a node: what it ran with and which code."""
    d = node.details
    lines: list[str] = []
    if node.kind in ("step", "run", "pipeline"):
        if d.get("params"):
            shown = ", ".join(f"{k}={v}" for k, v in dict(d["params"]).items())
            lines.append(f"params: {shown}")
        code = f"git {(d.get('git_commit') or '-')[:12]}" + (
            " (dirty)" if d.get("git_dirty") else ""
        )
        if d.get("source_hash"):
            code += f", source {d['source_hash'][:12]}"
        if d.get("function"):
            code += f", {d['function']}"
        lines.append(f"code: {code}")
        if d.get("cache_key"):
            lines.append(f"cache key: {d['cache_key'][:16]}")
        if d.get("started_at"):
            lines.append(f"started: {fmt_time(d['started_at'])}")
        if d.get("error"):
            lines.append(f"error: {' '.join(str(d['error']).split())}")
    elif node.kind == "model":
        lines.append(f"package {d.get('package_id', '-')[:16]}, by {d.get('created_by', '-')}")
    elif node.kind == "action":
        if d.get("gate_evaluation_id"):
            lines.append(f"gates: evaluation {d['gate_evaluation_id'][:12]}")
        if d.get("looks"):
            lines.append(f"canary: {d['looks']} look(s)")
        if d.get("reason"):
            lines.append(f"reason: {' '.join(str(d['reason']).split())}")
        lines.append("events: " + ", ".join(e["kind"] for e in d.get("events", [])))
    elif node.kind == "incident" and d.get("values") is not None:
        lines.append(f"values: {d['values']}")
    return lines


def _add(tree: Tree, node: LineageNode) -> None:
    branch = tree.add(Text(node.label, style=_STYLE.get(node.kind, "")))
    _fill(branch, node)


def _fill(branch: Tree, node: LineageNode) -> None:
    if node.seen:
        return
    for line in _details(node):
        branch.add(Text(line, style="dim"))
    for child in node.children:
        _add(branch, child)


def lineage(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            help="A model ref (name/3, name@alias, name:3), a run id or a data digest "
            "(or a prefix of 8+ characters)."
        ),
    ],
    forward: Annotated[
        bool,
        typer.Option("--forward", help="What was made from REF (steps, outputs, model versions)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Where REF came from (backward: inputs, params, code) or, with --forward, where it went."""
    found = lineage_of(settings_from(ctx), ref, forward=forward)
    if as_json:
        data: dict[str, Any] = found.to_dict()
        print_json(data)
        return
    root = found.root
    tree = Tree(Text(root.label, style=_STYLE.get(root.kind, "bold")))
    _fill(tree, root)
    console.print(tree, soft_wrap=True)
