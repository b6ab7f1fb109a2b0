"""The web UI benchmark: modelyard's runs page against MLflow's, on the same runs.

    python benchmarks/ui/run.py [--runs 10000] [--repeats 20]
    python benchmarks/ui/run.py --startup 5     # only ``modelyard ui``'s start-up, 5 times

1. Makes ``--runs`` runs with 20 params and 20 metrics each (seeded); ten of them hold a
   1,000-point history per metric (the compare). The same runs, ids included, go into a
   modelyard project (SQLite, and PostgreSQL when ``MODELYARD_BENCH_PG_URL`` is set) and
   into MLflow's SQLite store (``mlflow_side.py``, in MLflow's own venv).
2. Starts ``modelyard ui`` (the CLI, measured to its first 200) and ``mlflow server``.
3. Server time of a page of 100 runs, newest first: modelyard's ``/runs`` page (HTML,
   rendered on the server) against MLflow's ``runs/search`` API (JSON only; its page
   renders in the browser): the median time to first byte of ``--repeats`` requests.
4. The same page rendered in Chromium (Playwright): modelyard's ``/runs`` until its
   load event; MLflow's experiment page until the newest run's name is shown.
5. Compare of the ten runs (20 metrics x 1,000 points each, overlaid), until the
   charts on the first screen are drawn (the others draw as they are scrolled to).

Both pages must list the same 100 run ids, with the same params and metrics (a wrong
row never counts). Targets: ``modelyard ui`` answers its first 200 in < 1 s; runs page
server time < 100 ms; >= 5x faster than MLflow's search for the same page; compare
rendered < 1 s. Exit 1 when one is missed.

The start-up is timed on the wall and as the server's CPU time (user + system, read from
``/proc`` when the first 200 arrives): on a busy machine the wall time measures the
machine, the CPU time what ``modelyard ui`` itself did. ``--startup N`` times only that,
N times on an empty project, and prints each run and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for anchor_venv
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
import msgspec
from mlflow_env import QUIET_ENV, ensure_mlflow_venv

from modelyard.config import init_project, load_settings
from modelyard.store.database import open_database
from modelyard.tracking.entities import RunStatus
from modelyard.tracking.environment import capture_environment
from modelyard.tracking.store import EndedRun, SQLTrackingStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARAMS = 20
METRICS = 20
COMPARE_RUNS = 10
POINTS = 1000
PAGE = 100
CHROMIUM = os.environ.get("MODELYARD_TEST_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET_SERVER_S = 0.100
TARGET_RATIO = 5.0
TARGET_COMPARE_S = 1.0
TARGET_OPEN_S = 1.0


def make_data(n: int, seed: int = 7) -> dict[str, Any]:
    """``n`` runs (newest first by start time, all distinct) and the compare's histories."""
    rng = random.Random(seed)
    base = 1_700_000_000_000
    runs = []
    for i in range(n):
        start = base + i * 60_000
        runs.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "name": f"run-{i:05d}",
                "start": start,
                "end": start + 30_000 + rng.randrange(30_000),
                "params": {
                    f"p{j:02d}": str(rng.choice([1, 2, 4, 8, 0.1, 0.01])) for j in range(PARAMS)
                },
                "metrics": {f"m{j:02d}": round(rng.random(), 6) for j in range(METRICS)},
                "tags": {"team": rng.choice(["risk", "growth", "ops"])},
                "last_step": 0,
            }
        )
    histories: dict[str, dict[str, list[float]]] = {}
    for run in runs[-COMPARE_RUNS:]:
        curves = {}
        for key, last in run["metrics"].items():
            walk = [last + 0.5 * (1 - step / POINTS) * rng.random() for step in range(POINTS)]
            walk[-1] = last
            curves[key] = walk
        histories[run["id"]] = curves
        run["last_step"] = POINTS - 1
    return {"runs": runs, "histories": histories}


def fill_modelyard(db_url: str, project: Path, data: dict[str, Any]) -> Any:
    """The runs into a modelyard project on ``db_url``; its settings."""
    init_project(project)
    settings = msgspec.structs.replace(load_settings(project, environ={}), db_url=db_url)
    db = open_database(db_url)
    store = SQLTrackingStore(db)
    experiment = store.get_or_create_experiment("bench", data["runs"][0]["start"])
    env = capture_environment((None, None))
    rows = data["runs"]
    for chunk in range(0, len(rows), 1000):
        store.insert_ended_runs(
            experiment.id,
            [
                EndedRun(
                    id=r["id"],
                    name=r["name"],
                    status=RunStatus.FINISHED,
                    start_time=r["start"],
                    end_time=r["end"],
                    parent_run_id=None,
                    params=r["params"],
                    tags=r["tags"],
                )
                for r in rows[chunk : chunk + 1000]
            ],
            env,
        )
        points = []
        for r in rows[chunk : chunk + 1000]:
            curves = data["histories"].get(r["id"])
            for key, value in r["metrics"].items():
                if curves is None:
                    points.append((r["id"], key, value, 0, r["end"]))
                else:
                    points.extend(
                        (r["id"], key, v, step, r["start"] + step)
                        for step, v in enumerate(curves[key])
                    )
        for at in range(0, len(points), 50_000):
            store.write_metrics(uuid.uuid4().hex, points[at : at + 50_000])
    db.close()
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system, seconds); NaN where /proc is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ui_command(project: Path, port: int) -> list[str]:
    return [
        str(ROOT / ".venv" / "bin" / "modelyard"),
        "ui",
        "--project",
        str(project),
        "--port",
        str(port),
    ]


