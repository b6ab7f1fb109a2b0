"""Replaying past flights through a running ``modelyard serve``, as production traffic.

The demo's model was trained on January and February 2013; the replay sends later days
to the server the way a booking system would: every three hours it materializes the
feature views as of that moment (the online store then holds what was known then),
asks ``POST /v1/models/{name}:predict`` for the flights departing in the next three
hours with ``{"entities": [...]}`` (the server looks the weather and the carrier's
recent delays up by key) and ``parameters.as_of`` set to that moment, and at the end
of each day posts the flights' outcomes to ``POST /v1/feedback`` by request id.

``as_of`` needs ``serving.replay: true``: the online store only keeps the latest value
per key, and its freshness (the weather view's 3 hour ttl) is then checked against the
replayed time instead of the wall clock; the prediction log records that time too, so
monitoring sees the replayed days as days.

The server runs as a separate process (``python -m modelyard serve``), exactly as a user
would start it; :class:`ServerProcess` starts it, waits until it is ready and stops it.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from modelyard.config import Settings
from modelyard.demo.flights import TARGET, flight_entities
from modelyard.errors import ModelyardError, StorageError
from modelyard.features.store import FeatureStore

__all__ = ["ReplaySummary", "ServerProcess", "replay_days", "replay_flights"]

NEW_YORK = ZoneInfo("America/New_York")
#: local departure hours at which a replay step starts; each covers the next three hours
STEP_HOURS = (5, 8, 11, 14, 17, 20)
REQUEST_FIELDS = ["origin", "carrier", "month", "day_of_week", "sched_dep_hour", "distance"]


class ServerError(ModelyardError):
    """The model server did not start, or stopped answering."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``modelyard --project DIR serve`` in a child process, ready when entered.

    >>> ServerProcess(Path("project"), port=8080).url
    'http://127.0.0.1:8080'
    """

    def __init__(
        self,
        project: Path,
        *,
        port: int | None = None,
        refs: Sequence[str] = (),
        workers: int = 1,
        ready_timeout_s: float = 120.0,
        log_file: Path | None = None,
    ) -> None:
        self.project = project
        self.port = port or free_port()
        self.refs = list(refs)
        self.workers = workers
        self.ready_timeout_s = ready_timeout_s
        self.log_file = log_file or project / ".modelyard" / "serve.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        command = [
            sys.executable, "-m", "modelyard", "--project", str(self.project), "serve",
            *self.refs, "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
        ]  # fmt: skip
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerError(
                    f"modelyard serve exited with code {self._process.returncode} before it "
                    f"was ready; see {self.log_file}"
                )
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.2)
        self.stop()
        raise ServerError(
            f"modelyard serve was not ready after {self.ready_timeout_s:.0f} s; see {self.log_file}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Client:
    """A keep-alive JSON client for one server."""

    def __init__(self, port: int, *, api_key: str | None = None) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def post(self, path: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The status, decoded JSON body and headers of a POST."""
        self._connection.request("POST", path, msgspec.json.encode(body), self._headers)
        response = self._connection.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, msgspec.json.decode(data) if data else {}, headers

    def close(self) -> None:
        self._connection.close()


@dataclass
class ReplaySummary:
    """What the replay sent and what came back."""

    days: list[str] = field(default_factory=list)
    requests: int = 0
    rows: int = 0
    feedback: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    positives: int = 0

    def latency(self, q: float) -> float | None:
        """A client-side latency quantile (milliseconds) over the predict requests."""
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "requests": self.requests,
            "rows": self.rows,
            "feedback": self.feedback,
            "errors": {str(k): v for k, v in self.errors.items()},
            "versions": dict(self.versions),
            "latency_ms": {"p50": self.latency(0.5), "p99": self.latency(0.99)},
            "delayed_rate": self.positives / self.rows if self.rows else None,
        }


def replay_days(start: date, end: date, every: int) -> list[date]:
    """Every ``every``-th day from ``start`` to ``end`` inclusive.

    >>> [d.isoformat() for d in replay_days(date(2013, 3, 1), date(2013, 3, 10), 4)]
    ['2013-03-01', '2013-03-05', '2013-03-09']
    """
    return [start + timedelta(days=k) for k in range(0, (end - start).days + 1, every)]


