"""Project configuration: ``modelyard.yaml`` plus ``MODELYARD_*`` variables, read once.

A project is a folder holding ``modelyard.yaml``; it is found by walking up from the
working directory, like git finds ``.git``. ``--project DIR`` or ``MODELYARD_PROJECT``
override the search, and ``MODELYARD_DB_URL`` / ``MODELYARD_ARTIFACTS`` /
``MODELYARD_ONLINE_STORE`` override the file's store URLs.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_project(root)
>>> settings = load_settings(root, environ={})
>>> settings.db_url.endswith("/.modelyard/modelyard.db")
True
>>> settings.tracking.flush_points
1000
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store.urls import MASK, is_local_path, redact_text, redact_url, url_origin

__all__ = [
    "CONFIG_FILE",
    "STATE_DIR",
    "Settings",
    "FeaturesSettings",
    "ModelsSettings",
    "PipelinesSettings",
    "TrackingSettings",
    "ApiKeySettings",
    "BatchingSettings",
    "ServingSettings",
    "ServingRuntime",
    "TrafficSettings",
    "AgentModelSettings",
    "AgentSettings",
    "AlertAction",
    "CanarySettings",
    "RetrainAction",
    "duration_seconds",
    "find_project",
    "init_project",
    "load_settings",
]

CONFIG_FILE = "modelyard.yaml"
STATE_DIR = ".modelyard"


class TrackingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the tracking client batches metric writes and notices dead runs."""

    #: flush buffered metric points once this many are waiting
    flush_points: int = 1000
    #: ... or once the oldest has waited this long (milliseconds)
    flush_interval_ms: int = 1000
    #: a running run whose process has not been heard from for this long is shown as killed
    heartbeat_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("flush_points", self.flush_points)
        _positive("flush_interval_ms", self.flush_interval_ms)
        _positive("heartbeat_timeout_s", self.heartbeat_timeout_s)


#: skops types every project trusts: scikit-learn's own, NumPy's and SciPy's sparse matrices
DEFAULT_TRUSTED_TYPES = (
    "sklearn.",
    "numpy.",
    "scipy.sparse.",
    "collections.OrderedDict",
    # HistGradientBoosting with categorical features holds a partial of a sklearn function
    "functools.partial",
)


class ModelsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a model package may hold when it loads."""

    #: skops type names (or prefixes ending in ".") that loading may instantiate
    trusted_types: tuple[str, ...] = DEFAULT_TRUSTED_TYPES
    #: load packages that hold Python code (custom models); off by default
    trust_code: bool = False


class FeaturesSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where feature definitions live and where their latest values are served from."""

    #: python modules (``features``) or ``.py`` paths, relative to the project folder
    modules: tuple[str, ...] = ("features",)
    #: the online store: ``sqlite:///relative/or/absolute.db`` or ``redis://host:port/db``
    online_store: str = f"sqlite:///{STATE_DIR}/online.db"
    #: how long (seconds) a FeatureStore serves its cached applied definitions before it
    #: checks the metadata store for an apply by another process; 0 reads them every call
    definitions_cache_s: float = 2.0

    def __repr__(self) -> str:
        return _masked_repr(self, online_store=redact_url)

    def __rich_repr__(self) -> list[Any]:
        return _masked_fields(self, online_store=redact_url)

    def __post_init__(self) -> None:
        if not self.modules:
            raise InvalidInputError("Expected at least one features module, got none")
        if not self.online_store.strip():
            raise InvalidInputError("Expected an online store URL, got an empty string")
        if not 0 <= self.definitions_cache_s < float("inf"):
            raise InvalidInputError(
                "Expected features.definitions_cache_s to be a number of seconds, 0 or more, "
                f"got {self.definitions_cache_s!r}",
                loc="features.definitions_cache_s",
            )


#: where a pipeline's steps run: a local process pool, one after another in this process,
#: or Ray tasks on a cluster
PipelineExecutor = Literal["local", "inline", "ray"]


class PipelinesSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the project's pipelines live and how their steps run."""

    #: python modules (``pipelines``) or ``.py`` paths, relative to the project folder;
    #: None: ``pipelines.py`` of the project folder when it exists
    modules: tuple[str, ...] | None = None
    #: "local" (a pool of processes), "inline" (one after another, for debugging) or
    #: "ray" (Ray tasks); None: the project's ``engine`` ("local" or "ray")
    executor: PipelineExecutor | None = None
    #: the most steps that run at once with the local executor; None: min(4, cpu count)
    max_workers: int | None = None

    def __post_init__(self) -> None:
        if self.modules is not None and not self.modules:
            raise InvalidInputError(
                "Expected at least one module in pipelines.modules, got none (leave the key "
                "out for pipelines.py)"
            )
        if self.modules is not None:
            for module in self.modules:
                if not module.strip():
                    raise InvalidInputError(
                        "Expected a module name or a .py path in pipelines.modules, got an "
                        "empty string"
                    )
        if self.max_workers is not None and self.max_workers < 1:
            raise InvalidInputError(
                f"Expected pipelines.max_workers to be an integer >= 1, got {self.max_workers!r}"
            )


Scope = Literal["predict", "admin"]
#: which runtime a server runs each version in (``serving.runtime``, ``serve --runtime``)
ServingRuntime = Literal["auto", "native"]


class ApiKeySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One API key of the server, never written in the file itself.

    The key is read from the environment variable ``key_env``, or only its sha256 is
    given (``sha256``), so ``modelyard.yaml`` can be committed.
    """

    name: str
    scopes: tuple[Scope, ...] = ("predict",)
    key_env: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.key_env is None) == (self.sha256 is None):
            raise InvalidInputError(
                f"Expected exactly one of key_env or sha256 for API key {self.name!r}"
            )
        if self.sha256 is not None and (
            len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise InvalidInputError(
                f"Expected a 64-character lowercase hex sha256 for API key {self.name!r}"
            )


class BatchingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Adaptive micro-batching per model (Triton-style)."""

    #: "auto" batches models slower than 1 ms per row; "on" and "off" force it
    mode: Literal["auto", "on", "off"] = "auto"
    #: the most rows one model call takes
    max_batch_rows: int = 64
    #: how long a request may wait for others to join its batch (milliseconds)
    max_delay_ms: float = 2.0
    #: rows waiting per model before new requests get 429
    max_queue_rows: int = 4096
    #: a request that cannot be answered within this many milliseconds gets 429
    timeout_ms: float = 1000.0

    def __post_init__(self) -> None:
        _positive("max_batch_rows", self.max_batch_rows)
        _positive("max_delay_ms", self.max_delay_ms)
        _positive("max_queue_rows", self.max_queue_rows)
        _positive("timeout_ms", self.timeout_ms)


class TrafficSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How one model's requests split between registry aliases."""

    #: the alias that answers by default
    primary: str = "production"
    #: the alias a weighted share of requests goes to, and that share (0..1)
    canary: str | None = None
    canary_weight: float = 0.0
    #: a request field (or ``header:NAME``) whose value pins a caller to one side
    sticky_key: str | None = None
    #: an alias that gets a copy of every request; its answers are logged, never returned
    shadow: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_weight <= 1.0:
            raise InvalidInputError(
                f"Expected canary_weight between 0 and 1, got {self.canary_weight!r}"
            )
        if self.canary_weight > 0 and self.canary is None:
            raise InvalidInputError("Expected a canary alias when canary_weight is above 0")


