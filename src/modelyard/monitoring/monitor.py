"""``Monitor``: drift and performance over the prediction log, stored, alerted, reported.

For a registered model version it reads the served rows of each window from the
prediction log, compares them (inputs and outputs) with the package's reference profile,
joins the labels that arrived as feedback, stores one result per window and kind in the
metadata store (``store.monitor_results``), and evaluates the project's alert rules. The
report data (``report_data``) gathers the stored windows, the latest window's causes and
distributions, a domain classifier (the package's held-out rows against the latest
window) and the incidents, for ``html.render_report``.

With ``engine="ray"`` (or ``engine: ray`` in ``modelyard.yaml``) the windows of a run are
computed in parallel as Ray tasks (:mod:`modelyard.monitoring.parallel`), each over a
contiguous range of whole windows, by the same per-window functions
(:func:`drift_window`, :func:`performance_window`); the stored results are the local
engine's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.config import Settings
from modelyard.engine import EngineName, engine_for
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.features.skew import LoggedSkewReport
from modelyard.features.store import FeatureStore
from modelyard.models.manifest import Manifest
from modelyard.models.package import read_holdout, read_profile
from modelyard.models.profile import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
)
from modelyard.monitoring import parallel
from modelyard.monitoring.alerts import AlertEvent, evaluate_alerts
from modelyard.monitoring.domain import domain_classifier
from modelyard.monitoring.drift import Reference
from modelyard.monitoring.performance import classification_window, regression_window
from modelyard.monitoring.settings import DriftSettings
from modelyard.monitoring.windows import (
    LogWindow,
    parse_window,
    read_log,
    split_windows,
    utc_us,
)
from modelyard.registry.client import ModelRegistry
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult
from modelyard.store.predlog.shipping import shipped_log

__all__ = [
    "Monitor",
    "MonitorRun",
    "MonitoredModel",
    "drift_settings",
    "drift_window",
    "performance_window",
    "range_windows",
]

Progress = Callable[[int, int], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def drift_settings(overrides: dict[str, Any]) -> DriftSettings:
    """``DriftSettings`` with the project's ``monitoring.drift`` overrides."""
    try:
        return msgspec.convert(overrides, DriftSettings)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"Bad drift setting: {exc}", loc="monitoring.drift") from exc


@dataclass
class MonitoredModel:
    """A model version with what monitoring needs of its package."""

    name: str
    version: int
    manifest: Manifest
    profile: ReferenceProfile
    reference: Reference

    @property
    def inputs(self) -> list[str]:
        return list(self.profile.columns)

    @property
    def outputs(self) -> list[str]:
        return list(self.profile.outputs)

    @property
    def classes(self) -> list[str] | None:
        names = [n for n in self.profile.outputs if n.startswith("proba_")]
        return [n.removeprefix("proba_") for n in names] if names else None


@dataclass
class MonitorRun:
    """What ``Monitor.run`` computed."""

    model: MonitoredModel
    drift: list[WindowResult] = field(default_factory=list)
    performance: list[WindowResult] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


