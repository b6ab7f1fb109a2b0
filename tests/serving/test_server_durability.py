"""A `modelyard serve` process killed with SIGKILL loses no acknowledged prediction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from modelyard.store.gc import scratch_prefix
from modelyard.store.predlog import read_predictions

from .conftest import NAME, Project, free_port, records

_READY_TIMEOUT_S = 60.0


def _start(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    cli = Path(sys.executable).with_name("modelyard")
    command = [str(cli), "--project", str(root), "serve", NAME, "--port", str(port)]
    command += ["--workers", "1", "--log-level", "warning"]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server was not ready in {_READY_TIMEOUT_S}s: {log.read_text()}")


def test_sigkill_mid_load_keeps_every_acknowledged_prediction(
    project: Project, tmp_path: Path, held_out: object
) -> None:
    root = project.settings.project_dir
    log_dir = root / project.settings.serving.log_dir
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "server.log"
    body = {"instances": records(held_out.head(2))}  # type: ignore[attr-defined]
    process = _start(root, port, out)
    try:
        _wait_ready(process, url, out)
        acked: list[str] = []
        sent: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    rid = uuid.uuid4().hex
                    sent.append(rid)
                    try:
                        answer = http.post(
                            f"/v1/models/{NAME}:predict", json=body, headers={"X-Request-ID": rid}
                        )
                    except httpx.TransportError:
                        return  # the server is gone
                    if answer.status_code == 200:
                        assert answer.headers["X-Request-ID"] == rid
                        acked.append(rid)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert len(acked) >= 60
        logged = set(read_predictions(log_dir).column("request_id").to_pylist())
        missing = set(acked) - logged
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged predictions lost"
        assert logged <= set(sent)
        killed = process.pid
        left = list(Path(tempfile.gettempdir()).glob(f"{scratch_prefix('serve', killed)}*"))
        assert left, "the killed server's temp folder was expected to be left behind"

        # a restart over the same log serves again and appends after the torn segment,
        # and removes what the killed server left in the temp folder
        process = _start(root, port, out)
        _wait_ready(process, url, out)
        assert not any(path.exists() for path in left)
        answer = httpx.post(
            f"{url}/v1/models/{NAME}:predict", json=body, headers={"X-Request-ID": "after"}
        )
        assert answer.status_code == 200
        assert "after" in set(read_predictions(log_dir).column("request_id").to_pylist())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
