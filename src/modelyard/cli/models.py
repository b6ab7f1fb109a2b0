"""``modelyard models list|show|register|alias|promote|approve|unalias|rollback|archive``
and ``models history`` (alias moves, gate evaluations and the agent's events)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.agent.records import ActionStore
from modelyard.cli.agent_events import agent_rows
from modelyard.cli.context import settings_from
from modelyard.cli.output import console, fmt_time, fmt_value, parse_time, print_json
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.store.database import open_database

if TYPE_CHECKING:
    from modelyard.registry.promotion import Evidence

app = typer.Typer(help="Model packages, versions and aliases.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-m", help="Why; recorded in the audit trail.")
]


def registry_from(ctx: typer.Context) -> ModelRegistry:
    registry = ModelRegistry(settings_from(ctx))
    ctx.find_root().call_on_close(registry.close)
    return registry


@app.command("list")
def list_models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Registered models with their latest version and aliases."""
    models = registry_from(ctx).list_models()
    if as_json:
        print_json([m.to_dict() for m in models])
        return
    if not models:
        console.print("No registered models. Log one with modelyard.log_model(model, name=...).")
        return
    table = Table(title=f"{len(models)} model(s)", title_justify="left")
    for col in ("name", "latest", "aliases", "updated"):
        table.add_column(col)
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.aliases.items()) or "-"
        table.add_row(
            escape(m.name), str(m.latest_version or "-"), escape(aliases), fmt_time(m.updated_at)
        )
    console.print(table)


