"""``modelyard agent [--once] [--interval 5m] [--as-of ISO]``, ``agent status``, ``agent show``.

The agent runs monitoring windows, alert rules, retrain actions and canary decisions on
a schedule (see ``docs/continuous-training.md``). ``--once`` runs one pass (for cron);
without it, a pass every ``--interval`` until SIGINT or SIGTERM, which stop it after the
pass in progress (the lease is released; a second signal aborts at once, which is safe
too: every stage is crash-safe).

Exit codes: 0 the pass is done (also when another agent holds the lease: the pass is
skipped with one line naming it), 1 an action failed or was rejected in this pass, 2 bad
input or configuration.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from modelyard.agent.loop import PassReport, run_forever, run_pass
from modelyard.agent.records import Action, ActionEvent, ActionStore
from modelyard.cli.agent_events import event_summary, utc
from modelyard.cli.context import settings_from
from modelyard.cli.failures import printable_line
from modelyard.cli.output import console, err_console, fmt_value, parse_time, print_json
from modelyard.config import duration_seconds
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store.database import Database, open_database

__all__ = ["app"]

app = typer.Typer(  # its help is the callback's docstring (with the exit codes)
    invoke_without_command=True,
    no_args_is_help=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

#: an action id shorter than this is not looked up as a prefix
_MIN_PREFIX = 6


def _age(recorded_us: int) -> str:
    seconds = max(0.0, time.time() - recorded_us / 1_000_000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_event(line: str) -> None:
    console.print(Text(printable_line(line)), soft_wrap=True)


def _actions_table(title: str, actions: list[Action], store: ActionStore | None) -> None:
    """The actions, one row each; with ``store`` (``agent status``) the incident, the gates
    and looks from their events and the age, else (a pass's report) the reason."""
    table = Table(title=title, title_justify="left")
    columns = ["id", "model", "state", "candidate", "decision"]
    if store is not None:
        columns[3:3] = ["incident"]
        columns += ["gates", "looks", "age"]
    for col in columns:
        table.add_column(col, no_wrap=True, min_width=12 if col == "id" else None)
    if store is None:  # one line: `agent show ID` has the whole reason
        table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=60)
    for action in actions:
        colour = {"promoted": "green", "failed": "red", "rejected": "red"}.get(action.state)
        cells = {
            "id": action.id[:12],
            "model": escape(action.model),
            "state": f"[{colour}]{action.state}[/]" if colour else action.state,
            "candidate": "-"
            if action.candidate_version is None
            else f"v{action.candidate_version}",
            "decision": escape(action.decision or "-"),
        }
        if store is not None:
            facts = _facts(action, store.events(action.id))
            incident = "-" if action.incident_id is None else f"{action.incident_id}"
            cells.update(
                incident=f"{incident} {escape(action.rule or '')}".strip(),
                gates=facts["gates"],
                looks=str(facts["looks"]),
                age=_age(action.recorded_us),
            )
        row = [cells[col] for col in columns]
        if store is None:
            row.append(escape(printable_line(action.reason or "")))
        table.add_row(*row)
    console.print(table)


def _facts(action: Action, events: list[ActionEvent]) -> dict[str, Any]:
    """What the status table shows beside the action's own columns: the gates' verdict
    (from its ``gates`` event) and the number of canary looks."""
    gates = "-"
    for event in events:
        if event.kind == "gates":
            passed = event.detail.get("passed")
            gates = "passed" if passed else "failed" if passed is not None else "stored"
    if gates == "-" and action.state == "rejected":
        gates = "failed"
    looks = sum(1 for e in events if e.kind == "look")
    return {"gates": gates, "looks": looks, "events": len(events)}


def _print_report(report: PassReport, *, quiet: bool) -> None:
    if report.skipped_lease:
        return  # its one line (naming the holder) is among the events
    if report.actions:
        _actions_table(f"{len(report.actions)} action(s) touched", report.actions, None)
    elif not quiet:
        console.print(f"Nothing to do for {', '.join(report.models) or 'no model'}.")


def _running_from(start: datetime) -> Callable[[], datetime]:
    """A clock that reads ``start`` now and runs on at the wall clock's pace."""
    began = time.monotonic()

    def now() -> datetime:
        return start + timedelta(seconds=time.monotonic() - began)

    return now


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends after the pass in progress); a second
    one aborts at once. Returns the function that restores the previous handlers."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err_console.print(
            f"{signal.Signals(signum).name}: stopping after the pass in progress "
            "(send it again to abort now)"
        )

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


