"""Gates benchmark: ``run_gates`` against MLflow's ``mlflow.models.evaluate``.

What it measures, both sides on the same 100,000 evaluation rows (synthetic flights:
8 numeric features, a distance and an origin airport 0-4) and the same two fitted
200-tree HistGradientBoosting classifiers (candidate and champion, fitted here once on
100,000 other rows and handed to each side):

- modelyard (``modelyard_side.py``, a fresh process, a fresh SQLite project): both
  models registered, the champion aliased ``production`` (untimed); then the wall time
  of ``run_gates(settings, "flights-delay/2", against="production", eval=FILE,
  gates=[...])`` with metric gates (auc min, log_loss max; bootstrap CIs), a champion
  gate (paired DeLong on AUC, non-inferiority margin 0.01) and a slice gate over the 5
  origins: reading the file, loading and scoring both models, every statistic and
  storing the evaluation. Target: under 3 s, else exit 1.
- MLflow (``mlflow_side.py``, in its own venv): both models logged (untimed); then the
  wall time of ``mlflow.models.evaluate`` of the candidate and of the champion (MLflow 3
  has no champion comparison or slices, so it is two evaluations and no test).

Where both compute a metric (AUC, log loss, accuracy, F1, precision, recall of the
candidate) the values must agree to 1e-9, or the run exits 1. Every side runs with
one thread (``OMP_NUM_THREADS=1``). Run with the project's python (``make bench-gates``)::

    .venv/bin/python benchmarks/gates/run.py [--keep]

Results go to ``benchmarks/gates/results/latest.json``.
"""

from __future__ import annotations

import os

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
os.environ.update(THREAD_ENV)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
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

from common import LABEL, MARKER, ROWS, TREES, make_frame  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
TARGET_S = 3.0
TOLERANCE = 1e-9
#: MLflow's name of each metric both sides compute -> modelyard's
OVERLAP = {
    "roc_auc": "auc",
    "log_loss": "log_loss",
    "accuracy_score": "accuracy",
    "f1_score": "f1",
    "precision_score": "precision",
    "recall_score": "recall",
}


def _mlflow_env() -> ModuleType:
    """The tracking benchmark's MLflow-venv helper, imported by path."""
    path = HERE.parent / "tracking" / "mlflow_env.py"
    spec = importlib.util.spec_from_file_location("_bench_tracking_mlflow_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELYARD_"))}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return {**env, **extra, **THREAD_ENV}


def run_side(python: str, script: str, argv: list[str], work: Path, env: dict[str, str]) -> Any:
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [python, str(HERE / script), *argv, "--work", str(work)],
        cwd=work,
        env=_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise SystemExit(f"{script} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result["load_before"] = load
    return result


def fit(work: Path) -> tuple[Path, Path]:
    """Fit candidate and champion on the training rows; write them and the eval rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = make_frame(ROWS, seed=1)
    features = train.drop(columns=[LABEL])
    models = work / "models"
    models.mkdir(parents=True)
    for which, seed, depth in (("candidate", 3, None), ("champion", 4, 3)):
        model = HistGradientBoostingClassifier(
            max_iter=TREES, max_depth=depth, early_stopping=False, random_state=seed
        ).fit(features, train[LABEL])
        (models / f"{which}.pkl").write_bytes(pickle.dumps(model))
    data = work / "eval.parquet"
    make_frame(ROWS, seed=2).to_parquet(data)
    return data, models


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gates-"))
    try:
        start = time.perf_counter()
        data, models = fit(work)
        print(
            f"fitted 2 x {TREES}-tree HGB on {ROWS:,} rows in {time.perf_counter() - start:.1f} s"
        )
        ours = run_side(
            sys.executable,
            "modelyard_side.py",
            ["--data", str(data), "--models", str(models)],
            work / "modelyard",
            {},
        )
        mlflow_env = _mlflow_env()
        python, _ = mlflow_env.ensure_mlflow_venv()
        theirs = run_side(
            str(python),
            "mlflow_side.py",
            ["--data", str(data), "--models", str(models)],
            work / "mlflow",
            mlflow_env.QUIET_ENV,
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report(ours, theirs)


def report(ours: dict[str, Any], theirs: dict[str, Any]) -> int:
    ok = True
    print()
    print(f"{'':44} {'modelyard':>12} {'MLflow ' + theirs['mlflow']:>14} {'ratio':>8}")
    ratio = theirs["seconds"] / ours["seconds"]
    print(
        f"{'wall time (evaluate 2 models, 100k rows)':44} {ours['seconds']:>10.2f} s "
        f"{theirs['seconds']:>12.2f} s {ratio:>7.1f}x"
    )
    print(
        f"{'load average (1 min) before the side':44} {ours['load_before']:>12.2f} "
        f"{theirs['load_before']:>14.2f}   (cores: {os.cpu_count()})"
    )
    print()
    print(f"{'metric (candidate)':24} {'modelyard':>20} {'MLflow':>20} {'|diff|':>10}")
    checked = []
    for theirs_name, our_name in OVERLAP.items():
        a = ours["metrics"].get(our_name)
        b = theirs["metrics"]["candidate"].get(theirs_name)
        if a is None or b is None:
            print(f"{our_name:24} {a!s:>20} {b!s:>20} {'-':>10}  (one side lacks it)")
            continue
        diff = abs(a - b)
        same = diff <= TOLERANCE
        ok &= same
        checked.append({"metric": our_name, "modelyard": a, "mlflow": b, "diff": diff})
        print(f"{our_name:24} {a:>20.12f} {b:>20.12f} {diff:>10.1e}  {'OK' if same else 'DIFFERS'}")
    champion_auc = theirs["metrics"]["champion"].get("roc_auc")
    if champion_auc is not None and ours.get("champion_auc") is not None:
        diff = abs(champion_auc - ours["champion_auc"])
        ok &= diff <= TOLERANCE
        print(
            f"{'auc (champion)':24} {ours['champion_auc']:>20.12f} {champion_auc:>20.12f} "
            f"{diff:>10.1e}  {'OK' if diff <= TOLERANCE else 'DIFFERS'}"
        )
    print()
    print("gates (modelyard):")
    for line in ours["gates"]:
        print(f"  {line}")
    print()
    met = ours["seconds"] < TARGET_S
    print(
        f"target: run_gates under {TARGET_S:.0f} s: {ours['seconds']:.2f} s "
        f"{'PASS' if met else 'MISS'}; metrics equal to {TOLERANCE:g}: {'PASS' if ok else 'MISS'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "modelyard": ours,
                "mlflow": theirs,
                "ratio": ratio,
                "metrics_checked": checked,
                "target_met": met,
                "metrics_equal": ok,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if met and ok else 1


if __name__ == "__main__":
    sys.exit(main())
