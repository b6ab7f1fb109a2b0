"""``modelyard traffic``: the traffic policies every replica serves by, in the metadata store.

``show`` lists the stored policies (or one model's effective policy, ``modelyard.yaml``'s
``serving.traffic`` when the store holds none), ``set`` changes the fields it is given
on top of the current policy (validated against the registry, audited, and refused when
another writer changed the policy since it was read), ``clear`` sends every request
back to the primary, ``history`` prints the audit trail. Every running server picks a
change up within ``serving.watch_interval_s``.

Exit codes: 0 done, 2 bad input: an unknown model or alias, a weight out of 0..1, a
canary whose signature differs from the primary's, or a policy that changed since
``--expect-version`` (or since ``set`` read it).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.context import settings_from
from modelyard.cli.output import console, fmt_time, print_json
from modelyard.config import TrafficSettings
from modelyard.errors import ConflictError, InvalidInputError
from modelyard.registry.client import ModelRegistry
from modelyard.registry.traffic import StoredPolicy, TrafficPolicies

__all__ = ["app"]

app = typer.Typer(
    help="Traffic policies (primary, canary, shadow) that every replica serves by.",
    no_args_is_help=True,
)

_JSON = typer.Option("--json", help="Print JSON for scripts.")


def _policies(ctx: typer.Context) -> TrafficPolicies:
    registry = ModelRegistry(settings_from(ctx))
    ctx.find_root().call_on_close(registry.close)
    return TrafficPolicies(registry)


def _split(policy: TrafficSettings) -> str:
    if policy.canary is None or policy.canary_weight == 0:
        return f"100% @{policy.primary}"
    share = policy.canary_weight * 100
    return f"{100 - share:g}% @{policy.primary}, {share:g}% @{policy.canary}"


def _row(policy: TrafficSettings) -> list[str]:
    return [
        escape(_split(policy)),
        escape("-" if policy.shadow is None else f"@{policy.shadow}"),
        escape(policy.sticky_key or "-"),
    ]


def _print_stored(stored: StoredPolicy) -> None:
    console.print(
        f"{escape(stored.model)}: {escape(_split(stored.policy))}"
        + ("" if stored.policy.shadow is None else f"; shadow @{escape(stored.policy.shadow)}")
        + f" (policy version {stored.version}, by {escape(stored.updated_by)})",
        soft_wrap=True,
    )


@app.command("show")
def show(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="One model (default: every policy).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The stored policies, or MODEL's effective policy and where it comes from."""
    policies = _policies(ctx)
    if model is not None:
        stored = policies.get_policy(model)
        configured = policies.settings.serving.traffic.get(model)
        if stored is None and configured is None:
            policies.check_model(model)  # an unknown model: exit 2, with suggestions
        effective = stored.policy if stored is not None else configured or TrafficSettings()
        source = "store" if stored is not None else "config" if configured else "default"
        if as_json:
            print_json(
                {
                    "model": model,
                    "source": source,
                    "version": 0 if stored is None else stored.version,
                    "policy": msgspec.to_builtins(effective),
                    "updated_at": None if stored is None else stored.updated_at,
                    "updated_by": None if stored is None else stored.updated_by,
                }
            )
            return
        where = {
            "store": f"stored, version {stored.version if stored else 0}",
            "config": "modelyard.yaml serving.traffic (none stored)",
            "default": "default (none stored or configured)",
        }[source]
        console.print(
            f"{escape(model)}: {escape(_split(effective))}; shadow "
            f"{escape('-' if effective.shadow is None else '@' + effective.shadow)}; sticky key "
            f"{escape(effective.sticky_key or '-')} ({where})",
            soft_wrap=True,
        )
        return
    stored_all = policies.list_policies()
    if as_json:
        print_json([p.to_dict() for p in stored_all])
        return
    if not stored_all:
        console.print("No traffic policy stored: every model answers from @production")
        return
    table = Table(title="traffic policies", title_justify="left")
    for col in ("model", "split", "shadow", "sticky key", "version", "updated", "by"):
        table.add_column(col)
    for p in stored_all:
        table.add_row(
            escape(p.model),
            *_row(p.policy),
            str(p.version),
            fmt_time(p.updated_at),
            escape(p.updated_by),
        )
    console.print(table)