@app.callback()
def agent(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit (for cron).")] = False,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval", help="Time between passes, like 5m or 1h (default: agent.interval)."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The agent's clock, ISO with a zone (replays, backfills); "
            "without --once it starts there and runs on.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print no event lines, only the actions.")
    ] = False,
) -> None:
    """Continuous training: alerts -> retrain -> gates -> canary -> decision.

    Runs monitoring windows, alert rules, retrain actions and canary decisions: one pass
    with --once (for cron), else a pass every --interval until SIGINT or SIGTERM, which
    stop it after the pass in progress. See docs/continuous-training.md.

    Exit codes: 0 the pass is done (also when another agent holds the lease), 1 an action
    failed or was rejected in this pass, 2 bad input or configuration.
    """
    if ctx.invoked_subcommand is not None:
        given = [
            name
            for name, value in (
                ("--once", once),
                ("--interval", interval),
                ("--as-of", as_of),
                ("--json", as_json),
                ("--quiet", quiet),
            )
            if value
        ]
        if given:
            raise InvalidInputError(
                f"Expected {', '.join(given)} after '{ctx.invoked_subcommand}' or without it, "
                f"got it before the subcommand",
                loc=given[0],
            )
        return
    settings = settings_from(ctx)
    start = parse_time(as_of, "--as-of")
    every = duration_seconds("--interval", interval or settings.agent.interval)
    if once:
        live = None if quiet or as_json else _print_event
        report = run_pass(settings, now=start, on_event=live)
        if as_json:
            print_json(report.to_dict())
        else:
            if quiet:  # the lease line still says why nothing happened
                for line in report.events if report.skipped_lease else []:
                    err_console.print(Text(printable_line(line)), soft_wrap=True)
            _print_report(report, quiet=quiet)
        raise typer.Exit(1 if report.failed else 0)

    def on_report(report: PassReport) -> None:
        if as_json:
            print_json(report.to_dict())
        else:
            if not quiet:
                for line in report.events:
                    _print_event(line)
            _print_report(report, quiet=quiet)
        sys.stdout.flush()  # a pipe (| jq, a log shipper) sees each pass as it ends

    clock = None if start is None else _running_from(start)
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        if not as_json:
            err_console.print(
                f"agent: a pass every {fmt_value(every)} s; SIGINT or SIGTERM stops it "
                "after the pass in progress"
            )
        run_forever(settings, interval_s=float(every), stop=stop, now=clock, on_report=on_report)
    finally:
        restore()


def _store(ctx: typer.Context) -> ActionStore:
    db: Database = open_database(settings_from(ctx).db_url)
    ctx.find_root().call_on_close(db.close)
    return ActionStore(db)


def _find(store: ActionStore, ref: str) -> Action:
    """The action ``ref`` names: its id or a unique prefix of 6+ characters."""
    text = ref.strip().lower()
    try:
        return store.get(text)
    except NotFoundError:
        if len(text) < _MIN_PREFIX:
            raise
    found = [a for a in store.list(limit=100_000) if a.id.startswith(text)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise InvalidInputError(
            f"{ref!r} matches {len(found)} actions ({', '.join(a.id[:12] for a in found[:4])}); "
            "give more characters",
            loc="ACTION",
        )
    raise NotFoundError(
        f"No agent action with id {ref!r} (or a prefix of it); list them with "
        "`modelyard agent status`"
    )


@app.command("status")
def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Only this model's actions.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The agent's actions, newest first: state, incident, candidate, gates, looks, decision."""
    store = _store(ctx)
    actions = store.list(model, limit=limit)
    if as_json:
        print_json([{**a.to_dict(), **_facts(a, store.events(a.id))} for a in actions])
        return
    if not actions:
        whose = f" for {escape(model)}" if model else ""
        console.print(f"No agent actions{whose}. Run: modelyard agent --once")
        return
    in_flight = [a for a in actions if not a.terminal]
    title = f"{len(actions)} action(s), {len(in_flight)} in flight"
    _actions_table(title, actions, store)


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ACTION", help="An action id or a prefix of it.")],
    as_json: JsonOpt = False,
) -> None:
    """One action and the timeline of its events (times on the agent's clock)."""
    store = _store(ctx)
    action = _find(store, ref)
    events = store.events(action.id)
    if as_json:
        print_json({"action": action.to_dict(), "events": [e.to_dict() for e in events]})
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    champion = "-" if action.champion_version is None else f"v{action.champion_version}"
    candidate = "-" if action.candidate_version is None else f"v{action.candidate_version}"
    window = (
        "-"
        if action.window_start_us is None
        else f"{utc(action.window_start_us)} .. {utc(action.window_end_us)}"
    )
    for key, value in (
        ("action", f"{action.id} ({action.kind})"),
        ("model", f"{action.model}: champion {champion}, candidate {candidate}"),
        ("state", action.state),
        (
            "incident",
            "-" if action.incident_id is None else f"{action.incident_id} ({action.rule})",
        ),
        ("incident opened", utc(action.incident_opened_us)),
        ("pipeline", f"{action.pipeline or '-'} run {action.pipeline_run_id or '-'}"),
        ("params", ", ".join(f"{k}={v}" for k, v in action.params.items()) or "-"),
        ("training window", window),
        ("gate evaluation", action.gate_evaluation_id or "-"),
        ("canary started", utc(action.canary_started_us)),
        ("decision", action.decision or "-"),
        ("reason", printable_line(action.reason or "-")),
        ("created", f"{utc(action.created_us)} by {action.created_by}"),
    ):
        info.add_row(key, escape(str(value)))
    console.print(info)
    table = Table(title=f"{len(events)} event(s)", title_justify="left")
    for col in ("time", "event", "key", "detail"):
        table.add_column(col)
    for event in events:
        table.add_row(
            utc(event.time_us), event.kind, escape(event.key), escape(event_summary(event.detail))
        )
    console.print(table)
