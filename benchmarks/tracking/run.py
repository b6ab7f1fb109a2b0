"""Tracking benchmark: modelyard against MLflow, side by side, both on SQLite, same data.

What it measures (every task in a fresh process per side, on a fresh SQLite file in a temp
folder; the two sides run each task back to back, so a busy machine hits both alike):

1. 10,000 single ``log_metric`` calls in one run. MLflow writes each call before it
   returns; modelyard buffers, so its time includes the final ``client.flush()``.
1b. The same against MLflow's asynchronous logging (``log_metric(...,
   synchronous=False)``, as ``MLFLOW_ENABLE_ASYNC_LOGGING=true`` makes every call),
   timed up to ``mlflow.flush_async_logging()``: both sides buffer, both flush.
2. The same 10,000 points through batch logging: MLflow ``MlflowClient.log_batch`` in
   chunks of 1,000 (its limit), modelyard ``client.log_batch`` once; both flushed.
3. Creating 200 runs with 5 params and 3 metrics each (start, log, end).
4. ``search_runs`` over those runs with ``metrics.auc > 0.5 and params.model = 'hgb'``
   ordered by ``metrics.auc DESC``: the median of 20 calls.
5. Creating a fresh store: the first use of a new SQLite file, migrations included, each
   in a fresh subprocess with the library already imported (median of 3).
6. Digesting a 1M x 10 float DataFrame (median of 3); plus, not timed, whether each
   digest changes when one cell in row 15,000 changes (MLflow hashes the first 10,000).

It prints MLflow's time, modelyard's, the ratio MLflow / modelyard (above 1: modelyard is
faster) and the target (100x for single calls against MLflow's synchronous default, 3x
for the rest, asynchronous single calls included), writes every figure to
``benchmarks/tracking/results/latest.json``, and exits 1 when a target is missed or the
two sides did not store the same thing.

Run it with the project's python (``make bench-tracking`` does)::

    .venv/bin/python benchmarks/tracking/run.py [--plain] [--keep] [--points 10000] ...

MLflow never enters the project's venv: the first run installs ``mlflow pandas`` into
``~/.cache/modelyard-bench/mlflow-venv`` (about 850 MB, about a minute; set
``MODELYARD_BENCH_CACHE`` to put it elsewhere) and later runs reuse it. The whole
benchmark takes about two minutes, most of it MLflow's 10,000 single calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import CHANGED_ROW, MARKER, SEARCH_FILTER, SEARCH_ORDER  # noqa: E402
from mlflow_env import QUIET_ENV, ensure_mlflow_venv  # noqa: E402

RESULTS = HERE / "results" / "latest.json"


@dataclass(frozen=True)
class Row:
    key: str  # the field in both sides' results
    label: str
    target: float  # the least MLflow / modelyard ratio that passes


def _rows(args: argparse.Namespace) -> list[Row]:
    return [
        Row("single_s", f"{args.points:,} single log_metric calls (+ flush)", 100.0),
        Row("single_async_s", f"{args.points:,} single calls, MLflow async (+ flush)", 3.0),
        Row("batch_s", f"{args.points:,} points through log_batch (+ flush)", 3.0),
        Row("create_runs_s", f"create {args.runs} runs x 5 params + 3 metrics", 3.0),
        Row("search_s", f"search_runs filter + order, median of {args.searches}", 3.0),
        Row("fresh_store_s", f"fresh SQLite store, median of {args.stores}", 3.0),
        Row("digest_s", f"digest {args.frame_rows:,} x 10 float frame, median", 3.0),
    ]


def write_data(folder: Path, args: argparse.Namespace) -> None:
    """The data both sides read: metric points, run specs, the frame."""
    rng = np.random.default_rng(20240601)
    np.save(folder / "points.npy", rng.random(args.points))
    models = ["hgb", "rf", "lr", "xgb"]
    runs = [
        {
            "params": {
                "model": models[i % len(models)],
                "learning_rate": round(float(rng.uniform(0.01, 0.3)), 4),
                "max_depth": int(rng.integers(2, 12)),
                "n_estimators": int(rng.integers(50, 500)),
                "seed": i,
            },
            "metrics": {
                "auc": round(float(rng.uniform(0.4, 0.95)), 6),
                "loss": round(float(rng.uniform(0.1, 1.0)), 6),
                "accuracy": round(float(rng.uniform(0.5, 0.99)), 6),
            },
        }
        for i in range(args.runs)
    ]
    (folder / "runs.json").write_text(json.dumps(runs))
    np.save(folder / "frame.npy", rng.random((args.frame_rows, 10)))


def _env() -> dict[str, str]:
    """The environment of a side: no project or MLflow settings leak in; MLflow quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELYARD_"))}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return {**env, **QUIET_ENV}


