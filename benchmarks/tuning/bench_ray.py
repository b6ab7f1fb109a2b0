"""Tuning on Ray against tuning locally: 40 trials, 2 workers, one seed, in one run.

Run: ``.venv/bin/python benchmarks/tuning/bench_ray.py [--trials 40] [--workers 2]``
(``--address HOST:PORT`` uses a running cluster; without it Ray starts a local one with
``--workers`` CPUs). Writes ``benchmarks/tuning/results/latest.json``.

Each trial fits a HistGradientBoosting classifier (one OpenMP thread) on the same
generated data set (scikit-learn's ``make_classification``, fixed seed) and returns its
log loss on a fixed validation split; the search space has four parameters. Rows:

- ``local, 1 worker``: ``tune(..., n_jobs=1)``, the sequential reference;
- ``local, 2 workers``: ``tune(..., n_jobs=2, engine="local")`` (forked processes);
- ``ray, 2 workers``: ``tune(..., n_jobs=2, engine="ray")`` (Ray tasks).

Both 2-worker rows use the same seed, so they must give the same trials (parameters,
values, states) and the same best value: checked, and the script exits 1 when they
differ. Wall time is the whole ``tune`` call (Ray's connection and start-up are timed
separately, once, before). Every study writes to its own project on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
# a local cluster started by ray.init() would otherwise generate ~/.ray/auth_token, and
# with that file present every later `ray start` on the machine turns token auth on (the
# test cluster's driver then cannot connect): this benchmark's cluster is 127.0.0.1 only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import optuna

import modelyard
from modelyard.config import load_settings
from modelyard.engine import connect_ray
from modelyard.pipelines.tuning import TuneResult, tune

RESULTS = Path(__file__).with_name("results")
SEED = 20261206
SPACE: dict[str, Any] = {
    "learning_rate": (0.02, 0.5, "log"),
    "max_leaf_nodes": (4, 48),
    "l2_regularization": (1e-6, 1.0, "log"),
    "max_iter": (20, 80),
}


def make_objective() -> Any:
    """The objective, closing over its data (shipped once to the Ray workers by value)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=6000, n_features=20, n_informative=8, random_state=SEED, flip_y=0.05
    )
    train, valid = slice(0, 4000), slice(4000, None)

    def objective(params: dict[str, Any]) -> float:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.metrics import log_loss
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            model = HistGradientBoostingClassifier(random_state=0, **params)
            model.fit(X[train], y[train])
            return float(log_loss(y[valid], model.predict_proba(X[valid])))

    return objective


def _project(root: Path, address: str | None) -> Path:
    modelyard.init_project(root)
    if address:
        config = root / "modelyard.yaml"
        config.write_text(config.read_text() + f"\nray:\n  address: {address}\n")
    return root


def _run(
    project: Path, name: str, n_trials: int, n_jobs: int, engine: str
) -> tuple[TuneResult, float]:
    objective = make_objective()
    start = time.perf_counter()
    result = tune(
        objective, space=SPACE, n_trials=n_trials, n_jobs=n_jobs, seed=SEED, study=name,
        engine=engine, project=project,
    )  # fmt: skip
    return result, time.perf_counter() - start


def _trials(result: TuneResult) -> list[tuple[Any, ...]]:
    return [(t.number, t.state.name, t.params, t.value) for t in result.study.get_trials()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--address", default=None, help="a running Ray cluster (host:port)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-tune-ray-") as tmp:
        project = _project(Path(tmp) / "project", args.address)
        start = time.perf_counter()
        if args.address is None:
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        connect_ray(load_settings(project, environ={}))
        ray_start_s = time.perf_counter() - start
        rows = {}
        for label, n_jobs, engine in (
            ("local, 1 worker", 1, "local"),
            (f"local, {args.workers} workers", args.workers, "local"),
            (f"ray, {args.workers} workers", args.workers, "ray"),
        ):
            result, wall = _run(project, label.replace(", ", "-").replace(" ", ""), args.trials,
                                n_jobs, engine)  # fmt: skip
            rows[label] = (result, wall)
        ray.shutdown()
    local_label, ray_label = f"local, {args.workers} workers", f"ray, {args.workers} workers"
    local, ray_result = rows[local_label][0], rows[ray_label][0]
    same_trials = _trials(local) == _trials(ray_result)
    same_best = local.best_value == ray_result.best_value and local.best_value is not None
    base = rows["local, 1 worker"][1]
    print(f"{args.trials} trials, seed {SEED}; Ray connect/start {ray_start_s:.1f} s (not in rows)")
    print(f"{'engine':<20} {'wall s':>8} {'trials/s':>9} {'vs 1 worker':>12} {'best log loss':>14}")
    table = []
    for label, (result, wall) in rows.items():
        print(
            f"{label:<20} {wall:>8.2f} {args.trials / wall:>9.2f} {base / wall:>11.2f}x "
            f"{result.best_value:>14.6f}"
        )
        table.append({"engine": label, "wall_s": wall, "trials_per_s": args.trials / wall,
                      "speedup_vs_1_worker": base / wall, "best_value": result.best_value,
                      "complete": result.n_complete})  # fmt: skip
    ray_wall, local_wall = rows[ray_label][1], rows[local_label][1]
    print(f"ray / local ({args.workers} workers) wall time: {ray_wall / local_wall:.2f}")
    print(f"same trials (params, values, states) local vs ray: {same_trials}")
    print(f"same best value local vs ray: {same_best}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {"trials": args.trials, "workers": args.workers, "seed": SEED,
             "ray_start_s": ray_start_s, "rows": table, "same_trials": same_trials,
             "same_best_value": same_best, "ray_over_local": ray_wall / local_wall,
             "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_1m": os.getloadavg()[0]},
             "best_params": ray_result.best_params},
            indent=2, default=float,
        )
        + "\n"
    )  # fmt: skip
    if not (same_trials and same_best):
        print("FAIL: the same seed gave different trials on Ray and locally", file=sys.stderr)
        return 1
    if not all(np.isfinite(r[0].best_value or np.nan) for r in rows.values()):
        print("FAIL: a study has no finite best value", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
