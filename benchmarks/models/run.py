"""Models benchmark: modelyard against MLflow for logging, registering and loading a model,
and a latency table of native prediction against modelyard's chosen serving runtime.

What it measures (each side in a fresh process on a fresh SQLite store in a temp folder,
both sides on the same 10,000 x 10 synthetic rows and the same fitted model):

1. Logging and registering a 50-tree HistGradientBoosting classifier inside a run,
   ``--logs`` times (median; the first, cold call is shown too). MLflow as its docs show
   it: ``infer_signature(X, model.predict_proba(X))`` then ``mlflow.sklearn.log_model(
   model, name=..., registered_model_name=..., input_example=X.head(5), signature=...)``,
   once with its default requirements inference and once with explicit
   ``pip_requirements`` (the same pins it infers). It needs ``skops_trusted_types`` for
   HistGradientBoosting, or it refuses to log. modelyard: ``modelyard.log_model(model,
   name=..., training_frame=X)``, which also infers the signature and stores the example,
   500 held-out rows with their scores and the reference profile. Target: 10x against
   MLflow's default; the ratio against explicit requirements is shown as it is.
2. Loading by alias, ``--loads`` times (median): MLflow
   ``mlflow.pyfunc.load_model("models:/NAME@champion")`` (alias set with
   ``MlflowClient.set_registered_model_alias``), modelyard ``modelyard.load_model(
   "NAME@champion")`` (which verifies every file's sha256).
3. Latency per flavor (HistGradientBoosting 200 trees, RandomForest 100 trees, a
   ColumnTransformer+OneHotEncoder+LogisticRegression pipeline, XGBoost, LightGBM, a small
   torch MLP): native ``predict_proba`` on a DataFrame against the serving runtime that
   ``modelyard.models.optimize.optimize_package`` chose, scored on numpy input built in
   signature order; p50 of ``--calls`` 1-row calls and of ``--batch-calls`` 1000-row
   calls, one thread. Also the runtimes table the optimizer recorded in the manifest.
   Target: the serving runtime 20x faster than native for 1 row of the HistGradientBoosting,
   counting what a caller pays: ``build_inputs`` from the 1-row DataFrame and ``scores``,
   per call (the prebuilt-inputs time is shown beside it). A missed target exits 1.

Every side runs with one thread: ``OMP_NUM_THREADS=1`` (and the MKL/OpenBLAS/numexpr
equivalents) is set before numpy is imported anywhere.

Run it with the project's python (``make bench-models`` does)::

    .venv/bin/python benchmarks/models/run.py [--plain] [--keep] [--logs 5] [--loads 5] ...

MLflow never enters the project's venv: it runs in the venv the tracking benchmark
keeps (``benchmarks/tracking/mlflow_env.py``: ``~/.cache/modelyard-bench/mlflow-venv``,
created on first use). Results go to ``benchmarks/models/results/latest.json``.
"""

from __future__ import annotations

import os

#: one thread everywhere, set before numpy (or anything using OpenMP/BLAS) is imported
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
os.environ.update(THREAD_ENV)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ALIAS, MARKER, MODEL_NAME, write_training  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
LOG_TARGET = 10.0
LATENCY_TARGET = 20.0
LATENCY_TARGET_FLAVOR = "hgb"
#: the largest |serving - native| on a class probability this benchmark accepts
PARITY_LIMIT = 1e-4
#: reasons longer than this are cut in the table and printed whole below it
REASON_WIDTH = 60


