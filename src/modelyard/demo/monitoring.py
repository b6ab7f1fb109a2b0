"""The monitoring part of ``modelyard demo``: the served model meets the later months.

After the replay (``demo.replay``) the prediction log holds March to July 2013 as
served, with the labels that arrived. This adds two alert rules to the demo project's
``modelyard.yaml`` (prediction drift in 2 of the last 3 weeks; AUC below the validation
AUC minus 0.05 in 3 of the last 6 weeks, with a retrain ``action`` that ``modelyard
agent`` runs: ``demo.closed_loop``), both posting to a webhook that the demo
listens on for the moment (a real HTTP receiver on 127.0.0.1) and appending the
incident to ``.modelyard/alerts.jsonl`` (the rules' ``command``); runs ``Monitor.run``
over weekly windows, prints what it found and writes the HTML report.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelyard.config import load_settings
from modelyard.monitoring.html import write_report
from modelyard.monitoring.monitor import Monitor

__all__ = ["monitor_demo"]

MODEL = "flights-delay"
WEBHOOK_ENV = "MODELYARD_DEMO_WEBHOOK"
#: the auc-drop rule's action: retrain on the 90 days ending when the agent acts, four
#: tuning trials, registered without moving ``production`` (the agent's canary decides)
RETRAIN = {
    "pipeline": "flights_delay",
    "params": {"promote": False, "n_trials": 4},
    "window": "90d",
}
#: the alerts' command: a stand-in for "retrain", written into the demo project
HOOK = '''"""Run by modelyard when an alert opens an incident (monitoring.alerts in modelyard.yaml).