def _change(
    policies: TrafficPolicies,
    model: str,
    changes: dict[str, object],
    reason: str | None,
    expect_version: int | None,
) -> StoredPolicy:
    """``changes`` applied on top of ``model``'s current policy, stored by compare-and-set."""
    policies.check_model(model)  # an unknown model: exit 2, with suggestions
    stored = policies.get_policy(model)
    read_version = 0 if stored is None else stored.version
    if expect_version is not None and expect_version != read_version:
        raise ConflictError(
            f"The traffic policy of {model!r} is at version {read_version}, not the "
            f"expected {expect_version}: read it again (modelyard traffic show {model})"
        )
    current = (
        stored.policy
        if stored is not None
        else policies.settings.serving.traffic.get(model) or TrafficSettings()
    )
    fields = {**msgspec.to_builtins(current), **changes}
    try:
        policy = TrafficSettings(**fields)
    except InvalidInputError as err:
        raise InvalidInputError(str(err), loc=err.loc or "--canary/--weight") from None
    return policies.set_policy(model, policy, reason=reason, expected_version=read_version)


def _report(stored: StoredPolicy, as_json: bool) -> None:
    if as_json:
        print_json(stored.to_dict())
    else:
        _print_stored(stored)


_REASON = typer.Option("--reason", help="Why, for the audit trail.")
_EXPECT = typer.Option(
    "--expect-version",
    min=0,
    help="Change only if the policy is still at this version (0: none stored yet).",
)


@app.command("set")
def set_policy(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model.")],
    primary: Annotated[
        str | None, typer.Option("--primary", help="The alias that answers by default.")
    ] = None,
    canary: Annotated[
        str | None, typer.Option("--canary", help="The alias a share of requests goes to.")
    ] = None,
    weight: Annotated[
        float | None,
        typer.Option("--weight", help="The canary's share of requests, 0..1."),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option("--shadow", help="An alias that gets a copy of every request (logged)."),
    ] = None,
    sticky_key: Annotated[
        str | None,
        typer.Option("--sticky-key", help="A request field or header:NAME pinning a caller."),
    ] = None,
    no_canary: Annotated[bool, typer.Option("--no-canary", help="Remove the canary.")] = False,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Remove the shadow.")] = False,
    reason: Annotated[str | None, _REASON] = None,
    expect_version: Annotated[int | None, _EXPECT] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Change the fields given of MODEL's policy; the others keep their current values."""
    if no_canary and (canary is not None or weight is not None):
        raise InvalidInputError(
            "Expected --no-canary alone, got it with --canary or --weight", loc="--no-canary"
        )
    if no_shadow and shadow is not None:
        raise InvalidInputError(
            "Expected --no-shadow or --shadow ALIAS, got both", loc="--no-shadow"
        )
    changes: dict[str, object] = {}
    for name, value in (
        ("primary", primary),
        ("canary", canary),
        ("canary_weight", weight),
        ("shadow", shadow),
        ("sticky_key", sticky_key),
    ):
        if value is not None:
            changes[name] = value
    if no_canary:
        changes.update(canary=None, canary_weight=0.0)
    if no_shadow:
        changes["shadow"] = None
    if not changes:
        raise InvalidInputError(
            "Expected at least one change (--primary, --canary, --weight, --shadow, "
            "--sticky-key, --no-canary, --no-shadow), got none",
            loc="traffic set",
        )
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise InvalidInputError(
            f"Expected a weight between 0 and 1, got {weight!r}", loc="--weight"
        )
    stored = _change(_policies(ctx), model, changes, reason, expect_version)
    _report(stored, as_json)


@app.command("clear")
def clear(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model.")],
    reason: Annotated[str | None, _REASON] = None,
    expect_version: Annotated[int | None, _EXPECT] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Send every request of MODEL to its primary: no canary, no shadow (audited)."""
    stored = _change(
        _policies(ctx),
        model,
        {"canary": None, "canary_weight": 0.0, "shadow": None},
        reason,
        expect_version,
    )
    _report(stored, as_json)


@app.command("history")
def history(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The registered model.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Every audited change of MODEL's policy, oldest first."""
    policies = _policies(ctx)
    changes = policies.history(model)
    if not changes:
        policies.check_model(model)  # an unknown model: exit 2
    if as_json:
        print_json([c.to_dict() for c in changes])
        return
    if not changes:
        console.print(f"No traffic policy was ever stored for {escape(model)}")
        return
    table = Table(title=f"traffic policy history of {escape(model)}", title_justify="left")
    for col in ("version", "at", "by", "split", "shadow", "sticky key", "reason"):
        table.add_column(col)
    for c in changes:
        table.add_row(
            str(c.version),
            fmt_time(c.at),
            escape(c.actor),
            *_row(c.policy_to),
            escape(c.reason or "-"),
        )
    console.print(table)