def _tracking_mlflow_env() -> ModuleType:
    """The tracking benchmark's MLflow-venv helper, imported by path.

    By path, not through ``sys.path``: both benchmark folders have a ``common`` module.
    """
    path = HERE.parent / "tracking" / "mlflow_env.py"
    spec = importlib.util.spec_from_file_location("_bench_tracking_mlflow_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlflow_env = _tracking_mlflow_env()


def _env() -> dict[str, str]:
    """The environment of a side: no project or MLflow settings leak in; quiet; 1 thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELYARD_"))}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return {**env, **mlflow_env.QUIET_ENV, **THREAD_ENV}


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


# -- output --------------------------------------------------------------------------


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _us(micros: float | None) -> str:
    return "-" if micros is None else _fmt(micros / 1e6)


def _print_table(title: str, head: list[str], cells: list[list[str]], plain: bool) -> None:
    """A table; the last column's PASS/MISS is coloured when rich is there."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(title)
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        print()
        return
    table = Table(title=title)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    styles = {"PASS": "green", "MISS": "red"}
    for c in cells:
        last = f"[{styles[c[-1]]}]{c[-1]}[/{styles[c[-1]]}]" if c[-1] in styles else c[-1]
        table.add_row(*c[:-1], last)
    Console(width=200).print(table)


def _short(text: str) -> str:
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."


def _verdict(ratio: float | None, target: float | None) -> str:
    if target is None or ratio is None:
        return "-"
    return "PASS" if ratio >= target else "MISS"


def registry_rows(ml: dict[str, Any], my: dict[str, Any], logs: int, loads: int) -> list[dict]:
    """The rows of the log/register/load table, with ratios MLflow / modelyard."""
    specs = [
        (
            "log_default",
            f"log + register, MLflow default (infers reqs), median of {logs}",
            ml["log_default_s"],
            my["log_s"],
            LOG_TARGET,
        ),
        (
            "log_explicit",
            f"log + register, MLflow explicit pip_requirements, median of {logs}",
            ml["log_explicit_s"],
            my["log_s"],
            None,
        ),
        (
            "log_first",
            "first log + register in the process (cold; MLflow default)",
            ml["log_default_all_s"][0],
            my["log_all_s"][0],
            None,
        ),
        ("load", f"load by alias @{ALIAS}, median of {loads}", ml["load_s"], my["load_s"], None),
    ]
    rows = []
    for key, label, ml_s, my_s, target in specs:
        ratio = ml_s / my_s
        rows.append(
            {
                "key": key,
                "label": label,
                "mlflow_s": ml_s,
                "modelyard_s": my_s,
                "ratio": ratio,
                "target": target,
                "pass": None if target is None else ratio >= target,
            }
        )
    return rows


def _print_registry(rows: list[dict], plain: bool) -> None:
    head = ["benchmark", "MLflow", "modelyard", "MLflow/modelyard", "target", "result"]
    cells = [
        [
            r["label"],
            _fmt(r["mlflow_s"]),
            _fmt(r["modelyard_s"]),
            f"{r['ratio']:.1f}x",
            "-" if r["target"] is None else f">= {r['target']:g}x",
            _verdict(r["ratio"], r["target"]),
        ]
        for r in rows
    ]
    _print_table(
        "Log, register, load: MLflow vs modelyard (SQLite, same model)", head, cells, plain
    )


def latency_table(rows: list[dict]) -> list[dict]:
    """Per flavor: native and serving p50s, speedups, the target verdict."""
    out = []
    for row in rows:
        entry: dict[str, Any] = {"flavor": row["flavor"], "model": row.get("model", "")}
        if "skipped" in row or "native_1" not in row:
            entry["note"] = row.get("skipped") or row.get("error", "failed")
            out.append(entry)
            continue
        entry["native_1_us"] = row["native_1"]["p50_us"]
        entry["native_1000_us"] = row["native_1000"]["p50_us"]
        entry["serving_runtime"] = row.get("serving_runtime")
        for key in ("serving_1", "serving_1000", "serving_1_from_frame", "serving_1_from_record"):
            entry[f"{key}_us"] = row[key]["p50_us"] if row.get(key) else None
        # the 1-row target counts what a caller pays: inputs built from the 1-row DataFrame
        entry["speedup_1"] = (
            entry["native_1_us"] / entry["serving_1_from_frame_us"]
            if entry["serving_1_from_frame_us"]
            else None
        )
        entry["speedup_1_prebuilt"] = (
            entry["native_1_us"] / entry["serving_1_us"] if entry["serving_1_us"] else None
        )
        entry["frame_path_equal"] = row.get("frame_path_equal")
        entry["speedup_1000"] = (
            entry["native_1000_us"] / entry["serving_1000_us"] if entry["serving_1000_us"] else None
        )
        entry["parity_max_abs_diff"] = row.get("parity_max_abs_diff")
        entry["target"] = LATENCY_TARGET if row["flavor"] == LATENCY_TARGET_FLAVOR else None
        entry["pass"] = (
            None
            if entry["target"] is None or entry["speedup_1"] is None
            else entry["speedup_1"] >= entry["target"]
        )
        if row.get("error"):
            entry["note"] = row["error"]
        out.append(entry)
    return out


def _print_latency(table: list[dict], rows: list[dict], plain: bool) -> None:
    head = [
        "flavor",
        "serving runtime",
        "native 1 row",
        "serving 1 row (frame)",
        "prebuilt",
        "from record",
        "speedup",
        "native 1000",
        "serving 1000",
        "speedup",
        "max |diff|",
        "target",
        "result",
    ]
    cells = []
    for e in table:
        if "native_1_us" not in e:
            cells.append([e["flavor"], "-", *["-"] * 9, "-", "skipped"])
            continue
        diff = e.get("parity_max_abs_diff")
        cells.append(
            [
                e["flavor"],
                e.get("serving_runtime") or "-",
                _us(e["native_1_us"]),
                _us(e["serving_1_from_frame_us"]),
                _us(e["serving_1_us"]),
                _us(e["serving_1_from_record_us"]),
                "-" if e["speedup_1"] is None else f"{e['speedup_1']:.1f}x",
                _us(e["native_1000_us"]),
                _us(e["serving_1000_us"]),
                "-" if e["speedup_1000"] is None else f"{e['speedup_1000']:.1f}x",
                "-" if diff is None else f"{diff:.1e}",
                "-" if e["target"] is None else f">= {e['target']:g}x (1 row)",
                _verdict(e["speedup_1"], e["target"]),
            ]
        )
    _print_table(
        "Prediction latency, p50 per call, 1 thread, timed here: native vs the serving "
        "runtime optimize_package chose",
        head,
        cells,
        plain,
    )
    print(
        "  native: predict_proba on a DataFrame (torch: the nn.Module on a float32 tensor of "
        "it); serving 1 row (frame): runtimes.build_inputs from the same 1-row DataFrame "
        "and runtime.scores, per call (what a caller pays; the 1-row speedup and target use "
        "it); prebuilt: runtime.scores on Inputs built beforehand; from record: build_inputs "
        "from a {column: value} record and scores; 1000 rows: prebuilt Inputs; speedups are "
        "native / serving; max |diff| over all 10,000 rows"
    )
    for e in table:
        if e.get("note"):
            print(f"  {e['flavor']}: {e['note']}")
    recorded = [
        [
            row["flavor"],
            r["name"] + (" *" if r["name"] == row.get("serving_runtime") else ""),
            r["status"],
            "-" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.1e}",
            "-" if r.get("label_flips") is None else str(r["label_flips"]),
            _us(r.get("latency_1_row_us")),
            _us(r.get("latency_1000_rows_us")),
            _short(r.get("reason") or ""),
        ]
        for row in rows
        for r in row.get("runtimes", [])
    ]
    if recorded:
        head = ["flavor", "runtime", "status", "max |diff|", "flips", "1 row", "1000 rows"]
        if any(cells[-1] for cells in recorded):
            head.append("reason")
        else:  # no runtime failed: no empty column
            recorded = [cells[:-1] for cells in recorded]
        print()
        _print_table(
            "Runtimes table that optimize_package recorded in each manifest (* = serving)",
            head,
            recorded,
            plain,
        )
    for row in rows:
        for r in row.get("runtimes", []):
            if r.get("reason") and len(r["reason"]) > REASON_WIDTH:
                print(f"  {row['flavor']} {r['name']}: {r['reason']}")
    for row in rows:
        if "optimize_s" in row:
            print(f"  optimize_package({row['flavor']}) took {row['optimize_s']:.2f} s")


