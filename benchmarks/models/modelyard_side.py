"""The modelyard half of the models benchmark; run by ``run.py`` with the project's python.

    python modelyard_side.py registry --data DATA_DIR --work WORK_DIR [--logs 5] [--loads 5]
    python modelyard_side.py latency --data DATA_DIR --work WORK_DIR [--calls 200] ...

``registry``: on a fresh project, fit the model, log and register it ``--logs`` times
inside a run with ``modelyard.log_model(model, name=..., training_frame=X)`` (which
infers the signature and stores the example, the held-out rows and the profile), set the
alias and load by it ``--loads`` times.

``latency``: for each flavor row, fit a model, log it, run ``optimize_package`` on it
(when that exists), read the runtimes table it records, and time native
``predict_proba`` on DataFrames against the serving runtime's ``scores`` on numpy input
built in signature order, for 1 row and for 1000 rows. Run it with one thread
(``OMP_NUM_THREADS=1`` and friends; ``run.py`` sets them).

Each task prints one ``BENCH-RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    ALIAS,
    CHECK_ROWS,
    MODEL_NAME,
    fit_model,
    load_training,
    median_time,
    model_digest,
    side_main,
)

#: the latency rows, in the order printed
FLAVORS = ("hgb", "rf", "pipeline", "xgboost", "lightgbm", "torch")
BATCH_ROWS = 1000
WARMUP_CALLS = 10


def _project(work: Path) -> Path:
    """A fresh project whose store is created (migrated) before any clock starts."""
    import modelyard as my

    project = work / "project"
    my.init_project(project)
    my.get_client(project)
    my.get_registry(project)
    return project


# -- registry ------------------------------------------------------------------------


def registry(args: argparse.Namespace) -> dict[str, Any]:
    import modelyard as my

    project = _project(args.work)
    X, y = load_training(args.data)
    model = fit_model(args.model, X, y)
    times: list[float] = []
    versions: list[int] = []
    for _ in range(args.logs):
        with my.start_run(experiment="bench-models", project=project):
            start = time.perf_counter()
            logged = my.log_model(model, name=MODEL_NAME, training_frame=X, project=project)
            times.append(time.perf_counter() - start)
        assert logged.version is not None
        versions.append(logged.version)
    manifest = logged.manifest

    champion = versions[-1]
    my.get_registry(project).set_alias(f"{MODEL_NAME}/{champion}", ALIAS)
    loaded: list[Any] = []

    def load() -> None:
        loaded[:] = [my.load_model(f"{MODEL_NAME}@{ALIAS}", project=project)]

    load_s, load_all_s = median_time(load, args.loads)
    labels = loaded[0].predict(X.head(CHECK_ROWS))
    return {
        "log_s": statistics.median(times),
        "log_all_s": times,
        "load_s": load_s,
        "load_all_s": load_all_s,
        "versions": len(my.get_registry(project).list_versions(MODEL_NAME)),
        "champion": champion,
        "package_files": [f.path for f in manifest.files],
        "requirements": manifest.requirements,
        "model_digest": model_digest(model, X),
        "loaded_digest": model_digest(loaded[0].native, X),
        "loaded_labels": "".join(str(int(v)) for v in labels),
    }


# -- latency -------------------------------------------------------------------------


def _numeric_frame(rows: int, columns: int, seed: int) -> tuple[Any, Any]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, columns))
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + rng.normal(scale=0.5, size=rows)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(columns)]), (logit > 0).astype(int)


def _mixed_frame(rows: int, seed: int) -> tuple[Any, Any]:
    """Eight numeric columns and one string column with 20 values."""
    X, _ = _numeric_frame(rows, 8, seed)
    rng = np.random.default_rng(seed + 1)
    codes = rng.integers(0, 20, size=rows)
    X["city"] = np.array([f"city_{c:02d}" for c in range(20)], dtype=object)[codes]
    logit = X["f0"].to_numpy() - X["f1"].to_numpy() + (codes % 3 - 1) + rng.normal(size=rows)
    return X, (logit > 0).astype(int)


def _torch_mlp(X: Any, y: Any) -> Any:
    """A 10-32-2 MLP ending in softmax, with ``classes_``: a classifier to the torch flavor."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(X.shape[1], 32), nn.ReLU(), nn.Linear(32, 2))
    features = torch.tensor(X.to_numpy(), dtype=torch.float32)
    target = torch.tensor(np.asarray(y), dtype=torch.long)
    optimizer = torch.optim.Adam(body.parameters(), lr=0.01)
    for _ in range(100):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(body(features), target)
        loss.backward()
        optimizer.step()
    net = nn.Sequential(body, nn.Softmax(dim=1)).eval()
    net.classes_ = np.array([0, 1])
    return net


