"""The demo's closed loop: the agent acts on the auc-drop alert, on replayed traffic.

After monitoring (``demo.monitoring``) has opened the ``auc-drop`` incident on the
winter model, this serves the model again and calls the agent's pass in-process
(``modelyard.agent.loop.run_pass``) at the end of July 2013: the alert's
``action.retrain`` runs the demo pipeline on the 90 days ending then (``promote:
false``: the candidate is registered, production does not move), the gates compare the
candidate with the champion on the last 14 days of labelled traffic, and the candidate
becomes the canary (``serving.traffic.flights-delay``: 30% of the requests). Then August
is replayed day by day through the server, with a pass at the end of each day: each
pass makes one look at the canary (a sequential test over the labelled rows so far),
until it is promoted or rolled back, or times out to a decision.

Last, the weekly table: the realised AUC of what served (the prediction log joined with
its feedback, per week, with the versions that answered) beside the counterfactual:
the original version scored offline on exactly the same rows; and their difference.
"""

from __future__ import annotations

import contextlib
import http.client
import time as _time
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sklearn.metrics import roc_auc_score

from modelyard.agent.loop import PassReport, run_pass
from modelyard.agent.records import Action, ActionStore
from modelyard.config import Settings, load_settings
from modelyard.demo.flights import FEATURES
from modelyard.demo.replay import NEW_YORK, ServerError, ServerProcess, replay_flights
from modelyard.errors import NotFoundError
from modelyard.features.store import FeatureStore
from modelyard.gates.statistics import paired_delong
from modelyard.monitoring.labelled import labels_as
from modelyard.monitoring.windows import read_log
from modelyard.registry.client import ModelRegistry
from modelyard.store import predlog
from modelyard.store.database import open_database

__all__ = [
    "LOOP_DAYS",
    "closed_loop_demo",
    "day_end",
    "loop_verdict",
    "served_rows",
    "weekly_table",
]

MODEL = "flights-delay"
PIPELINE = "flights_delay"
#: the first day replayed while the agent acts: the day after the monitored replay
LOOP_START = date(2013, 8, 1)
#: at most this many consecutive days are replayed for the canary (it times out sooner)
LOOP_DAYS = 8
#: flights per request while the canary runs: ~30 requests a day, ~9 of them the canary's
CHUNK_ROWS = 30


def day_end(day: date) -> datetime:
    """The end of ``day`` in New York (where the flights depart), in UTC.

    >>> day_end(date(2013, 7, 31)).isoformat()
    '2013-08-01T04:00:00+00:00'
    """
    return datetime.combine(day + timedelta(days=1), time(), NEW_YORK).astimezone(UTC)


# -- the weekly table -----------------------------------------------------------------------


def served_rows(settings: Settings, model: str = MODEL) -> pd.DataFrame:
    """Every labelled row the model answered (primary or canary route), oldest first.

    Columns: ``time``, ``version``, ``route`` (no: the version tells), each of
    ``FEATURES`` as served, ``served`` (the served probability of a delay) and ``label``.
    """
    log_dir = settings.project_dir / settings.serving.log_dir
    con = predlog.connect(log_dir)
    try:
        versions = [
            int(v)
            for (v,) in con.execute(
                "SELECT DISTINCT version FROM predictions WHERE model = ? ORDER BY 1", [model]
            ).fetchall()
        ]
    finally:
        con.close()
    frames = []
    for version in versions:
        table = read_log(
            log_dir,
            model,
            version,
            inputs=FEATURES,
            outputs=["proba_1"],
            labels=True,
            routes=("primary", "canary"),
        )
        frame = table.to_pandas()
        frame = frame[frame["label"].notna()]
        frame.insert(1, "version", version)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["time", "version", *FEATURES, "served", "label"])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.rename(columns={f"input.{n}": n for n in FEATURES} | {"output.proba_1": "served"})
    rows["label"] = labels_as(rows["label"].tolist(), "classification", ["0", "1"])
    rows["label"] = rows["label"].astype(int)
    order = rows.sort_values(["time", "request_id"], kind="stable").index
    out: pd.DataFrame = rows.loc[order, ["time", "version", *FEATURES, "served", "label"]]
    return out.reset_index(drop=True)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class WeeklyTable:
    """Realised vs counterfactual AUC per week, and the verdict over the loop's weeks."""

    original: int
    weeks: list[dict[str, Any]]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"original": self.original, "weeks": self.weeks, "summary": self.summary}