def _checks(ml: dict[str, Any], my: dict[str, Any], logs: int) -> list[str]:
    """Both sides must have logged the same model and loaded it back; say where not."""
    problems = []
    if ml["model_digest"] != my["model_digest"]:
        problems.append(f"fitted models differ: {ml['model_digest']} vs {my['model_digest']}")
    if my["loaded_digest"] != my["model_digest"]:
        problems.append("modelyard's loaded model scores differently from the logged one")
    if ml["loaded_labels"] != my["loaded_labels"]:
        problems.append("the models loaded by alias predict different labels")
    if ml["versions"] != 2 * logs:
        problems.append(f"MLflow registered {ml['versions']} versions, expected {2 * logs}")
    if my["versions"] != logs:
        problems.append(f"modelyard registered {my['versions']} versions, expected {logs}")
    return problems


# -- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description="modelyard vs MLflow models benchmark (see the module docstring)"
    )
    parser.add_argument("--logs", type=int, default=5, help="log_model repeats per row")
    parser.add_argument("--loads", type=int, default=5, help="load-by-alias repeats")
    parser.add_argument("--model", choices=["hgb", "logreg"], default="hgb")
    parser.add_argument("--rows", type=int, default=10_000, help="training rows")
    parser.add_argument("--calls", type=int, default=200, help="1-row latency calls")
    parser.add_argument("--batch-calls", type=int, default=20, help="1000-row latency calls")
    parser.add_argument("--flavors", default="", help="latency rows (default: all)")
    parser.add_argument("--skip-registry", action="store_true", help="latency table only")
    parser.add_argument("--skip-latency", action="store_true", help="no latency table")
    parser.add_argument("--plain", action="store_true", help="plain tables, no rich")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()

    install_s = None
    mlflow_python = None
    if not args.skip_registry:
        mlflow_python, install_s = mlflow_env.ensure_mlflow_venv()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="modelyard-bench-models-"))
    ml: dict[str, Any] = {}
    my: dict[str, Any] = {}
    lat: dict[str, Any] = {"rows": []}
    try:
        data = root / "data"
        data.mkdir()
        write_training(data, args.rows, 10)
        common_args = ["--data", str(data), "--model", args.model]
        if not args.skip_registry:
            argv = ["registry", *common_args, "--logs", str(args.logs)]
            argv += ["--loads", str(args.loads)]
            print(f"data in {root}; threads: {THREAD_ENV['OMP_NUM_THREADS']} (OMP/MKL/BLAS)")
            print("  registry     modelyard", flush=True)
            my = run_side(sys.executable, "modelyard_side.py", argv, root / "modelyard")
            print("  registry     mlflow (its default log_model infers requirements)", flush=True)
            ml = run_side(str(mlflow_python), "mlflow_side.py", argv, root / "mlflow")
        if not args.skip_latency:
            print("  latency      modelyard (fit, log, optimize, time each flavor)", flush=True)
            argv = ["latency", *common_args, "--calls", str(args.calls)]
            argv += ["--batch-calls", str(args.batch_calls), "--flavors", args.flavors]
            lat = run_side(sys.executable, "modelyard_side.py", argv, root / "latency")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - started
    print()

    result: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": THREAD_ENV,
        "mlflow_install_s": install_s,
    }
    problems: list[str] = []
    loads = [side["load_before"] for side in (ml, my, lat) if "load_before" in side]
    if ml and my:
        rows = registry_rows(ml, my, args.logs, args.loads)
        _print_registry(rows, args.plain)
        cold = ", ".join(_fmt(t) for t in my["log_all_s"])
        print(f"  modelyard log_model times: {cold}")
        print(f"  MLflow default times: {', '.join(_fmt(t) for t in ml['log_default_all_s'])}")
        print(f"  MLflow explicit times: {', '.join(_fmt(t) for t in ml['log_explicit_all_s'])}")
        print(f"  MLflow inferred requirements: {', '.join(ml['inferred_requirements'])}")
        print(f"  modelyard recorded requirements: {my['requirements']}")
        print(f"  modelyard package files: {', '.join(my['package_files'])}")
        if ml["skops_trusted_types"]:
            print(
                "  MLflow refuses to log a HistGradientBoosting model unless the call passes "
                f"skops_trusted_types={ml['skops_trusted_types']}; this benchmark passes it"
            )
        problems += _checks(ml, my, args.logs)
        result["registry"] = {"rows": rows}
        print()
    if lat["rows"]:
        table = latency_table(lat["rows"])
        _print_latency(table, lat["rows"], args.plain)
        result["latency"] = {"table": table}
        for e in table:
            if e.get("pass") is False:
                problems.append(
                    f"{e['flavor']}: 1-row speedup {e['speedup_1']:.1f}x (inputs built from the "
                    f"DataFrame) misses the target {e['target']:g}x"
                )
            if e.get("frame_path_equal") is False:
                problems.append(
                    f"{e['flavor']}: scores built per call from the DataFrame differ from the "
                    "prebuilt ones"
                )
            diff = e.get("parity_max_abs_diff")
            if diff is not None and diff > PARITY_LIMIT:
                problems.append(
                    f"{e['flavor']}: the serving runtime differs from native by {diff:.2g} "
                    f"(> {PARITY_LIMIT:g}) on the training rows"
                )
        print(
            f"  one thread: {' '.join(f'{k}={v}' for k, v in THREAD_ENV.items())} set before "
            "numpy is imported; torch.set_num_threads(1) for the torch row"
        )
    cpus = os.cpu_count() or 1
    busiest = max(loads, default=0.0)
    if busiest > cpus:
        print(
            f"NOTE: the machine was busy (load average up to {busiest:.1f} on {cpus} CPUs): "
            "absolute times are inflated and the ratios are noisy"
        )
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    versions = {
        "mlflow": ml.get("version"),
        "modelyard": (my or lat).get("version"),
        "python": platform.python_version(),
    }
    install = "reused" if install_s is None else f"installed in {install_s:.1f} s"
    print(
        f"MLflow {versions['mlflow']} ({install}), modelyard {versions['modelyard']}, "
        f"Python {versions['python']}, {cpus} CPUs; total {total_s:.1f} s"
    )
    result.update(
        {
            "machine": {
                "platform": platform.platform(),
                "cpus": cpus,
                "max_load_average": busiest,
            },
            "versions": versions,
            "total_s": total_s,
            "model_name": MODEL_NAME,
            "checks_failed": problems,
            "sides": {"mlflow": ml, "modelyard": my, "latency": lat},
        }
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
