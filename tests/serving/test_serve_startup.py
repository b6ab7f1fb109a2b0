"""``modelyard serve`` start-up: fails once with one line, or starts every worker.

A database that cannot be reached, or a model that does not exist, is found in the
parent before any worker is spawned: exit 2, one line, no traceback (it used to respawn
workers forever). Workers are spawned processes that import the command line again
before they answer uvicorn's health check; a slow machine is simulated by a main module
that sleeps on that import (as a loaded machine's imports do), which made uvicorn kill
the first worker at every start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.demo.replay import ServerProcess
from modelyard.serving.app import SPEC_ENV
from modelyard.serving.server import worker_app

from .conftest import NAME, Project, free_port, make_frame, records

#: spawned workers re-import the main module as ``__mp_main__``: this one is slow to
SLOW_MAIN = """
import sys, time
if __name__ != "__main__":
    time.sleep({delay})  # a loaded machine: the worker's imports take this long
from modelyard.cli.app import main
if __name__ == "__main__":
    sys.exit(main())
"""


def _closed_db() -> str:
    return f"postgresql+psycopg://modelyard@127.0.0.1:{free_port()}/postgres"


def _serve(
    project: Project, *args: str, env: dict[str, str] | None = None, main: Path | None = None
) -> list[str]:
    entry = [str(main)] if main is not None else ["-m", "modelyard"]
    return [
        sys.executable, *entry, "--project", str(project.settings.project_dir), "serve", *args,
    ]  # fmt: skip


def _run(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stderr + done.stdout, time.monotonic() - start


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(extra)
    return env


def test_an_unreachable_database_fails_at_once_with_one_line(project: Project) -> None:
    port = str(free_port())
    env = _env(MODELYARD_DB_URL=_closed_db())
    code, output, elapsed = _run(
        _serve(project, NAME, "--workers", "2", "--port", port), env, timeout=180
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert "Connection refused" in lines[0] or "connection failed" in lines[0]
    assert "modelyard@127.0.0.1" in lines[0]  # which store, credentials masked
    # no worker was spawned: nothing was ever listening on the port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
    assert elapsed < 120, elapsed


@pytest.mark.parametrize(
    ("target", "named"),
    [(f"{NAME}@nope", "nope"), ("nosuchmodel", "nosuchmodel")],
)
def test_a_model_that_does_not_exist_fails_at_once_with_one_line(
    project: Project, target: str, named: str
) -> None:
    code, output, _ = _run(
        _serve(project, target, "--workers", "2", "--port", str(free_port())), _env(), 180
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1 and named in lines[0], output
    assert "Traceback" not in output


def test_a_worker_that_cannot_build_its_app_fails_once(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store went away after the parent's check: the worker exits with uvicorn's
    start-up failure code (3: uvicorn stops, no respawn) and leaves its one line."""
    failures = tmp_path / "failures"
    failures.touch()
    spec = {"project": str(project.settings.project_dir), "targets": [NAME]}
    monkeypatch.setenv(SPEC_ENV, json.dumps({**spec, "failures": str(failures)}))
    monkeypatch.setenv("MODELYARD_DB_URL", _closed_db())
    with pytest.raises(SystemExit) as exited:
        worker_app()
    assert exited.value.code == 3
    lines = failures.read_text().splitlines()
    assert len(lines) == 1 and "127.0.0.1" in lines[0]


def _wait_for(condition: object, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _started(log: Path) -> bool:
    return log.read_text().count("Application startup complete.") == 2


def test_two_workers_start_every_time_on_a_slow_machine(project: Project, tmp_path: Path) -> None:
    main = tmp_path / "slow_main.py"
    main.write_text(SLOW_MAIN.format(delay=8))
    rows = records(make_frame()[0].head(3))
    for attempt in range(3):
        port = free_port()
        log = tmp_path / f"serve-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                _serve(project, NAME, "--workers", "2", "--port", str(port), main=main),
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for(partial(_started, log), 240, "both workers to start", log)
            for _ in range(10):  # new connections: the kernel spreads them over the workers
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/v1/models/{NAME}:predict",
                    json={"instances": rows},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        text = log.read_text()
        assert "died" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]


def _loaded(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {
        sample.labels["version"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelyard_model_loaded" and sample.labels["route"] == "primary"
    }


def test_a_swapped_out_version_is_not_loaded_on_the_metrics_of_two_workers(
    project: Project, tmp_path: Path
) -> None:
    """Several workers keep gauges in files, where ``clear`` does nothing: the replaced
    version used to stay at 1 beside the new one."""
    root = project.settings.project_dir
    with ServerProcess(root, refs=[NAME], workers=2, ready_timeout_s=240) as server:
        deadline = time.monotonic() + 60
        while _loaded(server.port) != {"1": 1.0} and time.monotonic() < deadline:
            time.sleep(0.5)
        project.registry.set_alias(f"{NAME}/2", "production")
        deadline = time.monotonic() + 60
        while _loaded(server.port) != {"1": 0.0, "2": 1.0}:
            assert time.monotonic() < deadline, _loaded(server.port)
            time.sleep(0.5)