def _steps(day: date) -> Iterator[tuple[datetime, datetime]]:
    for hour in STEP_HOURS:
        local = datetime(day.year, day.month, day.day, hour, tzinfo=NEW_YORK)
        begin = local.astimezone(UTC)
        yield begin, begin + timedelta(hours=3)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # plain Python scalars: msgspec encodes them without numpy's help
    columns = {name: frame[name].tolist() for name in REQUEST_FIELDS}
    return [
        dict(zip(REQUEST_FIELDS, row, strict=True)) for row in zip(*columns.values(), strict=True)
    ]


def replay_flights(
    settings: Settings,
    features: FeatureStore,
    *,
    model: str,
    port: int,
    days: Sequence[date],
    console: Console | None = None,
    api_key: str | None = None,
    on_day: Callable[[date], bool | None] | None = None,
    chunk_rows: int | None = None,
) -> ReplaySummary:
    """Send the flights of ``days`` to the server on ``port``; post their labels daily.

    Each three hours' flights go as one request, or as requests of at most
    ``chunk_rows`` flights (more requests: a canary's share of them is steadier).
    ``on_day(day)`` runs once each day's labels are in; the replay stops when it returns
    True (the demo's agent runs its pass there).
    """
    console = console or Console(quiet=True)
    flights = flight_entities(months=sorted({d.month for d in days}))
    local_day = flights["event_timestamp"].dt.tz_convert(NEW_YORK).dt.date
    summary = ReplaySummary()
    client = Client(port, api_key=api_key)
    path = f"/v1/models/{model}:predict"
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("replaying", total=len(days))
            for day in days:
                progress.update(task, description=f"replaying {day.isoformat()}")
                todays = flights[local_day == day]
                labels: list[dict[str, Any]] = []
                for begin, end in _steps(day):
                    # the online store as the booking system would see it at `begin`:
                    # every event up to and including that moment (materialization
                    # covers event times before its end), aggregates over their full
                    # windows (an incremental run recomputes them from every row)
                    features.materialize_incremental(begin + timedelta(microseconds=1))
                    stamp = todays["event_timestamp"]
                    batch = todays[(stamp >= begin) & (stamp < end)]
                    size = chunk_rows or max(1, len(batch))
                    for first in range(0, len(batch), size):
                        chunk = batch.iloc[first : first + size]
                        label = _predict(client, path, chunk, begin, summary, console)
                        if label is not None:
                            labels.append(label)
                if labels:  # the day's flights have landed: their labels arrive
                    status, answer, _ = client.post("/v1/feedback", {"feedback": labels})
                    if status != 200:
                        raise ServerError(f"feedback was refused: {status} {answer.get('error')}")
                    summary.feedback += int(answer["accepted"])
                summary.days.append(day.isoformat())
                progress.advance(task)
                if on_day is not None:
                    client.close()  # the pass may outlast the server's keep-alive
                    if on_day(day):
                        break
    except OSError as exc:
        raise ServerError(f"The server on port {port} stopped answering: {exc}") from exc
    finally:
        client.close()
    return summary


def _predict(
    client: Client,
    path: str,
    batch: pd.DataFrame,
    begin: datetime,
    summary: ReplaySummary,
    console: Console,
) -> dict[str, Any] | None:
    """One predict request for ``batch`` served at ``begin``; its feedback entry."""
    body = {"entities": _records(batch), "parameters": {"as_of": begin.isoformat()}}
    sent = time.perf_counter()
    status, answer, headers = client.post(path, body)
    summary.latencies_ms.append((time.perf_counter() - sent) * 1000)
    summary.requests += 1
    if status != 200:
        summary.errors[status] += 1
        console.print(f"  {begin:%Y-%m-%d %H:%M}Z: {status} {answer.get('error')}")
        return None
    summary.rows += len(batch)
    summary.versions[str(answer["model_version"])] += len(batch)
    truth = batch[TARGET].astype(int).tolist()
    summary.positives += sum(truth)
    return {"request_id": headers["x-request-id"], "label": truth}


def enable_replay(project: Path, traffic: str = "") -> None:
    """Let the project's server accept ``as_of`` (``serving.replay: true``); ``traffic``:
    the ``serving.traffic`` lines to write with it."""
    path = project / "modelyard.yaml"
    text = path.read_text(encoding="utf-8")
    if "\nserving:" in text:
        if "replay: true" not in text:
            raise StorageError(
                f"{path} has a serving section without 'replay: true'; add it to replay"
            )
        return
    path.write_text(
        text.rstrip("\n") + "\nserving:\n  # the demo replays 2013: online freshness is "
        "checked at the replayed time\n  replay: true\n" + traffic,
        encoding="utf-8",
    )