A real project would start retraining here; the demo records the incident.
"""

import json
import os
from pathlib import Path

incident = json.loads(os.environ["MODELYARD_INCIDENT"])
with (Path(__file__).parent / ".modelyard" / "alerts.jsonl").open("a") as out:
    out.write(json.dumps(incident) + "\\n")
print(f"incident {incident['id']}: {incident['rule']} ({incident['cause']}) {incident['change']}")
'''


def _rules(project: Path, auc_floor: float) -> str:
    hook = project / "alert_hook.py"
    hook.write_text(HOOK, encoding="utf-8")
    command = shlex.join([sys.executable, str(hook)])
    return (
        "monitoring:\n"
        "  window: 1w\n"
        "  alerts:\n"
        "    - name: prediction-drift\n"
        "      signal: prediction_drift\n"
        "      k: 2\n"
        "      m: 3\n"
        f"      webhook_env: {WEBHOOK_ENV}\n"
        f"      command: {json.dumps(command)}\n"
        "    - name: auc-drop\n"
        "      signal: auc\n"
        f"      below: {auc_floor:.3f}\n"
        "      k: 3\n"
        "      m: 6\n"
        f"      webhook_env: {WEBHOOK_ENV}\n"
        f"      command: {json.dumps(command)}\n"
        # `modelyard agent` (the demo's closed loop) retrains when this incident opens
        "      action:\n"
        f"        retrain: {json.dumps(RETRAIN)}\n"
    )


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.received.append(json.loads(self.rfile.read(length) or b"{}"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def monitor_demo(project: Path, *, validation_auc: float, quiet: bool = False) -> dict[str, Any]:
    """Monitor the replayed traffic of the demo project; return what was found."""
    console = Console(quiet=quiet)
    config = project / "modelyard.yaml"
    text = config.read_text(encoding="utf-8")
    if "\nmonitoring:" not in text:
        config.write_text(
            text.rstrip("\n") + "\n" + _rules(project, validation_auc - 0.05), encoding="utf-8"
        )
    settings = load_settings(project)
    console.print(
        "\nMonitoring the replayed traffic (weekly windows against the training profile)..."
    )
    previous = os.environ.get(WEBHOOK_ENV)
    with _webhook() as (url, received), Monitor(settings) as monitor:
        os.environ[WEBHOOK_ENV] = url
        try:
            run = monitor.run(MODEL)
            data = monitor.report_data(run.model)
            skew = monitor.skew(run.model, sample=5000)
        finally:
            if previous is None:
                os.environ.pop(WEBHOOK_ENV, None)
            else:
                os.environ[WEBHOOK_ENV] = previous
    report = write_report(data, project / "monitoring-report.html")
    _print(console, run, data, received)
    mismatches = sum(f["mismatches"] for f in skew.features.values())
    console.print(
        f"Training/serving skew: {mismatches} mismatches in {len(skew.features)} features of "
        f"{skew.rows:,} served vectors recomputed offline as of their request times.",
        soft_wrap=True,
    )
    console.print(f"Report: {report}", soft_wrap=True, highlight=False)
    console.print(
        f"  modelyard --project {project} monitor run {MODEL}\n"
        f"  modelyard --project {project} monitor alerts\n"
        f"  modelyard --project {project} monitor report {MODEL} --out report.html",
        soft_wrap=True,
        highlight=False,
    )
    return {
        "report": str(report),
        "windows": len(run.drift),
        "prediction_drift_windows": sum(bool(w.summary["prediction_drift"]) for w in run.drift),
        "top_causes": [c["name"] for c in data["causes"] if c.get("drifted")][:5],
        "auc": [
            {
                "start": w.summary["start"],
                "estimated": w.summary["estimated"].get("auc"),
                "realised": (w.summary["metrics"].get("auc") or {}).get("value"),
            }
            for w in run.performance
        ],
        "alerts": [e.to_dict() for e in run.events],
        "webhook_received": len(received),
        "skew": skew.to_dict(),
    }


def _print(console: Console, run: Any, data: dict[str, Any], received: list[Any]) -> None:
    table = Table(title=f"{MODEL} v{run.model.version} by week", title_justify="left")
    widths = {"week": 10, "flights": 7, "drift": 5, "est. AUC": 8, "AUC": 5}
    for col in ("week", "flights", "drift", "top drifted features", "est. AUC", "AUC"):
        if col in widths:
            table.add_column(
                col,
                justify="left" if col == "week" else "right",
                no_wrap=True,
                min_width=widths[col],
            )
        else:
            table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=26)
    performance = {w.start_us: w.summary for w in run.performance}
    for w in run.drift:
        perf = performance.get(w.start_us, {})
        realised = (perf.get("metrics", {}).get("auc") or {}).get("value")
        estimated = perf.get("estimated", {}).get("auc")
        table.add_row(
            w.summary["start"][:10],
            f"{w.rows:,}",
            "[red]yes[/]" if w.summary["prediction_drift"] else "no",
            escape(", ".join(w.summary["ranked"][:2])),
            "-" if estimated is None else f"{estimated:.3f}",
            "-" if realised is None else f"{realised:.3f}",
        )
    console.print(table)
    domain = data.get("domain_classifier")
    causes = [c["name"] for c in data["causes"] if c.get("drifted")][:5]
    console.print(
        "Why: "
        + ", ".join(causes)
        + " drifted most in the last week (weighted by importance)"
        + (
            f"; a classifier tells that week from the training data with AUC {domain['auc']:.2f}"
            f" (mostly by {max(domain['importances'], key=domain['importances'].get)})"
            if domain
            else ""
        ),
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        "The AUC estimated from the scores alone (CBPE, est. AUC) came first; the realised "
        "AUC followed as the labels arrived.",
        soft_wrap=True,
    )
    for event in run.events:
        console.print(
            f"[red]Alert[/] {escape(event.rule)} ({escape(event.cause)}): {event.change}, "
            f"{event.breaches} of the last {event.windows} windows; "
            f"webhook {escape(event.webhook or '-')}; command {escape(event.command or '-')}",
            soft_wrap=True,
        )
    console.print(f"The demo's webhook receiver got {len(received)} incident(s).")