class Monitor:
    """Monitoring of the project in ``settings``; close it (or use ``with``) when done."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_dir: str | Path | None = None,
        db: Database | None = None,
        engine: str | None = None,
    ) -> None:
        self.settings = settings
        #: where windows are computed: ``local`` or ``ray`` (``engine=``, else settings.engine)
        self.engine: EngineName = engine_for(settings, engine, loc="engine")
        self._own_db = db is None
        self.db = db or open_database(settings.db_url)
        self.registry = ModelRegistry(settings, db=self.db)
        self.results = MonitorResults(self.db)
        # a relative log_dir is in the project folder, like serving.log_dir
        self.log_dir = settings.project_dir / (log_dir or settings.serving.log_dir)
        self.drift_settings = drift_settings(settings.monitoring.drift)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.registry.close()
        if self._own_db:
            self.db.close()

    # -- the model ----------------------------------------------------------------------

    def model(self, ref: str) -> MonitoredModel:
        """The version ``ref`` names (``name``, ``name@alias``, ``name/3``) and its profile."""
        if "@" not in ref and "/" not in ref:
            ref = f"{ref}@production"
        version = self.registry.get_version(ref)
        manifest = self.registry.manifest(ref)
        profile: ReferenceProfile = read_profile(self.registry.artifacts, manifest)
        return MonitoredModel(
            version.name, version.version, manifest, profile, Reference.from_profile(profile)
        )

    def _windows(
        self,
        model: MonitoredModel,
        window: str | None,
        since: datetime | None,
        until: datetime | None,
        *,
        labels: bool,
    ) -> list[LogWindow]:
        length = parse_window(window or self.settings.monitoring.window)
        table = read_log(
            self.log_dir,
            model.name,
            model.version,
            inputs=model.inputs,
            outputs=model.outputs,
            since=since,
            until=until,
            labels=labels,
            shipped=shipped_log(self.settings),
        )
        return list(split_windows(table, length, since=since, until=until))

    # -- drift --------------------------------------------------------------------------

    def drift(
        self,
        model: MonitoredModel,
        *,
        window: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        progress: Progress | None = None,
    ) -> list[WindowResult]:
        """Compare every window with the reference profile; store and return the results."""
        if self.engine == "ray":
            drift, _ = self._parallel(model, window, since, until, ("drift",), progress)
            self.results.save_windows(drift)
            return drift
        windows = self._windows(model, window, since, until, labels=False)
        return self._drift(model, windows, progress)

    def _drift(
        self, model: MonitoredModel, windows: list[LogWindow], progress: Progress | None
    ) -> list[WindowResult]:
        results = []
        for i, part in enumerate(windows):
            results.append(drift_window(model, part, self.drift_settings))
            if progress is not None:
                progress(i + 1, len(windows))
        self.results.save_windows(results)
        return results

    def _parallel(
        self,
        model: MonitoredModel,
        window: str | None,
        since: datetime | None,
        until: datetime | None,
        kinds: tuple[str, ...],
        progress: Progress | None,
    ) -> tuple[list[WindowResult], list[WindowResult]]:
        """The windows of ``kinds`` computed as Ray tasks over ranges of whole windows."""
        length = parse_window(window or self.settings.monitoring.window)
        for bound in (since, until):
            if bound is not None:
                utc_us(bound)  # a naive bound is refused here, as the local read refuses it
        if shipped_log(self.settings) is not None:
            # the tasks read the local log folder only: counting it alone would be a
            # plausible wrong answer for a fleet whose replicas ship their logs
            raise InvalidInputError(
                "Expected a project whose prediction log is not shipped for --engine ray: "
                "the Ray backfill reads the local log folder only, and this project has a "
                "shipped log of its replicas; use --engine local",
                loc="--engine",
            )
        parallel.connect(self.settings)
        span = parallel.log_span(self.log_dir, model.name, model.version, since=since, until=until)
        if span is None:
            return [], []
        length_us = int(length.total_seconds() * 1_000_000)
        ranges = parallel.window_ranges(
            *span,
            length_us,
            2 * parallel.workers(self.settings),
            since_us=None if since is None else utc_us(since),
            until_us=None if until is None else utc_us(until),
        )
        task = functools.partial(
            range_windows,
            self.log_dir,
            model,
            length,
            since,
            until,
            kinds,
            self.drift_settings,
            self.settings.monitoring.min_label_coverage,
        )
        total = (span[1] - span[0]) // length_us + 1  # an upper bound: empty windows skipped
        finished = 0

        def done(result: tuple[list[WindowResult], list[WindowResult]]) -> None:
            nonlocal finished
            finished += max(len(result[0]), len(result[1]))
            if progress is not None:
                progress(finished, max(finished, total))

        chunks = parallel.run_ranges(self.settings, task, ranges, done=done)
        drift = [w for chunk in chunks for w in chunk[0]]
        performance = [w for chunk in chunks for w in chunk[1]]
        if progress is not None:
            progress(finished, finished)
        return drift, performance

    # -- performance --------------------------------------------------------------------

    def performance(
        self,
        model: MonitoredModel,
        *,
        window: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[WindowResult]:
        """Realised and estimated metrics of every window; stored and returned."""
        if self.engine == "ray":
            _, performance = self._parallel(model, window, since, until, ("performance",), None)
            self.results.save_windows(performance)
            return performance
        return self._performance(model, self._windows(model, window, since, until, labels=True))

    def _performance(self, model: MonitoredModel, windows: list[LogWindow]) -> list[WindowResult]:
        coverage = self.settings.monitoring.min_label_coverage
        results = [performance_window(model, part, coverage) for part in windows]
        self.results.save_windows(results)
        return results

    # -- skew ---------------------------------------------------------------------------

    def skew(
        self,
        model: MonitoredModel,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        sample: int | None = 10_000,
        seed: int = 0,
    ) -> LoggedSkewReport:
        """The feature layer's skew check over the feature vectors the server looked up.

        Each logged row (entity keys, request fields, the looked-up ``view:feature``
        values, its time) is recomputed offline as of its time; at most ``sample`` rows,
        drawn at random, are checked.
        """
        table = read_log(
            self.log_dir,
            model.name,
            model.version,
            inputs=None,
            outputs=[],
            since=since,
            until=until,
            features=True,
            shipped=shipped_log(self.settings),
        )
        if not any(c.startswith("feature.") for c in table.column_names):
            raise NotFoundError(
                f"{model.name} v{model.version} has no logged feature lookups in that range: "
                "skew is checked on requests that sent entity keys"
            )
        if sample is not None and table.num_rows > sample:
            rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, sample, False))
            table = table.take(pa.array(rows))
        frame = table.drop_columns(["request_id"]).to_pandas()
        store = FeatureStore(self.settings)
        try:
            return store.check_logged_skew(frame, time_column="time")
        finally:
            store.close()

    # -- alerts and everything ----------------------------------------------------------

    def alerts(self, model: MonitoredModel, *, notify: bool = True) -> list[AlertEvent]:
        """Evaluate the project's alert rules over the stored windows."""
        return evaluate_alerts(
            self.settings.monitoring.alerts,
            self.results,
            model.name,
            model.version,
            notify=notify,
        )

    def run(
        self,
        ref: str,
        *,
        window: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        notify: bool = True,
        progress: Progress | None = None,
    ) -> MonitorRun:
        """Drift, performance and alerts for ``ref``."""
        model = self.model(ref)
        run = MonitorRun(model)
        if self.engine == "ray":
            kinds = ("drift", "performance")
            run.drift, run.performance = self._parallel(
                model, window, since, until, kinds, progress
            )
            self.results.save_windows(run.drift)
            self.results.save_windows(run.performance)
        else:
            # one read of the log (with the labels) serves both
            windows = self._windows(model, window, since, until, labels=True)
            run.drift = self._drift(model, windows, progress)
            run.performance = self._performance(model, windows)
        run.events = self.alerts(model, notify=notify)
        return run

    # -- report -------------------------------------------------------------------------

    def report_data(
        self,
        model: MonitoredModel,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        window: str | None = None,
        domain: bool = True,
    ) -> dict[str, Any]:
        """Everything ``html.render_report`` shows, from the stored windows and the log."""
        since_us = None if since is None else utc_us(since)
        until_us = None if until is None else utc_us(until)
        length = int(parse_window(window or self.settings.monitoring.window).total_seconds() * 1e6)

        def stored(kind: str) -> list[WindowResult]:
            found = self.results.windows(
                model.name, model.version, kind, since_us=since_us, until_us=until_us
            )
            # windows of this length only (the first and last may be cut by since/until)
            return [
                w
                for w in found
                if w.end_us - w.start_us == length
                or (
                    w.end_us - w.start_us < length
                    and (w.start_us == since_us or w.end_us == until_us)
                )
            ]

        drift = stored("drift")
        performance = stored("performance")
        data: dict[str, Any] = {
            "model": model.name,
            "version": model.version,
            "generated_at": datetime.now(UTC).isoformat(),
            "reference": {"rows": model.profile.n_rows, "source": "package profile"},
            "windows": [_drift_entry(w) for w in drift],
            "performance": [
                {**w.summary, "start": _iso(w.start_us), "end": _iso(w.end_us)} for w in performance
            ],
            "causes": [],
            "distributions": {},
            "domain_classifier": None,
            "incidents": [
                {
                    **i.to_dict(),
                    "opened_at": _iso(i.opened_at_us),
                    "updated_at": _iso(i.updated_at_us),
                }
                for i in self.results.incidents(model.name, model.version)
            ],
            "findings": [],
        }
        if not drift:
            data["findings"].append(
                "no drift windows stored yet: run `modelyard monitor drift` first"
            )
            return data
        latest = drift[-1]
        columns = latest.summary.get("columns", {})
        order = latest.summary.get("ranked", []) + [
            n for n in columns if n not in latest.summary.get("ranked", [])
        ]
        data["causes"] = [{"name": n, **columns[n]} for n in order if n in columns]
        data["findings"] += latest.summary.get("findings", [])
        start = datetime.fromtimestamp(latest.start_us / 1e6, UTC)
        end = datetime.fromtimestamp(latest.end_us / 1e6, UTC)
        windows = self._windows(model, window or _length(latest), start, end, labels=False)
        if windows:
            current = windows[-1]
            data["distributions"] = _distributions(model.profile, current, order)
            if domain:
                data["domain_classifier"] = self._domain(model, current)
        return data

    def _domain(self, model: MonitoredModel, current: LogWindow) -> dict[str, Any] | None:
        if model.manifest.holdout is None:
            return None
        reference, _ = read_holdout(self.registry.artifacts, model.manifest)
        names = [
            n for n in model.inputs if n in reference.columns and n in current.inputs.column_names
        ]
        if not names or current.rows < 50:
            return None
        result = domain_classifier(reference[names], current.inputs.select(names).to_pandas())
        return {
            "auc": result.auc,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
            "drifted": result.drifted,
            "importances": dict(result.importances),
            "n_reference": result.n_reference,
            "n_current": result.n_current,
        }