def _show_table(title: str, rows: list[tuple[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("value")
    for key, value in rows:
        table.add_row(escape(key), escape(fmt_value(value)))
    console.print(table)


@app.command("show")
def show_model(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name/3, name@alias or name@latest")],
    as_json: JsonOpt = False,
) -> None:
    """A version's manifest: signature, metrics, lineage, aliases, runtimes."""
    registry = registry_from(ctx)
    version = registry.get_version(ref)
    manifest = registry.manifest(ModelRef(version.name, version=version.version))
    evidence = registry.evidence(version)
    if as_json:
        import msgspec

        print_json(
            {
                "version": version.to_dict(),
                "manifest": msgspec.to_builtins(manifest),
                "evidence": [e.to_dict() for e in evidence],
            }
        )
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    for key, value in (
        ("model", f"{version.name}/{version.version}"),
        ("status", version.status),
        ("aliases", ", ".join(version.aliases) or "-"),
        ("flavor", f"{manifest.flavor} ({manifest.model_class})"),
        ("task", manifest.task + (f", classes {manifest.classes}" if manifest.classes else "")),
        ("package", version.package_id),
        ("run", manifest.lineage.run_id or "-"),
        ("imported from", manifest.lineage.imported_from or "-"),
        ("registered", f"{fmt_time(version.created_at)} by {version.created_by}"),
        ("serving runtime", manifest.serving_runtime),
        ("requirements", ", ".join(f"{k}=={v}" for k, v in manifest.requirements.items())),
    ):
        info.add_row(key, escape(str(value)))
    console.print(info)
    if manifest.signature is not None:
        table = Table(title="signature", title_justify="left")
        for header in ("column", "type", "nullable", "range / categories"):
            table.add_column(header)
        for spec in manifest.signature.columns:
            if spec.categories is not None:
                shown = ", ".join(spec.categories[:6]) + (
                    " ..." if len(spec.categories) > 6 else ""
                )
            elif spec.min is not None:
                shown = f"{fmt_value(spec.min)} .. {fmt_value(spec.max)}"
            else:
                shown = "-"
            table.add_row(
                escape(spec.name), spec.dtype, "yes" if spec.nullable else "no", escape(shown)
            )
        console.print(table)
    if manifest.metrics:
        _show_table("metrics", list(manifest.metrics.items()))
    if manifest.lineage.datasets:
        _show_table(
            "lineage: data sets",
            [(f"{d.context}:{d.name}", d.digest[:16]) for d in manifest.lineage.datasets],
        )
    if manifest.runtimes:
        table = Table(title="runtimes", title_justify="left")
        for col in ("runtime", "status", "max |diff|", "flips", "1 row", "1000 rows"):
            table.add_column(
                col,
                justify="right" if col not in ("runtime", "status") else "left",
                no_wrap=col != "status",
                min_width=6 if col == "status" else None,
            )
        for r in manifest.runtimes:
            mark = " *" if r.name == manifest.serving_runtime else ""
            table.add_row(
                escape(r.name + mark),
                escape(r.status if r.reason is None else f"{r.status}: {r.reason}"),
                fmt_value(r.max_abs_diff, digits=2),
                fmt_value(r.label_flips),
                "-" if r.latency_1_row_us is None else f"{r.latency_1_row_us:.0f} us",
                "-"
                if r.latency_1000_rows_us is None
                else f"{r.latency_1000_rows_us / 1000:.1f} ms",
            )
        console.print(table)
    _print_evidence(evidence)


def _print_evidence(evidence: list[Evidence]) -> None:
    """The latest gate evaluation against each alias, and whether it allows a promotion."""
    if not evidence:
        console.print("gates: no evaluation yet (run modelyard gate REF)")
        return
    table = Table(title="gate evidence", title_justify="left")
    for col in ("against", "champion", "evaluated", "evaluation", "state", "why"):
        table.add_column(col)
    colour = {"passed": "green", "failed": "red", "stale": "yellow", "missing": "red"}
    for e in evidence:
        report = e.report
        table.add_row(
            escape(e.alias),
            "-" if report is None else fmt_value(report.champion_version),
            "-" if report is None else fmt_time(report.created_at),
            "-" if report is None else report.id[:12],
            f"[{colour[e.state]}]{e.state}[/]",
            escape("; ".join([e.why, *e.failed])),
        )
    console.print(table)


@app.command("register")
def register(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A run id (its last logged model) or package id.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
    description: Annotated[str | None, typer.Option(help="A note on this version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a run's model (or a package) as the next version of NAME."""
    version = registry_from(ctx).register(source, name, description=description)
    if as_json:
        print_json(version.to_dict())
        return
    console.print(f"Registered [bold]{escape(version.ref)}[/] (package {version.package_id[:12]})")


@app.command("alias")
def set_alias(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: name/3 or name@other-alias.")],
    alias: Annotated[str, typer.Argument(help="The alias to point at it, e.g. production.")],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS at the version REF names (atomic, audited)."""
    registry = registry_from(ctx)
    version = registry.get_version(ref)
    previous = registry.set_alias(version.ref, alias, reason=reason)
    if as_json:
        print_json(
            {"name": version.name, "alias": alias, "version": version.version, "previous": previous}
        )
        return
    moved = f" (was {previous})" if previous is not None else ""
    console.print(f"{escape(version.name)}@{escape(alias)} → {version.version}{moved}")


@app.command("promote")
def promote(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The version: name/3 or name@other-alias.")],
    to: Annotated[str, typer.Option("--to", help="The alias to move, e.g. production.")],
    force: Annotated[
        bool, typer.Option("--force", help="Move it without passing, fresh evidence.")
    ] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move alias --to to REF when REF's required gates passed against its holder.

    Refused, exit 1 (a check failed), when there is no gate evaluation of REF against
    the alias (run modelyard gate REF --against ALIAS), a required gate failed, or the
    evidence is stale (the alias moved or the gate config changed since). --force
    --reason TEXT overrides; the audit trail records who, why and that it was forced.
    """
    done = registry_from(ctx).promote_with_evidence(ref, to, force=force, reason=reason)
    if as_json:
        print_json(done.to_dict())
        return
    moved = f" (was {done.previous})" if done.previous is not None else ""
    how = (
        f"forced over {done.evidence.state} evidence"
        if done.forced
        else f"gates passed, evaluation {done.evidence.report.id if done.evidence.report else '-'}"
    )
    console.print(
        f"{escape(done.version.name)}@{escape(to)} → {done.version.version}{moved}: {escape(how)}"
    )


@app.command("approve")
def approve(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The candidate waiting for approval: name/3.")],
    reason: ReasonOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="The agent's clock, ISO with a zone (when replaying)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Let the agent go on with candidate REF (agent.models.NAME.approve: manual): it
    becomes the canary now.

    Refused, exit 2, when no agent action of REF awaits approval (its state is named).
    """
    # imported here, not at the top: the agent's loop pulls in monitoring, gates and
    # pipelines, which no other models command needs (they start in a fraction of that)
    from modelyard.agent.loop import approve as approve_action

    action = approve_action(
        settings_from(ctx), ref, reason=reason, now=parse_time(as_of, "--as-of")
    )
    if as_json:
        print_json(action.to_dict())
        return
    console.print(
        f"Approved {escape(action.model)}/{action.candidate_version}: action "
        f"{action.id[:12]} is {action.state} (modelyard agent show {action.id[:12]})"
    )


@app.command("unalias")
def remove_alias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    alias: Annotated[str, typer.Argument()],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove ALIAS from model NAME."""
    previous = registry_from(ctx).remove_alias(name, alias, reason=reason)
    if as_json:
        print_json({"name": name, "alias": alias, "previous": previous})
        return
    console.print(f"Removed {escape(name)}@{escape(alias)} (was {previous})")


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    alias: Annotated[str, typer.Argument()],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS back at the version that held it before its last move."""
    version = registry_from(ctx).rollback(name, alias, reason=reason)
    if as_json:
        print_json(version.to_dict())
        return
    console.print(f"{escape(name)}@{escape(alias)} → {version.version} (rolled back)")


@app.command("archive")
def archive(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name/3")],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive a version; an archived version can hold no alias."""
    version = registry_from(ctx).archive(ref, reason=reason)
    if as_json:
        print_json(version.to_dict())
        return
    console.print(f"Archived {escape(version.ref)}")


@app.command("history")
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    as_json: JsonOpt = False,
) -> None:
    """Every change to model NAME: who, when, from, to, why."""
    registry = registry_from(ctx)
    rows = [e.to_dict() for e in registry.history(name)]
    # gate evaluations beside the alias moves: from = the champion, to = the candidate
    for report in registry.evaluations(name):
        failed = [f"{r.gate}: {r.summary}" for r in report.failed_required]
        rows.append(
            {
                "id": report.id,
                "name": report.model,
                "action": "gate",
                "alias": report.against,
                "version_from": report.champion_version,
                "version_to": report.version,
                "actor": report.created_by,
                "reason": "passed" if report.passed else "failed: " + "; ".join(failed),
                "at": report.created_at,
                "passed": report.passed,
                "evaluation_id": report.id,
            }
        )
    db = open_database(settings_from(ctx).db_url)
    ctx.find_root().call_on_close(db.close)
    rows.extend(agent_rows(ActionStore(db), name))
    rows.sort(key=lambda row: (row["at"], row["action"] != "gate"))
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"history of {escape(name)}", title_justify="left")
    for col in ("when", "who", "action", "alias", "from", "to", "reason"):
        table.add_column(col, no_wrap=col == "action")
    for row in rows:
        action = row["action"]
        if action == "gate":
            action = "[green]gate passed[/]" if row["passed"] else "[red]gate failed[/]"
        elif action.startswith("agent "):
            action = f"[cyan]{escape(action)}[/]"
        table.add_row(
            fmt_time(row["at"]),
            escape(row["actor"]),
            action,
            escape(row["alias"] or "-"),
            fmt_value(row["version_from"]),
            fmt_value(row["version_to"]),
            escape(row["reason"] or ""),
        )
    console.print(table)