def wait_up(url: str, process: subprocess.Popen[bytes], limit_s: float = 120) -> float:
    """Seconds until ``url`` answers 200."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer in {limit_s} s")


@contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def ttfb(client: httpx.Client, request: Callable[[], httpx.Request], repeats: int) -> float:
    """Median seconds to the first byte of the answer (after two warm-up requests)."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with client.stream(**_as_kwargs(request())) as answer:
            first = time.perf_counter() - start
            answer.read()
            assert answer.status_code == 200, answer.text[:300]
        if i >= 2:
            times.append(first)
    return statistics.median(times)


def _as_kwargs(request: httpx.Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "content": request.content,
        "headers": request.headers,
    }


def timed_page(page: Page, go: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        go()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def modelyard_side(
    label: str, settings: Any, data: dict[str, Any], page: Page, repeats: int
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELYARD_DB_URL": settings.db_url}
    command = ui_command(settings.project_dir, port)
    with started(command, env, settings.project_dir / "ui.log") as process:
        opened = wait_up(url + "/experiments", process)
        opened_cpu = cpu_s(process.pid)
        runs_url = f"{url}/runs?experiment=bench&limit={PAGE}&order=start_time+DESC"
        with httpx.Client(timeout=60) as client:
            server = ttfb(client, lambda: client.build_request("GET", runs_url), repeats)
            api = client.get(
                f"{url}/api/runs",
                params={"experiment": "bench", "limit": PAGE, "order": "start_time DESC"},
            ).json()
        rendered = timed_page(
            page, lambda: (page.goto(runs_url), page.wait_for_selector("#runs tbody tr")), 5
        )
        rows = page.locator("#runs tbody tr").count()
        assert rows == PAGE, f"{label}: {rows} rows on the page"
        ids = [r["id"] for r in data["runs"][-COMPARE_RUNS:]]
        compare_url = f"{url}/runs/compare?run=" + ",".join(ids)

        def draw() -> None:
            page.goto(compare_url)
            page.wait_for_selector("#charts[data-first-drawn=true]", timeout=60_000)

        compare = timed_page(page, draw, 3)
        traces = page.locator("#chart-m00 .scatterlayer .trace").count()
        assert traces == COMPARE_RUNS, f"{label}: {traces} curves on the compare"
    return {
        "label": label,
        "open_s": opened,
        "open_cpu_s": opened_cpu,
        "server_s": server,
        "rendered_s": rendered,
        "compare_s": compare,
        "page": api["runs"],
    }


def mlflow_side(data_file: Path, work: Path, page: Page, repeats: int) -> dict[str, Any]:
    python, _ = ensure_mlflow_venv()
    db = work / "mlflow.db"
    env = {**os.environ, **QUIET_ENV}
    env.pop("VIRTUAL_ENV", None)
    filled = subprocess.run(
        [
            str(python),
            str(HERE / "mlflow_side.py"),
            "--data",
            str(data_file),
            "--db",
            str(db),
            "--artifacts",
            str(work / "mlartifacts"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in filled.stdout.splitlines() if x.startswith("BENCH-RESULT "))
    experiment_id = json.loads(line.removeprefix("BENCH-RESULT "))["experiment_id"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(python.parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--default-artifact-root",
        str(work / "mlartifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    body = {
        "experiment_ids": [experiment_id],
        "max_results": PAGE,
        "order_by": ["attributes.start_time DESC"],
    }
    with started(command, env, work / "mlflow.log") as process:
        opened = wait_up(url + "/health", process)
        with httpx.Client(timeout=60) as client:
            search_url = f"{url}/api/2.0/mlflow/runs/search"
            server = ttfb(
                client, lambda: client.build_request("POST", search_url, json=body), repeats
            )
            found = client.post(search_url, json=body).json()["runs"]
        newest = data_file_newest(found)

        def show() -> None:
            page.goto(f"{url}/#/experiments/{experiment_id}/runs")
            page.wait_for_selector(f"text={newest}", timeout=120_000)

        rendered = timed_page(page, show, 3)
    return {
        "label": "MLflow",
        "open_s": opened,
        "open_cpu_s": cpu_s(process.pid),
        "server_s": server,
        "rendered_s": rendered,
        "page": found,
    }


def data_file_newest(found: list[dict[str, Any]]) -> str:
    return str(found[0]["info"]["run_name"])


def check_equal(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """The same runs, in the same order, with the same params and metrics."""
    assert len(ours) == len(theirs) == PAGE, (len(ours), len(theirs))
    for mine, other in zip(ours, theirs, strict=True):
        assert mine["id"] == other["info"]["run_id"], (mine["id"], other["info"]["run_id"])
        their_params = {p["key"]: p["value"] for p in other["data"].get("params", [])}
        their_metrics = {m["key"]: m["value"] for m in other["data"].get("metrics", [])}
        assert mine["params"] == their_params, mine["id"]
        assert mine["metrics"] == their_metrics, mine["id"]


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    name = f"bench_ui_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def startup_only(times: int) -> int:
    """``modelyard ui`` on an empty project, ``times`` times: wall and CPU to the first 200."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-start-") as tmp:
        project = Path(tmp) / "p"
        init_project(project)
        for _ in range(times):
            port = free_port()
            with started(ui_command(project, port), dict(os.environ), Path(tmp) / "ui.log") as p:
                wall = wait_up(f"http://127.0.0.1:{port}/experiments", p)
                rows.append((wall, cpu_s(p.pid), os.getloadavg()[0]))
    print(f"{'run':<5}{'wall s':>8}{'cpu s':>8}{'load':>7}")
    for i, (wall, cpu, load) in enumerate(rows, 1):
        print(f"{i:<5}{wall:>8.2f}{cpu:>8.2f}{load:>7.1f}")
    wall = statistics.median(r[0] for r in rows)
    cpu = statistics.median(r[1] for r in rows)
    print(f"median: {wall:.2f} s wall, {cpu:.2f} s CPU (user + system) to the first 200")
    ok = wall < TARGET_OPEN_S
    print(f"  {'ok  ' if ok else 'MISS'} modelyard ui answers its first 200 in < 1 s")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--startup", type=int, default=0, metavar="N", help="only time the start-up, N times"
    )
    args = parser.parse_args()
    if args.startup:
        return startup_only(args.startup)
    load = os.getloadavg()[0]
    print(f"{args.runs} runs x {PARAMS} params x {METRICS} metrics; load average {load:.1f}")
    data = make_data(args.runs)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp, sync_playwright() as pw:
        work = Path(tmp)
        data_file = work / "data.json"
        data_file.write_text(json.dumps(data))
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        start = time.perf_counter()
        sqlite_settings = fill_modelyard(
            f"sqlite:///{work / 'my' / 'modelyard.db'}", work / "my", data
        )
        print(f"filled modelyard (SQLite) in {time.perf_counter() - start:.1f} s", flush=True)
        results.append(
            modelyard_side("modelyard SQLite", sqlite_settings, data, page, args.repeats)
        )
        pg_url = os.environ.get("MODELYARD_BENCH_PG_URL")
        if pg_url:
            with pg_database(pg_url) as url:
                pg_settings = fill_modelyard(url, work / "pg", data)
                results.append(
                    modelyard_side("modelyard PostgreSQL", pg_settings, data, page, args.repeats)
                )
        mlflow = mlflow_side(data_file, work, page, args.repeats)
        browser.close()
    for result in results:
        check_equal(result["page"], mlflow["page"])
    print("outputs equal: the same 100 runs, params and metrics on every side")
    print()
    print(
        f"{'side':<22}{'open s':>9}{'open cpu s':>12}{'server ms':>11}{'rendered ms':>13}"
        f"{'compare ms':>12}"
    )
    for r in [*results, mlflow]:
        compare = f"{r['compare_s'] * 1000:>12.0f}" if "compare_s" in r else f"{'-':>12}"
        print(
            f"{r['label']:<22}{r['open_s']:>9.2f}{r['open_cpu_s']:>12.2f}"
            f"{r['server_s'] * 1000:>11.1f}{r['rendered_s'] * 1000:>13.0f}{compare}"
        )
    print()
    failed = False
    for r in results:
        ratio = mlflow["server_s"] / r["server_s"]
        rendered_ratio = mlflow["rendered_s"] / r["rendered_s"]
        checks = [
            (f"{r['label']}: modelyard ui's first 200 in < 1 s", r["open_s"] < TARGET_OPEN_S),
            (f"{r['label']}: runs page server time < 100 ms", r["server_s"] < TARGET_SERVER_S),
            (f"{r['label']}: {ratio:.1f}x MLflow's runs/search (>= 5x)", ratio >= TARGET_RATIO),
            (f"{r['label']}: compare rendered < 1 s", r["compare_s"] < TARGET_COMPARE_S),
        ]
        print(f"{r['label']}: rendered page {rendered_ratio:.1f}x faster than MLflow's page")
        for name, ok in checks:
            print(f"  {'ok  ' if ok else 'MISS'} {name}")
            failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