def drift_window(model: MonitoredModel, part: LogWindow, settings: DriftSettings) -> WindowResult:
    """One window's drift against the model's reference profile."""
    report = model.reference.compare(
        part.inputs,
        outputs=part.outputs.select([n for n in model.outputs if n in part.outputs.column_names]),
        settings=settings,
    )
    summary = report.to_dict()
    summary["ranked"] = [c.name for c in report.ranked(drifted_only=True)]
    summary["start"], summary["end"] = part.start.isoformat(), part.end.isoformat()
    return WindowResult(
        model.name,
        model.version,
        "drift",
        utc_us(part.start),
        utc_us(part.end),
        part.rows,
        report.alarm,
        summary,
    )


def performance_window(model: MonitoredModel, part: LogWindow, coverage: float) -> WindowResult:
    """One window's realised (and estimated) metrics on its labelled rows."""
    classes = model.classes
    labels = _labels(part.labels, classes)
    if classes is not None:
        names = [f"proba_{c}" for c in classes]
        missing = [n for n in names if n not in part.outputs.column_names]
        if missing:
            raise NotFoundError(
                f"The prediction log of {model.name} v{model.version} has no "
                f"{', '.join(missing)}: it cannot measure a classifier without scores"
            )
        matrix = np.column_stack(
            [part.outputs.column(n).to_numpy(zero_copy_only=False) for n in names]
        ).astype(np.float64)
        summary = classification_window(classes, matrix, labels, min_label_coverage=coverage)
    else:
        name = model.outputs[0] if model.outputs else "prediction"
        predicted = part.outputs.column(name).to_numpy(zero_copy_only=False)
        summary = regression_window(predicted, labels, min_label_coverage=coverage)
    summary["start"], summary["end"] = part.start.isoformat(), part.end.isoformat()
    return WindowResult(
        model.name,
        model.version,
        "performance",
        utc_us(part.start),
        utc_us(part.end),
        part.rows,
        False,
        summary,
    )