def weekly_table(
    settings: Settings,
    registry: ModelRegistry,
    original: int,
    *,
    since: datetime | None = None,
    model: str = MODEL,
) -> WeeklyTable:
    """The realised AUC of what served each week beside the counterfactual.

    Realised: the served probabilities of the labelled rows, whichever version answered.
    Counterfactual: version ``original`` scored offline (its native model) on exactly
    those rows. The summary compares both on the rows served from ``since`` (the canary's
    start) on, with DeLong's paired interval of the difference.
    """
    rows = served_rows(settings, model)
    loaded = registry.load(f"{model}/{original}")
    counterfactual = loaded.scores(rows[FEATURES])[:, 1] if len(rows) else np.zeros(0, dtype=float)
    rows = rows.assign(counterfactual=counterfactual)
    week = rows["time"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("W-SUN")
    weeks: list[dict[str, Any]] = []
    for period, group in rows.groupby(week, sort=True):
        labels = group["label"].to_numpy()
        realised = _auc(labels, group["served"].to_numpy())
        other = _auc(labels, group["counterfactual"].to_numpy())
        counts = group["version"].value_counts().sort_index()
        weeks.append(
            {
                "week": period.start_time.date().isoformat(),
                "rows": len(group),
                "versions": {str(v): int(n) for v, n in counts.items()},
                "realised_auc": realised,
                "counterfactual_auc": other,
                "difference": None if realised is None or other is None else realised - other,
            }
        )
    summary: dict[str, Any] = {"since": None if since is None else since.isoformat()}
    after = rows if since is None else rows[rows["time"] >= pd.Timestamp(since)]
    summary["rows"] = len(after)
    summary["other_versions_rows"] = int((after["version"] != original).sum())
    if len(after) and after["label"].nunique() == 2:
        compared = paired_delong(
            after["label"].to_numpy(),
            after["served"].to_numpy(),
            after["counterfactual"].to_numpy(),
        )
        summary.update(
            realised_auc=compared.a,
            counterfactual_auc=compared.b,
            difference=compared.diff,
            low=compared.low,
            high=compared.high,
            p_value=compared.p_value,
        )
        summary["verdict"] = loop_verdict(summary)
    else:
        summary["verdict"] = "no labelled rows since the loop began: nothing to compare"
    return WeeklyTable(original, weeks, summary)


def loop_verdict(s: dict[str, Any]) -> str:
    """The summary's words: gained or lost, and whether DeLong's 95% interval says it is
    real (``difference``, ``low``, ``high``, ``other_versions_rows`` of the summary)."""
    if s["other_versions_rows"] == 0:
        return "the original version answered every row since then: realised equals counterfactual"
    diff, low, high = s["difference"], s["low"], s["high"]
    word = "gained" if diff > 0 else "lost" if diff < 0 else "changed nothing:"
    sure = (
        "a real difference (its 95% interval excludes 0)"
        if low > 0 or high < 0
        else "not distinguishable from no change (its 95% interval includes 0)"
    )
    return f"the loop {word} {abs(diff):.3f} AUC on these rows, {sure}"


def print_weekly(console: Console, table: WeeklyTable) -> None:
    """The weekly table and its summary line."""
    out = Table(
        title=f"{MODEL}: realised AUC of what served vs v{table.original} offline (counterfactual)",
        title_justify="left",
    )
    for col in ("week", "flights", "served by", "realised", "counterfactual", "diff"):
        left = col in ("week", "served by")
        out.add_column(col, justify="left" if left else "right", no_wrap=col != "served by")
    for w in table.weeks:
        versions = ", ".join(f"v{v} {n:,}" for v, n in w["versions"].items())
        out.add_row(
            w["week"],
            f"{w['rows']:,}",
            versions,
            _num(w["realised_auc"]),
            _num(w["counterfactual_auc"]),
            _num(w["difference"], signed=True),
        )
    console.print(out)
    s = table.summary
    if "difference" in s:
        console.print(
            f"Since the loop began ({s['since'][:10] if s['since'] else 'the start'}, "
            f"{s['rows']:,} labelled flights, {s['other_versions_rows']:,} answered by another "
            f"version than v{table.original}): realised AUC {s['realised_auc']:.3f}, "
            f"counterfactual {s['counterfactual_auc']:.3f}, difference {s['difference']:+.3f} "
            f"(95% {s['low']:+.3f} to {s['high']:+.3f}, DeLong, paired): {s['verdict']}.",
            soft_wrap=True,
            highlight=False,
        )
    else:
        console.print(f"Since the loop began: {s['verdict']}.", highlight=False)


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    shown = round(value, 3) or 0.0  # no "-0.000"
    return f"{shown:+.3f}" if signed else f"{shown:.3f}"


# -- the loop -------------------------------------------------------------------------------


def served_versions(port: int) -> set[int]:
    """The versions the server on ``port`` answers ``MODEL`` with now (primary, canary)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", f"/v2/models/{MODEL}")
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise ServerError(f"The server on port {port} stopped answering: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise ServerError(f"GET /v2/models/{MODEL} answered {response.status}: {body[:200]!r}")
    return {int(v) for v in msgspec.json.decode(body)["versions"]}


def await_aliases(settings: Settings, port: int, *, timeout_s: float = 60.0) -> set[int]:
    """Wait until the server answers with the versions ``production`` and ``canary`` name.

    The server sees moved aliases within its watch interval; the next replayed day must
    be routed by the aliases as the agent left them.
    """
    with ModelRegistry(settings) as registry:
        wanted = set()
        for alias in ("production", settings.agent.model(MODEL).canary.alias):
            with contextlib.suppress(NotFoundError):
                wanted.add(registry.get_version(f"{MODEL}@{alias}").version)
    deadline = _time.monotonic() + timeout_s
    while True:
        found = served_versions(port)
        if found == wanted:
            return found
        if _time.monotonic() > deadline:
            raise ServerError(
                f"The server still answers with versions {sorted(found)} after {timeout_s:.0f} s; "
                f"the aliases name {sorted(wanted)}"
            )
        _time.sleep(0.2)


class _Agent:
    """Runs the agent's passes for the demo and prints what they did."""

    def __init__(self, settings: Settings, console: Console, port: int) -> None:
        self.settings = settings
        self.console = console
        self.port = port
        self.passes: list[dict[str, Any]] = []
        self.action: Action | None = None
        self._shown: set[int] = set()

    def run(self, now: datetime) -> PassReport:
        self.console.print(f"  [bold]agent pass at {now:%Y-%m-%d %H:%M}Z[/]", highlight=False)
        started = _time.perf_counter()
        report = run_pass(self.settings, now=now, on_event=self._say)
        await_aliases(self.settings, self.port)
        seconds = _time.perf_counter() - started
        mine = [a for a in report.actions if a.model == MODEL and a.state != "skipped"]
        if mine:
            self.action = mine[-1]
        self.passes.append(
            {
                "now": now.isoformat(),
                "events": [str(e) for e in report.events],
                "failed": report.failed,
                "seconds": seconds,
            }
        )
        if self.action is not None:
            self._show_gates(self.action)
        return report

    def _say(self, line: str) -> None:
        self.console.print(f"    {escape(line)}", soft_wrap=True, highlight=False)

    def _show_gates(self, action: Action) -> None:
        db = open_database(self.settings.db_url)
        try:
            events = ActionStore(db).events(action.id)
        finally:
            db.close()
        for event in events:
            if event.kind != "gates" or event.id in self._shown:
                continue
            self._shown.add(event.id)
            verdict = "passed" if event.detail.get("passed") else "failed"
            self.console.print(
                f"    gates of {MODEL}/{action.candidate_version} against "
                f"v{event.detail.get('champion_version')} on the last "
                f"{self.settings.agent.model(MODEL).gate_window} of labelled traffic: {verdict}",
                soft_wrap=True,
                highlight=False,
            )
            for result in event.detail.get("results", []):
                mark = "[green]pass[/]" if result["passed"] else "[red]FAIL[/]"
                self.console.print(
                    f"      {mark} {escape(result['gate'])}: {escape(result['summary'])}",
                    soft_wrap=True,
                    highlight=False,
                )


def closed_loop_demo(project: Path, *, quiet: bool = False) -> dict[str, Any]:
    """The agent closes the loop in the demo project; what it did and the weekly table."""
    console = Console(quiet=quiet)
    settings = load_settings(project)
    with ModelRegistry(settings) as registry:
        original = registry.get_version(f"{MODEL}@production").version
    first = day_end(LOOP_START - timedelta(days=1))
    console.print(
        "\nClosing the loop: the agent's passes (modelyard agent --once --as-of ...) from "
        f"{first:%Y-%m-%d} on: the auc-drop alert's retrain action, gates, a canary on "
        f"the replayed days of August.",
        soft_wrap=True,
        highlight=False,
    )
    with FeatureStore(settings) as features, ServerProcess(settings.project_dir) as server:
        agent = _Agent(settings, console, server.port)
        agent.run(first)
        canary_from: datetime | None = None
        replayed: dict[str, Any] | None = None
        action = agent.action
        if action is not None and not action.terminal and action.canary_started_us is not None:
            canary_from = datetime.fromtimestamp(action.canary_started_us / 1e6, UTC)
            days = [LOOP_START + timedelta(days=k) for k in range(LOOP_DAYS)]

            def after_day(day: date) -> bool:
                agent.run(day_end(day))
                return agent.action is not None and agent.action.terminal

            summary = replay_flights(
                settings,
                features,
                model=MODEL,
                port=server.port,
                days=days,
                console=console,
                on_day=after_day,
                chunk_rows=CHUNK_ROWS,
            )
            replayed = summary.to_dict()
    action = agent.action
    with ModelRegistry(settings) as registry:
        production = registry.get_version(f"{MODEL}@production").version
        table = weekly_table(settings, registry, original, since=canary_from)
    if action is not None:
        console.print(
            f"Action {action.id[:12]}: {action.state}"
            + (f" ({escape(action.reason)})" if action.reason else "")
            + f"; production is {MODEL}/{production}.",
            soft_wrap=True,
            highlight=False,
        )
    print_weekly(console, table)
    if action is not None:
        console.print(
            f"  modelyard --project {project} agent show {action.id}\n"
            f"  modelyard --project {project} models history {MODEL}\n"
            f"  modelyard --project {project} lineage {MODEL}@production",
            soft_wrap=True,
            highlight=False,
        )
    return {
        "original_version": original,
        "production_version": production,
        "action": None if action is None else action.to_dict(),
        "passes": agent.passes,
        "replayed": replayed,
        "weekly": table.to_dict(),
    }