def _build(flavor: str, rows: int) -> tuple[Any, Any, Any, str]:
    """The fitted model, its training frame, labels, and what it is in words."""
    if flavor == "pipeline":
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        X, y = _mixed_frame(rows, seed=7)
        numeric = [c for c in X.columns if c != "city"]
        prep = ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ("num", StandardScaler(), numeric),
            ]
        )
        pipe = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])
        return pipe.fit(X, y), X, y, "ColumnTransformer(OneHotEncoder+scaler)+LogisticRegression"
    X, y = _numeric_frame(rows, 10, seed=11)
    if flavor == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=0)
        return model.fit(X, y), X, y, "HistGradientBoostingClassifier, 200 trees"
    if flavor == "rf":
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=100, random_state=0)
        return model.fit(X, y), X, y, "RandomForestClassifier, 100 trees"
    if flavor == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=100, max_depth=6, random_state=0)
        return model.fit(X, y), X, y, "XGBClassifier, 100 trees"
    if flavor == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(n_estimators=100, random_state=0, verbose=-1)
        return model.fit(X, y), X, y, "LGBMClassifier, 100 trees"
    if flavor == "torch":
        return _torch_mlp(X, y), X, y, "torch MLP 10-32-2"
    raise ValueError(flavor)


def _native_scores(model: Any) -> Callable[[Any], Any]:
    """``predict_proba`` on a DataFrame; for a torch module, its forward pass on the frame."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba  # type: ignore[no-any-return]
    import torch

    def forward(frame: Any) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(frame.to_numpy(dtype=np.float32))).numpy()

    return forward


def _p50(fn: Callable[[Any], Any], inputs: list[Any], calls: int) -> dict[str, float]:
    """Per-call p50 and p99 in microseconds, cycling through ``inputs``."""
    for i in range(min(WARMUP_CALLS, calls)):
        fn(inputs[i % len(inputs)])
    times = []
    clock = time.perf_counter_ns
    for i in range(calls):
        arg = inputs[i % len(inputs)]
        start = clock()
        fn(arg)
        times.append((clock() - start) / 1e3)
    times.sort()
    return {
        "p50_us": times[len(times) // 2],
        "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))],
        "calls": calls,
    }


def _serving(registry: Any, ref: str) -> dict[str, Any]:
    """Run the optimizer on ``ref``; return what it recorded in the manifest."""
    try:
        from modelyard.models.optimize import optimize_package
    except ImportError as exc:
        return {"error": f"modelyard.models.optimize not importable: {exc}"}
    start = time.perf_counter()
    optimize_package(registry, ref)
    out: dict[str, Any] = {"optimize_s": time.perf_counter() - start}
    manifest = registry.manifest(ref)  # the version now points at the optimized package
    out["serving_runtime"] = manifest.serving_runtime
    out["runtimes"] = [
        {
            "name": r.name,
            "status": r.status,
            "reason": r.reason,
            "file": r.file,
            "max_abs_diff": r.max_abs_diff,
            "label_flips": r.label_flips,
            "rows_checked": r.rows_checked,
            "latency_1_row_us": r.latency_1_row_us,
            "latency_1000_rows_us": r.latency_1000_rows_us,
        }
        for r in manifest.runtimes
    ]
    return out


def _open_runtime(registry: Any, ref: str) -> Any:
    """The serving runtime the manifest names, as a server opens it."""
    from modelyard.models.runtimes import open_serving_runtime

    return open_serving_runtime(registry.load(ref), registry.artifacts)


def _latency_row(registry: Any, flavor: str, args: argparse.Namespace) -> dict[str, Any]:
    from modelyard.models.runtimes import build_inputs

    model, X, _, what = _build(flavor, rows=10_000)
    row: dict[str, Any] = {"flavor": flavor, "model": what}
    rng = np.random.default_rng(3)
    picks = rng.choice(len(X), size=min(args.calls, len(X)), replace=False)
    one_row_frames = [X.iloc[[int(i)]] for i in picks]
    batches = [X.iloc[i * BATCH_ROWS : (i + 1) * BATCH_ROWS] for i in range(len(X) // BATCH_ROWS)]
    native = _native_scores(model)
    row["native_1"] = _p50(native, one_row_frames, args.calls)
    row["native_1000"] = _p50(native, batches, args.batch_calls)
    try:
        logged = registry.log_model(model, name=f"lat-{flavor}", training_frame=X)
    except Exception as exc:  # e.g. no flavor for it: keep the native figures
        row["error"] = f"log_model: {type(exc).__name__}: {exc}"
        return row
    ref = f"lat-{flavor}/{logged.version}"
    row["package_flavor"] = logged.manifest.flavor
    try:
        row.update(_serving(registry, ref))
        if "serving_runtime" not in row:
            return row
        runtime = _open_runtime(registry, ref)
    except Exception as exc:  # the optimizer's failure is a finding: keep the native figures
        row["error"] = f"optimize: {type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=8)
        return row
    signature = registry.manifest(ref).signature
    one_row_inputs = [build_inputs(signature, frame) for frame in one_row_frames]
    batch_inputs = [build_inputs(signature, frame) for frame in batches]
    records = [frame.to_dict(orient="records") for frame in one_row_frames]
    # what a caller pays for one row: the arrays built from its 1-row DataFrame, then scored
    row["serving_1_from_frame"] = _p50(
        lambda frame: runtime.scores(build_inputs(signature, frame)), one_row_frames, args.calls
    )
    row["serving_1"] = _p50(runtime.scores, one_row_inputs, args.calls)
    row["serving_1000"] = _p50(runtime.scores, batch_inputs, args.batch_calls)
    # the timed paths give the same scores: built per call from the frame, and prebuilt
    row["frame_path_equal"] = all(
        np.array_equal(runtime.scores(build_inputs(signature, frame)), runtime.scores(inputs))
        for frame, inputs in zip(one_row_frames, one_row_inputs, strict=True)
    )
    row["serving_1_from_record"] = _p50(
        lambda record: runtime.scores(build_inputs(signature, record)), records, args.calls
    )
    diffs = [
        float(np.max(np.abs(runtime.scores(inputs) - np.asarray(native(frame), dtype=float))))
        for inputs, frame in zip(batch_inputs, batches, strict=True)
    ]
    row["parity_max_abs_diff"] = max(diffs)
    row["parity_rows"] = len(X)
    return row


def latency(args: argparse.Namespace) -> dict[str, Any]:
    import modelyard as my

    project = _project(args.work)
    registry = my.get_registry(project)
    wanted = [f for f in (args.flavors.split(",") if args.flavors else FLAVORS) if f]
    rows = []
    for flavor in wanted:
        print(f"latency row {flavor}", flush=True)
        try:
            if flavor == "torch":
                import torch

                torch.set_num_threads(1)
            rows.append(_latency_row(registry, flavor, args))
        except ImportError as exc:
            rows.append({"flavor": flavor, "skipped": f"not importable: {exc}"})
        except Exception as exc:  # one broken row must not hide the others
            rows.append(
                {
                    "flavor": flavor,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8),
                }
            )
    return {"rows": rows}


if __name__ == "__main__":
    import importlib.metadata

    side_main(
        "modelyard",
        importlib.metadata.version("modelyard"),
        {"registry": registry, "latency": latency},
    )