def range_windows(
    log_dir: Path,
    model: MonitoredModel,
    length: timedelta,
    since: datetime | None,
    until: datetime | None,
    kinds: tuple[str, ...],
    drift_config: DriftSettings,
    coverage: float,
    start_us: int | None,
    end_us: int | None,
) -> tuple[list[WindowResult], list[WindowResult]]:
    """(drift, performance) of the windows in ``[start_us, end_us)`` of the log (one task).

    The log is read over that range only; windows are cut to ``since``/``until`` as the
    whole range's read cuts them (the range's own bounds are window boundaries).
    """
    table = read_log(
        log_dir,
        model.name,
        model.version,
        inputs=model.inputs,
        outputs=model.outputs,
        since=_from_us(start_us),
        until=_from_us(end_us),
        labels="performance" in kinds,
    )
    windows = list(split_windows(table, length, since=since, until=until))
    drift = [drift_window(model, w, drift_config) for w in windows] if "drift" in kinds else []
    performance = (
        [performance_window(model, w, coverage) for w in windows] if "performance" in kinds else []
    )
    return drift, performance


def _from_us(us: int | None) -> datetime | None:
    """The UTC time of ``us`` microseconds since the epoch, exactly (no float rounding)."""
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _length(window: WindowResult) -> str:
    return f"{max(1, (window.end_us - window.start_us) // 1_000_000)}s"