_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ShipSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Shipping the prediction log to the artifact store (``{artifacts}/predictions``).

    Each replica uploads its compacted log there under its ``serving.replica_id``, and
    every reader (monitoring, skew checks, the UI, the agent's canary) reads the union.
    """

    #: seconds between shipments (each after a compaction: ``compact_interval_s`` > 0);
    #: None: 60 when ``artifacts`` is object storage (``s3://``...), off for a local
    #: folder or ``memory://``; 0: off
    interval_s: float | None = None
    #: shipped files of days older than this (``90d``, ``12w``) are deleted by the
    #: shipper; None keeps them
    retention: str | None = None

    def __post_init__(self) -> None:
        if self.interval_s is not None and not (
            self.interval_s >= 0 and math.isfinite(self.interval_s)
        ):
            raise InvalidInputError(
                f"Expected ship.interval_s to be a finite number >= 0 (0: off), "
                f"got {self.interval_s!r}"
            )
        if self.retention is not None:
            duration_seconds("ship.retention", self.retention)


class ServingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The model server: limits, validation, batching, traffic, keys, prediction log."""

    #: where the prediction log lives (relative to the project folder)
    log_dir: str = f"{STATE_DIR}/predictions"
    #: answer only after the prediction's record is on disk
    durable_log: bool = True
    #: bodies larger than this get 413
    max_body_bytes: int = 8 * 2**20
    #: rows one request may hold
    max_rows: int = 10_000
    #: values out of the training range or unseen categories: "reject", "warn" or "log"
    value_checks: Literal["reject", "warn", "log"] = "log"
    #: the runtime versions are served in: "auto" (the package's serving runtime, the one
    #: ``models optimize`` verified, e.g. onnxruntime) or "native" (the logged model itself)
    runtime: ServingRuntime = "auto"
    #: how often the server looks for moved aliases (seconds)
    watch_interval_s: float = 2.0
    #: accept ``parameters.as_of`` on v1 entity requests: the time the online features'
    #: freshness is checked against and the prediction is logged at. For backtests and
    #: replays of past traffic only; off, such a request is refused
    replay: bool = False
    #: a request body must arrive within this many seconds of its headers, else 408
    body_timeout_s: float = 30.0
    #: how often each worker closes its log segments and compacts closed ones into
    #: Parquet (seconds); 0 turns it off (``modelyard log compact`` still works)
    compact_interval_s: float = 60.0
    api_keys: tuple[ApiKeySettings, ...] = ()
    batching: BatchingSettings = msgspec.field(default_factory=BatchingSettings)
    #: per model name
    traffic: dict[str, TrafficSettings] = msgspec.field(default_factory=dict)
    #: this replica's name in the shipped log (letters, digits, ``.``, ``_``, ``-``; up
    #: to 64); None: the host name and a hash of the log folder, stable across restarts
    replica_id: str | None = None
    ship: ShipSettings = msgspec.field(default_factory=ShipSettings)

    def __post_init__(self) -> None:
        if self.replica_id is not None and not _REPLICA_ID.match(self.replica_id):
            raise InvalidInputError(
                "Expected serving.replica_id of 1-64 letters, digits, '.', '_' or '-' "
                f"(starting with a letter or digit), got {self.replica_id!r}"
            )
        _positive("max_body_bytes", self.max_body_bytes)
        _positive("max_rows", self.max_rows)
        _positive("watch_interval_s", self.watch_interval_s)
        _positive("body_timeout_s", self.body_timeout_s)
        if not (self.compact_interval_s >= 0 and math.isfinite(self.compact_interval_s)):
            raise InvalidInputError(
                f"Expected compact_interval_s to be a finite number >= 0 (0: off), "
                f"got {self.compact_interval_s!r}"
            )


Signal = Literal[
    "prediction_drift",
    "feature_drift",
    "auc",
    "accuracy",
    "log_loss",
    "estimated_auc",
    "estimated_accuracy",
    "mae",
    "rmse",
]
DRIFT_SIGNALS = ("prediction_drift", "feature_drift")


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(key: str, text: str) -> int:
    """``"90d"``, ``"6h"``, ``"5m"``, ``"1w"``, ``"30s"`` in seconds; InvalidInputError else.

    >>> duration_seconds("window", "90d")
    7776000
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(
            f"Expected {key} as a number and a unit s, m, h, d or w (like 90d), got {text!r}"
        )
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


class RetrainAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Retrain when the incident opens: run ``pipeline`` on the ``window`` that ends now.

    The pipeline is called with ``params`` plus ``window_start`` and ``window_end`` (ISO
    8601 UTC strings) when it declares those parameters.
    """

    pipeline: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    #: the training window's length, ending at the time the action starts
    window: str = "90d"

    def __post_init__(self) -> None:
        duration_seconds("window", self.window)


class AlertAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What ``modelyard agent`` does when an alert's incident opens."""

    retrain: RetrainAction | None = None


class AlertRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An alert: a signal breaching in ``k`` of the last ``m`` windows opens an incident.

    ``prediction_drift`` and ``feature_drift`` (one incident per drifted feature) breach
    when the window drifts; a metric breaches when it is ``below`` or ``above`` a value.
    An incident is sent to ``webhook`` (a URL, or the URL in the variable
    ``webhook_env``, since webhook URLs often hold tokens) as a JSON POST, and
    ``command`` runs with the incident as JSON in ``MODELYARD_INCIDENT``.
    """

    name: str
    signal: Signal
    below: float | None = None
    above: float | None = None
    k: int = 1
    m: int = 1
    webhook: str | None = None
    webhook_env: str | None = None
    command: str | None = None
    command_timeout_s: float = 3600.0
    #: run by ``modelyard agent`` when the incident opens (see ``AlertAction``)
    action: AlertAction | None = None

    def __repr__(self) -> str:
        return _masked_repr(self, webhook=_webhook_shown)

    def __rich_repr__(self) -> list[Any]:
        return _masked_fields(self, webhook=_webhook_shown)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.m:
            raise InvalidInputError(
                f"Expected 1 <= k <= m in alert {self.name!r}, got k={self.k}, m={self.m}"
            )
        is_drift = self.signal in DRIFT_SIGNALS
        if is_drift and (self.below is not None or self.above is not None):
            raise InvalidInputError(
                f"Alert {self.name!r}: {self.signal} breaches when the window drifts; "
                "remove below/above"
            )
        if not is_drift and (self.below is None) == (self.above is None):
            raise InvalidInputError(
                f"Alert {self.name!r}: expected exactly one of below or above for {self.signal}"
            )
        _positive("command_timeout_s", self.command_timeout_s)


class MonitoringSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Drift and performance windows over the prediction log, and alerts."""

    #: window length: a number and a unit, s, m, h, d or w (``1d``, ``6h``, ``1w``)
    window: str = "1d"
    #: a window's labels have matured when this share of its rows has feedback
    min_label_coverage: float = 0.8
    #: overrides of the drift engine's defaults (``alpha``, ``correction``,
    #: ``min_wasserstein``, ...), see ``modelyard.monitoring.DriftSettings``
    drift: dict[str, Any] = msgspec.field(default_factory=dict)
    alerts: tuple[AlertRule, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.min_label_coverage <= 1:
            raise InvalidInputError(
                f"Expected min_label_coverage in (0, 1], got {self.min_label_coverage!r}"
            )
        names = [a.name for a in self.alerts]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"Expected unique alert names, got {names}")


class CanarySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the agent's canary is judged online (see ``modelyard.gates.sequential``).

    The canary's share of traffic is ``serving.traffic.MODEL.canary_weight``; the alias
    named here must be that policy's ``canary`` alias.
    """

    #: the alias the candidate is put on while it is the canary
    alias: str = "canary"
    #: the per-row outcome standing for the model's primary metric: ``log_loss`` or
    #: ``error_rate`` for a classifier, ``squared_error`` or ``absolute_error`` for a
    #: regressor; None: log_loss for a classifier, squared_error for a regressor
    metric: str | None = None
    #: family-wise error rate over the metric, the error rate and latency tests
    alpha: float = 0.05
    #: the loss of the primary metric accepted as non-inferior (its own scale)
    margin: float = 0.0
    #: mixture scale of the primary metric's test (its own scale); None: a default per metric
    tau: float | None = None
    #: also test the error rate and the latency
    error_rate: bool = True
    latency: bool = True
    #: the error rate's accepted loss when it is not the primary metric (0.02: two points)
    error_rate_margin: float = 0.02
    #: the latency's accepted loss, relative (0.1: a geometric mean 10% slower)
    latency_margin: float = 0.1
    #: a look counts once each arm has this many labelled rows
    min_samples: int = 200
    #: rows per arm after which the canary times out to a decision
    horizon: int = 20_000
    #: ... or this long after it started
    max_duration: str = "14d"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InvalidInputError(f"Expected canary.alpha in (0, 1), got {self.alpha!r}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise InvalidInputError(f"Expected canary.margin >= 0, got {self.margin!r}")
        if self.tau is not None:
            _positive("canary.tau", self.tau)
        for key, value in (
            ("error_rate_margin", self.error_rate_margin),
            ("latency_margin", self.latency_margin),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise InvalidInputError(f"Expected canary.{key} >= 0, got {value!r}")
        if self.min_samples < 2:
            raise InvalidInputError(f"Expected canary.min_samples >= 2, got {self.min_samples!r}")
        _positive("canary.horizon", self.horizon)
        duration_seconds("canary.max_duration", self.max_duration)


class AgentModelSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The continuous-training policy of one model (``agent.models.NAME``)."""

    #: ``auto``: a candidate that passes its gates becomes the canary; ``manual``: the
    #: agent stops before the canary until ``modelyard models approve REF``
    approve: Literal["auto", "manual"] = "auto"
    #: no new retrain of this model within this long of the last one
    cooldown: str = "7d"
    #: the gates compare candidate and champion on this many last days of labelled traffic
    gate_window: str = "14d"
    #: the alias the candidate must win against and is promoted to
    against: str = "production"
    canary: CanarySettings = msgspec.field(default_factory=CanarySettings)

    def __post_init__(self) -> None:
        duration_seconds("cooldown", self.cooldown)
        duration_seconds("gate_window", self.gate_window)


class AgentSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``modelyard agent``: what it watches and how often."""

    #: time between passes of ``modelyard agent`` without ``--once``
    interval: str = "5m"
    #: the models the agent monitors and acts for; empty: every model with a
    #: ``production`` alias, each with the default policy
    models: dict[str, AgentModelSettings] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        duration_seconds("interval", self.interval)

    def model(self, name: str) -> AgentModelSettings:
        """The policy of ``name``: its own entry, else the defaults."""
        return self.models.get(name) or AgentModelSettings()


#: where heavy work runs: this machine's processes ("local") or a Ray cluster ("ray")
Engine = Literal["local", "ray"]


class RaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the ``ray`` engine reaches its cluster and what each task asks of it."""

    #: the cluster to connect to (``ray://host:10001`` or ``host:6379``); None: the one
    #: ``RAY_ADDRESS`` names, else a local cluster started for this process
    address: str | None = None
    #: CPUs each task reserves (pipeline steps may ask for more with ``@step(resources=...)``)
    num_cpus: float = 1.0
    #: memory each task reserves, in bytes; None: no reservation
    memory: int | None = None
    #: actors scoring batches for ``predict --engine ray``; None: one per CPU of the cluster
    max_actors: int | None = None
    #: the Ray namespace the project's named actors and jobs live in
    namespace: str = "modelyard"

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise InvalidInputError(
                "Expected ray.address to be a cluster address (host:port or ray://host:port), "
                "got an empty string",
                loc="ray.address",
            )
        if not self.num_cpus > 0:
            raise InvalidInputError(
                f"Expected ray.num_cpus to be a number > 0, got {self.num_cpus!r}",
                loc="ray.num_cpus",
            )
        if self.memory is not None and self.memory < 1:
            raise InvalidInputError(
                f"Expected ray.memory to be a number of bytes >= 1, got {self.memory!r}",
                loc="ray.memory",
            )
        if self.max_actors is not None and self.max_actors < 1:
            raise InvalidInputError(
                f"Expected ray.max_actors to be an integer >= 1, got {self.max_actors!r}",
                loc="ray.max_actors",
            )


class _FileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The shape of ``modelyard.yaml``; every key is optional."""

    name: str | None = None
    db_url: str | None = None
    artifacts: str | None = None
    tracking: TrackingSettings = msgspec.field(default_factory=TrackingSettings)
    models: ModelsSettings = msgspec.field(default_factory=ModelsSettings)
    features: FeaturesSettings = msgspec.field(default_factory=FeaturesSettings)
    serving: ServingSettings = msgspec.field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = msgspec.field(default_factory=MonitoringSettings)
    pipelines: PipelinesSettings = msgspec.field(default_factory=PipelinesSettings)
    #: promotion gates per model name, validated by ``modelyard.gates.config`` when used
    gates: dict[str, Any] = msgspec.field(default_factory=dict)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    engine: Engine = "local"
    ray: RaySettings = msgspec.field(default_factory=RaySettings)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The immutable settings every layer below the CLI is handed."""

    project_dir: Path
    name: str
    db_url: str
    artifacts: str
    tracking: TrackingSettings = msgspec.field(default_factory=TrackingSettings)
    models: ModelsSettings = msgspec.field(default_factory=ModelsSettings)
    features: FeaturesSettings = msgspec.field(default_factory=FeaturesSettings)
    serving: ServingSettings = msgspec.field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = msgspec.field(default_factory=MonitoringSettings)
    pipelines: PipelinesSettings = msgspec.field(default_factory=PipelinesSettings)
    #: promotion gates per model name, validated by ``modelyard.gates.config`` when used
    gates: dict[str, Any] = msgspec.field(default_factory=dict)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    #: where heavy work runs by default (``--engine`` on a command overrides it)
    engine: Engine = "local"
    ray: RaySettings = msgspec.field(default_factory=RaySettings)

    def __repr__(self) -> str:
        return _masked_repr(self, db_url=redact_url, artifacts=redact_url)

    def __rich_repr__(self) -> list[Any]:
        return _masked_fields(self, db_url=redact_url, artifacts=redact_url)

    @property
    def pipeline_executor(self) -> PipelineExecutor:
        """``pipelines.executor``, else the project's ``engine``."""
        return self.pipelines.executor or self.engine

    @property
    def prediction_log_dir(self) -> Path:
        """``serving.log_dir``; a relative one is in the project folder."""
        return self.project_dir / self.serving.log_dir

    def describe(self) -> dict[str, str]:
        """Settings for display, with credentials removed from URLs."""
        return {
            "project": str(self.project_dir),
            "name": self.name,
            "db_url": redact_url(self.db_url),
            "artifacts": redact_url(self.artifacts),
            "online_store": redact_url(self.features.online_store),
        }


def _masked_fields(struct: msgspec.Struct, **maskers: Callable[[str], str]) -> list[Any]:
    """``(field, value)`` pairs with the named string fields passed through their masker."""
    shown = []
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if name in maskers and isinstance(value, str):
            value = maskers[name](value)
        shown.append((name, value))
    return shown


def _masked_repr(struct: msgspec.Struct, **maskers: Callable[[str], str]) -> str:
    """``Name(field=value, ...)`` with credentials masked (see ``_masked_fields``)."""
    shown = ", ".join(f"{k}={v!r}" for k, v in _masked_fields(struct, **maskers))
    return f"{type(struct).__name__}({shown})"


def _webhook_shown(url: str) -> str:
    """A webhook URL's origin only: its path is often its secret (Slack, Teams)."""
    return f"{url_origin(url)}/{MASK}"


def _positive(key: str, value: float) -> None:
    # NaN compares false with everything, and an infinite timeout overflows the client's
    # integer milliseconds, so both are refused with the non-positive values
    if not (value > 0 and math.isfinite(value)):
        # msgspec wraps this into a ValidationError that adds the path in the file
        raise InvalidInputError(f"Expected {key} to be a finite number > 0, got {value!r}")


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``modelyard.yaml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


_TEMPLATE = """\
# modelyard project settings. Every key is optional; environment variables
# MODELYARD_DB_URL, MODELYARD_ARTIFACTS and MODELYARD_ONLINE_STORE override the
# store URLs below.
name: {name}
# metadata store (runs, versions, aliases): SQLite by default, or
# postgresql+psycopg://user@host/db for a team
db_url: sqlite:///.modelyard/modelyard.db
# artifact store: a local folder or any fsspec URL (s3://bucket/prefix, memory://...)
artifacts: .modelyard/artifacts
tracking:
  flush_points: 1000
  flush_interval_ms: 1000
  heartbeat_timeout_s: 60
models:
  # skops types a model package may hold, by name or prefix; the default covers
  # scikit-learn, NumPy and SciPy sparse matrices. Add your own only if you trust them.
  trusted_types: ["sklearn.", "numpy.", "scipy.sparse.", "collections.OrderedDict",
                  "functools.partial"]
  # packages holding Python code (custom models) load only when this is true
  trust_code: false
features:
  # where feature definitions live: python modules or .py paths in the project
  modules: ["features"]
  # online store for serving: SQLite by default (MODELYARD_ONLINE_STORE overrides),
  # or redis://host:6379/0
  online_store: sqlite:///.modelyard/online.db
"""


def init_project(directory: str | os.PathLike[str], *, name: str | None = None) -> Path:
    """Create ``modelyard.yaml`` and ``.modelyard/`` in ``directory``; return the yaml path.

    An existing ``modelyard.yaml`` is left as it is.
    """
    directory = Path(directory).resolve()
    if directory.exists() and not directory.is_dir():
        raise InvalidInputError(
            f"Expected a folder for the project, got the file {directory}", loc="directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / STATE_DIR
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("*\n")
    path = directory / CONFIG_FILE
    if not path.exists():
        path.write_text(_TEMPLATE.format(name=name or directory.name), encoding="utf-8")
    return path


def _resolve_sqlite(url: str, project: Path) -> str:
    """Make a relative ``sqlite:///relative.db`` path relative to the project folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(project / url[len(prefix) :])
    return url


def _resolve_artifacts(url: str, project: Path) -> str:
    local = url.removeprefix("file://")
    if is_local_path(url) and not Path(local).is_absolute():
        return str(project / local)
    return url


def _read_file(path: Path) -> _FileConfig:
    try:
        # bytes: YAML is UTF-8 whatever the locale, and bad bytes are a YAMLError too
        raw: Any = yaml.safe_load(path.read_bytes()) or {}
    except yaml.YAMLError as exc:
        # the parser quotes the offending line, which may hold a URL with a password
        raise InvalidInputError(f"{path} is not valid YAML: {redact_text(str(exc))}") from None
    try:
        return msgspec.convert(raw, _FileConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(
            f"Bad setting in {path}: {exc}. Allowed keys: name, db_url, artifacts, "
            "tracking.{flush_points, flush_interval_ms, heartbeat_timeout_s}, "
            "models.{trusted_types, trust_code}, features.{modules, online_store}, "
            "serving.{log_dir, durable_log, max_body_bytes, max_rows, value_checks, "
            "watch_interval_s, api_keys, batching, traffic, replica_id, ship}, "
            "pipelines.{modules, executor, max_workers}, "
            "gates.MODEL.{label, metric, eval, checks}, "
            "agent.{interval, models.MODEL.{approve, cooldown, gate_window, against, canary}}, "
            "engine (local or ray), ray.{address, num_cpus, memory, max_actors, namespace}"
        ) from exc


def load_settings(
    project: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the project's settings once; ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    if project is None and env.get("MODELYARD_PROJECT"):
        project = env["MODELYARD_PROJECT"]
    if project is not None:
        root = Path(project).resolve()
        if not (root / CONFIG_FILE).is_file():
            raise NotFoundError(
                f"No {CONFIG_FILE} in {root}. Run `modelyard init {project}` to create a project."
            )
    else:
        found = find_project()
        if found is None:
            raise NotFoundError(
                f"No modelyard project in {Path.cwd()} or any folder above it. "
                "Run `modelyard init` here, or pass --project DIR."
            )
        root = found
    file = _read_file(root / CONFIG_FILE)
    db_url = env.get("MODELYARD_DB_URL") or file.db_url or f"sqlite:///{STATE_DIR}/modelyard.db"
    artifacts = env.get("MODELYARD_ARTIFACTS") or file.artifacts or f"{STATE_DIR}/artifacts"
    online = env.get("MODELYARD_ONLINE_STORE") or file.features.online_store
    for key, value in (("db_url", db_url), ("artifacts", artifacts), ("online_store", online)):
        if not value.strip():
            raise InvalidInputError(f"Expected a URL, got an empty string - at {key}")
    return Settings(
        project_dir=root,
        name=file.name or root.name,
        db_url=_resolve_sqlite(db_url, root),
        artifacts=_resolve_artifacts(artifacts, root),
        tracking=file.tracking,
        models=file.models,
        features=msgspec.structs.replace(file.features, online_store=_resolve_sqlite(online, root)),
        serving=file.serving,
        monitoring=file.monitoring,
        pipelines=file.pipelines,
        gates=file.gates,
        agent=file.agent,
        engine=file.engine,
        ray=file.ray,
    )
