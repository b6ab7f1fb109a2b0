"""Several replicas sharing one state: the traffic store, alias moves, log shipping.

In-process first (two servers in threads on one project): a policy set through one
server reaches the other, compare-and-set over HTTP (``If-Match``), the old
``traffic.json`` migrated once. Then the fleet as users run it (``slow``): two
``modelyard serve`` processes with their own project folder, port, log folder and
``serving.replica_id``, 2 workers each, sharing a PostgreSQL metadata store and an
S3-compatible artifact store (moto's server): load on both, an alias move hot-swaps
both with no error, a canary set once through one applies to both, and one replica
SIGKILLed (its whole process group, as a host that dies) loses none of its acknowledged
predictions after its restart; each acknowledged prediction is in the union of the
replicas' logs exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from modelyard.config import TrafficSettings, load_settings
from modelyard.registry import ModelRegistry
from modelyard.registry.traffic import MIGRATED_REASON, TrafficPolicies
from modelyard.store.predlog import read_predictions
from modelyard.store.predlog.shipping import shipped_log

from .conftest import (
    NAME,
    Project,
    ServeFactory,
    free_port,
    make_frame,
    make_model,
    records,
    serving,
)

ADMIN = "fleet-admin-key"
KEYS = {"MODELYARD_API_KEYS": f"{ADMIN}:predict+admin"}
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TRAFFIC = f"/admin/models/{NAME}/traffic"
PREDICT = f"/v1/models/{NAME}:predict"
_READY_TIMEOUT_S = 300.0  # generous: 6 interpreters start at once on a shared machine


def _wait(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    detail: Callable[[], str] = str,
    every_s: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} {detail()}")
        time.sleep(every_s)


# -- in process: two servers, one store ----------------------------------------------------


def test_a_policy_set_through_one_server_reaches_the_other(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "canary")
    settings = serving(project.settings, watch_interval_s=0.1)
    first, second = serve(settings, environ=KEYS), serve(settings, environ=KEYS)
    body = {"instances": records(held_out.head(3))}
    with first.client(headers=AUTH) as one, second.client(headers=AUTH) as two:
        got = two.get(TRAFFIC)
        assert got.headers["ETag"] == '"0"' and got.json()["canary"] is None
        policy = {"canary": "canary", "canary_weight": 1.0}
        answer = one.put(
            TRAFFIC, json=policy, headers={"If-Match": '"0"'}, params={"reason": "try v2"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1 and answer.headers["ETag"] == '"1"'
        _wait(lambda: two.get(TRAFFIC).headers["ETag"] == '"1"', 10, "the second server")
        assert two.get(TRAFFIC).json()["canary_weight"] == 1.0
        # the canary is loaded on the next refresh after its policy arrives
        _wait(
            lambda: two.post(PREDICT, json=body).headers["X-Model-Version"] == "2",
            10,
            "the second server's canary",
        )
        # a writer that read version 0 loses: 409, and nothing changes anywhere
        stale = two.put(TRAFFIC, json={"shadow": "canary"}, headers={"If-Match": "0"})
        assert stale.status_code == 409, stale.text
        assert "at version 1" in stale.json()["error"]["message"]
        assert two.get(TRAFFIC).json()["shadow"] is None
        bad = one.put(TRAFFIC, json={}, headers={"If-Match": "latest"})
        assert bad.status_code == 422 and "If-Match" in bad.text
    [change] = TrafficPolicies(project.registry).history(NAME)
    assert (change.actor, change.reason, change.version) == ("api:env-1", "try v2", 1)
    assert change.policy_from is None
    assert change.policy_to == TrafficSettings(canary="canary", canary_weight=1.0)


def test_the_old_traffic_file_is_migrated_once_at_the_first_start(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "canary")
    path = project.settings.project_dir / ".modelyard" / "traffic.json"
    path.write_text(json.dumps({NAME: {"canary": "canary", "canary_weight": 1.0}}))
    body = {"instances": records(held_out.head(3))}
    first = serve(project.settings, environ=KEYS)
    with first.client(headers=AUTH) as http:
        assert http.post(PREDICT, json=body).headers["X-Model-Version"] == "2"
        assert http.get(TRAFFIC).headers["ETag"] == '"1"'
    assert not path.exists() and path.with_name("traffic.json.migrated").is_file()
    first.stop()
    second = serve(project.settings, environ=KEYS)
    with second.client(headers=AUTH) as http:
        assert http.post(PREDICT, json=body).headers["X-Model-Version"] == "2"
    [change] = TrafficPolicies(project.registry).history(NAME)
    assert change.reason == MIGRATED_REASON
    assert change.actor.startswith("modelyard serve")


# -- the fleet: two `modelyard serve` processes -----------------------------------------------


@dataclass
class Replica:
    """One host of the fleet: its project folder, port and ``modelyard serve`` process."""

    name: str
    root: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    #: (request id, version) of every request answered 200, probes included
    acked: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.root / ".modelyard" / "predictions"

    @property
    def out(self) -> Path:
        return self.root / "serve.out"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "modelyard", "--project", str(self.root), "serve", NAME,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
        ]  # fmt: skip
        with self.out.open("ab") as out:
            # a session of its own: SIGKILL reaches the workers too, as when a host dies
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}: {self.out.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name} not ready in {_READY_TIMEOUT_S}s: {self.out.read_text()}"
        )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def versions(self, count: int, body: dict[str, Any]) -> set[str]:
        """The versions that answer ``count`` requests, each on a new connection (so both
        workers answer some)."""
        seen = set()
        for _ in range(count):
            rid = uuid.uuid4().hex
            answer = httpx.post(
                f"{self.url}{PREDICT}", json=body, headers={**AUTH, "X-Request-ID": rid}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            self.acked.append((rid, answer.headers["X-Model-Version"]))
            seen.add(answer.headers["X-Model-Version"])
        return seen


class Load:
    """Client threads posting one-row predictions to every replica until stopped."""

    def __init__(self, replicas: list[Replica], body: dict[str, Any], per_replica: int = 2):
        self.body = body
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(replica,), daemon=True)
            for replica in replicas
            for _ in range(per_replica)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, replica: Replica) -> None:
        with httpx.Client(base_url=replica.url, timeout=30, headers=AUTH) as http:
            while not self.stop_event.is_set():
                rid = uuid.uuid4().hex
                try:
                    answer = http.post(PREDICT, json=self.body, headers={"X-Request-ID": rid})
                except httpx.TransportError as exc:
                    replica.failures.append(f"{rid}: {type(exc).__name__}")
                    return
                if answer.status_code == 200:
                    replica.acked.append((rid, answer.headers["X-Model-Version"]))
                else:
                    replica.failures.append(f"{rid}: {answer.status_code} {answer.text[:200]}")


def _state(fleet: list[Replica]) -> str:
    return "; ".join(
        f"{r.name}: {len(r.acked)} acked, failures {r.failures[:3]}, "
        f"output {r.out.read_text()[-1500:] if r.out.exists() else ''}"
        for r in fleet
    )


def _local_log(replica: Replica) -> pa.Table:
    if not replica.log_dir.exists():
        return pa.table({"request_id": pa.array([], pa.string())})
    return read_predictions(replica.log_dir)


def _write_project(root: Path, replica_id: str, db_url: str, artifacts: str) -> None:
    root.mkdir(parents=True)
    config = {
        "name": "fleet",
        "db_url": db_url,
        "artifacts": artifacts,
        "serving": {
            "replica_id": replica_id,
            "watch_interval_s": 0.3,
            "compact_interval_s": 1.0,
            "ship": {"interval_s": 2.0},
        },
    }
    (root / "modelyard.yaml").write_text(yaml.safe_dump(config))
    (root / ".modelyard").mkdir()


@pytest.fixture
def fleet(
    tmp_path: Path, pg_database: str, s3_artifacts: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[Replica]]:
    """Two replicas of one project (churn v1 production, v2 compatible), not started."""
    monkeypatch.setenv("MODELYARD_ACTOR", "tester")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(s3_artifacts.env)
    env.update(KEYS)
    replicas = []
    for name in ("host-a", "host-b"):
        root = tmp_path / name
        _write_project(root, name, pg_database, s3_artifacts.url)
        replicas.append(Replica(name, root, free_port(), env))
    settings = load_settings(replicas[0].root, environ={})
    frame, _ = make_frame()
    with ModelRegistry(settings) as registry:
        for c, seed in ((1.0, 0), (0.05, 1)):
            registry.log_model(
                make_model(seed=20240917 + seed, c=c), name=NAME, training_frame=frame
            )
        registry.set_alias(f"{NAME}/1", "production")
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.slow
def test_two_replicas_share_aliases_traffic_and_lose_no_prediction(
    fleet: list[Replica], held_out: pd.DataFrame
) -> None:
    a, b = fleet
    settings = load_settings(a.root, environ={})
    registry = ModelRegistry(settings)
    try:
        body = {"instances": records(held_out.head(1))}
        for replica in fleet:
            replica.start()
        for replica in fleet:
            replica.wait_ready()
        with Load(fleet, body):
            _wait(
                lambda: len(a.acked) > 20 and len(b.acked) > 20,
                120,
                "load on both replicas",
                lambda: _state(fleet),
            )
            assert a.versions(4, body) == {"1"} and b.versions(4, body) == {"1"}

            # an alias move hot-swaps every worker of both replicas, no request failing
            registry.set_alias(f"{NAME}/2", "production", reason="fleet test")
            _wait(
                lambda: a.versions(6, body) == {"2"} and b.versions(6, body) == {"2"},
                120,
                "both replicas to serve v2",
            )

            # a canary set once, through one replica, applies to both
            registry.set_alias(f"{NAME}/1", "canary")
            answer = httpx.put(
                f"{a.url}{TRAFFIC}",
                json={"canary": "canary", "canary_weight": 1.0},
                headers={**AUTH, "If-Match": "0"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            _wait(
                lambda: a.versions(6, body) == {"1"} and b.versions(6, body) == {"1"},
                120,
                "both replicas to send every request to the canary",
            )
            before = len(b.acked)
            _wait(lambda: len(b.acked) > before + 20, 120, "more load on host-b")
            b.kill()  # the host dies: its master and both workers, mid-load
        assert not a.failures, a.failures[:5]
        # host-b's clients lost their connection when it died (one failure per client at
        # most), and no answered request failed
        assert all("Error" in f for f in b.failures), b.failures[:5]
        killed = {rid for rid, _ in b.acked}
        b.start()
        b.wait_ready()
        assert b.versions(4, body) == {"1"}  # a restarted replica serves the stored policy

        # logs ship from both: once both replicas stopped (each ships its tail on the way
        # out), the fleet's log as any host reads it holds each acknowledged prediction
        # exactly once, those host-b acknowledged before it was killed included
        for replica in fleet:
            replica.stop()
        acked = a.acked + b.acked
        assert len({rid for rid, _ in acked}) == len(acked)
        shipped = shipped_log(settings)
        assert shipped is not None

        def seen() -> Counter[str]:
            table = read_predictions(a.log_dir, shipped=shipped)
            return Counter(table.column("request_id").to_pylist())

        _wait(
            lambda: all(seen()[rid] for rid, _ in acked),
            180,
            "every acknowledged prediction in the shipped log",
            lambda: f"{sum(1 for rid, _ in acked if not seen()[rid])} of {len(acked)} missing",
            every_s=3.0,  # each look lists and reads the bucket
        )
        table = read_predictions(a.log_dir, shipped=shipped)
        counts = Counter(table.column("request_id").to_pylist())
        assert [rid for rid, _ in acked if counts[rid] != 1] == []
        assert killed <= set(counts)
        # beyond those, only requests in flight when host-b died: logged (durable) before
        # the client got its answer, never twice
        in_flight = {f.split(":", 1)[0] for f in b.failures}
        assert set(counts) - {rid for rid, _ in acked} <= in_flight
        assert max(counts.values()) == 1
        logged = Counter(str(v) for v in table.column("version").to_pylist())
        replicas = {
            part.split("=", 1)[1]
            for path in shipped.files("predictions")
            for part in path.split("/")
            if part.startswith("replica=")
        }
        assert replicas == {"host-a", "host-b"}

        # monitoring (on host-a) counts each logged prediction once, per version: every
        # acknowledged one and any in flight at the kill
        answered = Counter(version for _, version in acked)
        for version in answered:
            assert answered[version] <= logged[version] <= answered[version] + len(in_flight)
        expected = logged
        for version in ("1", "2"):
            command = [sys.executable, "-m", "modelyard", "--project", str(a.root), "monitor"]
            command += ["run", f"{NAME}/{version}", "--window", "1d", "--no-notify", "--json"]
            result = subprocess.run(
                command,
                env=a.env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode in (0, 1), result.stderr  # 1: a window drifted
            windows = json.loads(result.stdout)["drift"]
            assert sum(w["rows"] for w in windows) == expected[version], (version, windows)
        policies = TrafficPolicies(registry)
        stored = policies.get_policy(NAME)
        assert stored is not None and stored.version == 1
    finally:
        registry.close()  # also when an assertion fails: no connection left to the GC