def _drift_entry(window: WindowResult) -> dict[str, Any]:
    return {
        "start": _iso(window.start_us),
        "end": _iso(window.end_us),
        "rows": window.rows,
        "alarm": window.alarm,
        "prediction_drift": bool(window.summary.get("prediction_drift")),
        "drift": window.summary,
    }


def _labels(labels: pa.Array | None, classes: Sequence[str] | None) -> list[str | None]:
    if labels is None:
        return []
    values: list[str | None] = labels.to_pylist()
    if classes is not None and {"True", "False"} & set(classes):
        named = {"true": "True", "false": "False"}
        values = [None if v is None else named.get(v, v) for v in values]
    return values


def _distributions(
    profile: ReferenceProfile, current: LogWindow, order: Sequence[str], limit: int = 30
) -> dict[str, Any]:
    """Reference vs current shares per feature (and output) on common bins."""
    out: dict[str, Any] = {}
    items: list[tuple[str, Any, pa.Table]] = [
        (n, profile.columns[n], current.inputs) for n in order if n in profile.columns
    ][:limit]
    items += [(n, p, current.outputs) for n, p in profile.outputs.items()]
    for name, column, table in items:
        if name not in table.column_names:
            continue
        values = table.column(name)
        if isinstance(column, NumericProfile) and column.sample:
            out[name] = _numeric_shares(np.asarray(column.sample), values)
        elif isinstance(column, CategoricalProfile):
            out[name] = _categorical_shares(column, values)
    return out


def _numeric_shares(sample: np.ndarray, values: pa.ChunkedArray) -> dict[str, Any]:
    current = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    current = current[np.isfinite(current)]
    low, high = np.quantile(sample, [0.005, 0.995])
    if current.size:
        low = min(low, float(np.quantile(current, 0.005)))
        high = max(high, float(np.quantile(current, 0.995)))
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        low, high = float(low) - 0.5, float(high) + 0.5
    edges = np.linspace(low, high, 31)
    ref_counts = np.histogram(np.clip(sample, low, high), edges)[0]
    cur_counts = np.histogram(np.clip(current, low, high), edges)[0]
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "reference": (ref_counts / max(1, ref_counts.sum())).tolist(),
        "current": (cur_counts / max(1, cur_counts.sum())).tolist(),
    }


def _categorical_shares(column: CategoricalProfile, values: pa.ChunkedArray) -> dict[str, Any]:
    counts = pc.value_counts(pc.cast(values, pa.string()).drop_null().combine_chunks())
    current = {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
    top = [c for c in column.counts if c != OTHER][:15]
    unseen = sum(v for k, v in current.items() if k not in column.counts)
    categories = [*top, OTHER, "(unseen)"]
    ref_total = max(1, sum(column.counts.values()))
    cur_total = max(1, sum(current.values()))
    ref_other = sum(v for k, v in column.counts.items() if k not in top)
    cur_other = sum(v for k, v in current.items() if k in column.counts and k not in top)
    return {
        "kind": "categorical",
        "categories": categories,
        "reference": [column.counts.get(c, 0) / ref_total for c in top]
        + [ref_other / ref_total, 0.0],
        "current": [current.get(c, 0) / cur_total for c in top]
        + [cur_other / cur_total, unseen / cur_total],
    }