def run_side(python: str, script: str, argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run one task of one side in a fresh subprocess and return its results line."""
    cwd.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [python, str(HERE / script), *argv, "--work", str(cwd)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise SystemExit(f"{script} {' '.join(argv)} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result["load_before"] = load
    return result


def run_both(
    sides: dict[str, tuple[str, str]], tasks: list[tuple[str, list[str]]], root: Path
) -> dict[str, dict[str, Any]]:
    """Each task on both sides back to back, alternating which goes first.

    Running task by task (not side by side) keeps a busy machine's swings from landing
    on one side only. Repeated tasks (fresh-store) keep every time and their median.
    """
    merged: dict[str, dict[str, Any]] = {name: {"loads": []} for name in sides}
    repeated: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
    for n, (task, argv) in enumerate(tasks):
        order = list(sides) if n % 2 == 0 else list(reversed(sides))
        for name in order:
            python, script = sides[name]
            print(f"  {task:<12} {name}", flush=True)
            result = run_side(python, script, [task, *argv], root / name / f"{n}-{task}")
            merged[name]["loads"].append(result.pop("load_before"))
            if task == "fresh-store":
                repeated[name].setdefault("fresh_store_all_s", []).append(
                    result.pop("fresh_store_s")
                )
            merged[name].update(result)
    for name, found in repeated.items():
        for key, times in found.items():
            merged[name][key] = times
            merged[name][key.replace("_all", "")] = statistics.median(times)
    return merged


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _table(rows: list[dict[str, Any]], plain: bool) -> None:
    head = ["benchmark", "MLflow", "modelyard", "MLflow/modelyard", "target", "result"]
    cells = [
        [
            r["label"],
            _fmt(r["mlflow_s"]),
            _fmt(r["modelyard_s"]),
            f"{r['ratio']:.1f}x",
            f">= {r['target']:g}x",
            "PASS" if r["pass"] else "MISS",
        ]
        for r in rows
    ]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        return
    table = Table(title="Tracking: MLflow vs modelyard (SQLite, same data, same machine)")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for c in cells:
        style = "green" if c[-1] == "PASS" else "red"
        table.add_row(*c[:-1], f"[{style}]{c[-1]}[/{style}]")
    Console(width=140).print(table)


def _checks(my: dict[str, Any], ml: dict[str, Any], points: int) -> list[str]:
    """Both sides must have done the same work; say where they did not."""
    problems = []
    for side in (my, ml):
        for key in ("single_stored", "single_async_stored", "batch_stored"):
            if side[key] != points:
                problems.append(f"{side['library']} stored {side[key]} points for {key}")
    if my["search_hits"] != ml["search_hits"]:
        problems.append(f"search hits differ: {my['search_hits']} vs {ml['search_hits']}")
    if not np.allclose(my["search_top_auc"], ml["search_top_auc"]):
        problems.append(f"top auc differ: {my['search_top_auc']} vs {ml['search_top_auc']}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description="modelyard vs MLflow tracking benchmark (see the module docstring)"
    )
    parser.add_argument("--points", type=int, default=10_000, help="metric points")
    parser.add_argument("--runs", type=int, default=200, help="runs to create and search")
    parser.add_argument("--searches", type=int, default=20, help="search_runs repeats")
    parser.add_argument("--stores", type=int, default=3, help="fresh-store repeats")
    parser.add_argument("--frame-rows", type=int, default=1_000_000, help="rows to digest")
    parser.add_argument("--digests", type=int, default=3, help="digest repeats")
    parser.add_argument("--plain", action="store_true", help="plain table, no rich")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    if args.frame_rows <= CHANGED_ROW:
        parser.error(f"--frame-rows must be above {CHANGED_ROW} for the digest check")

    mlflow_python, install_s = ensure_mlflow_venv()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    try:
        data = root / "data"
        data.mkdir()
        write_data(data, args)
        data_args = ["--data", str(data)]
        repeat = ["--searches", str(args.searches), "--digests", str(args.digests)]
        tasks = [
            ("single", data_args),
            ("single-async", data_args),
            ("batch", data_args),
            ("runs", [*data_args, *repeat]),
            *[("fresh-store", data_args)] * args.stores,
            ("digest", [*data_args, *repeat]),
        ]
        sides = {
            "modelyard": (sys.executable, "modelyard_side.py"),
            "mlflow": (str(mlflow_python), "mlflow_side.py"),
        }
        print(f"data in {root}; each task on both sides (MLflow's single calls: ~1 min):")
        results = run_both(sides, tasks, root)
        my, ml = results["modelyard"], results["mlflow"]
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - started

    rows = []
    for row in _rows(args):
        ratio = ml[row.key] / my[row.key]
        rows.append(
            {
                "key": row.key,
                "label": row.label,
                "mlflow_s": ml[row.key],
                "modelyard_s": my[row.key],
                "ratio": ratio,
                "target": row.target,
                "pass": ratio >= row.target,
            }
        )
    print()
    _table(rows, args.plain)
    per_call = {side["library"]: side["single_s"] / args.points for side in (ml, my)}
    print(
        f"per single call: MLflow {_fmt(per_call['mlflow'])}, "
        f"MLflow async {_fmt(ml['single_async_s'] / args.points)} "
        f"({_fmt(ml['single_async_calls_s'] / args.points)} in the call, the rest in its "
        "flush), "
        f"modelyard {_fmt(per_call['modelyard'])} (flush included)"
    )
    print(
        f"digest after changing one cell in row {CHANGED_ROW:,}: "
        f"MLflow {'CHANGED' if ml['digest_changed'] else 'UNCHANGED (change missed)'}, "
        f"modelyard {'CHANGED' if my['digest_changed'] else 'UNCHANGED (change missed)'}"
    )
    print(
        f"search '{SEARCH_FILTER}' order '{SEARCH_ORDER}': "
        f"{my['search_hits']} hits (modelyard), {ml['search_hits']} (MLflow)"
    )
    problems = _checks(my, ml, args.points)
    busiest = max(my["loads"] + ml["loads"])
    cpus = os.cpu_count() or 1
    if busiest > cpus:
        print(
            f"NOTE: the machine was busy (load average up to {busiest:.1f} on {cpus} CPUs): "
            "absolute times are inflated and the ratios are noisy"
        )
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    missed = [r["label"] for r in rows if not r["pass"]]
    for label in missed:
        print(f"TARGET MISSED: {label}")
    versions = {
        "mlflow": ml["version"],
        "modelyard": my["version"],
        "python": platform.python_version(),
        "sqlalchemy (project)": importlib.metadata.version("sqlalchemy"),
    }
    install = "reused" if install_s is None else f"installed in {install_s:.1f} s"
    print(
        f"MLflow {versions['mlflow']} ({install}), modelyard {versions['modelyard']}, "
        f"Python {versions['python']}, {os.cpu_count()} CPUs; total {total_s:.1f} s"
    )

    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "max_load_average": busiest,
        },
        "versions": versions,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "mlflow_install_s": install_s,
        "total_s": total_s,
        "rows": rows,
        "digest_change_in_row": CHANGED_ROW,
        "digest_changed": {"mlflow": ml["digest_changed"], "modelyard": my["digest_changed"]},
        "checks_failed": problems,
        "targets_missed": missed,
        "sides": {"mlflow": ml, "modelyard": my},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    if problems or missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
