"""Tables of the metadata store (SQLAlchemy Core), one source of truth for migrations.

Times are integer milliseconds since the epoch (UTC). ``latest_metrics`` holds the
last point per run and key so that listing and searching runs never scans the
metric history in ``metrics``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "HEAD_REVISION",
    "model_aliases",
    "monitor_incidents",
    "monitor_windows",
    "model_packages",
    "model_versions",
    "registered_models",
    "registry_audit",
    "experiments",
    "feature_definitions",
    "agent_actions",
    "agent_events",
    "agent_leases",
    "gate_evaluations",
    "gate_results",
    "latest_metrics",
    "materializations",
    "metadata",
    "metric_batches",
    "metrics",
    "params",
    "pipeline_inputs",
    "pipeline_outputs",
    "pipeline_runs",
    "pipeline_steps",
    "run_artifacts",
    "run_inputs",
    "run_tags",
    "runs",
    "step_cache",
    "traffic_audit",
    "traffic_policies",
]

#: the newest Alembic revision; a store at this revision needs no migration
HEAD_REVISION = "0009_traffic"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("description", Text, nullable=True),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", String(32), ForeignKey("experiments.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("heartbeat_at", BigInteger, nullable=False),
    Column("parent_run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("git_commit", String(64), nullable=True),
    Column("git_dirty", Boolean, nullable=True),
    Column("python_version", String(32), nullable=False),
    Column("packages", Text, nullable=False),  # JSON object: name -> version
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("user", String(255), nullable=False),
    Column("source", Text, nullable=True),
    Index(None, "experiment_id", "start_time"),
    Index(None, "status"),
    Index(None, "parent_run_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key", "value"),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float(precision=53), nullable=True),  # NULL stands for NaN on SQLite
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index(None, "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float(precision=53), nullable=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index(None, "key", "value"),
)

#: the id of every batch of metric points written: a batch retried after a commit whose
#: answer was lost finds its id here and is not written twice
metric_batches = Table(
    "metric_batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("written_at", BigInteger, nullable=False),
)

run_inputs = Table(
    "run_inputs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("context", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("schema", Text, nullable=False),  # JSON list of {name, type}
    Column("num_rows", BigInteger, nullable=False),
    Column("source", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("run_id", "name", "context"),
    Index(None, "digest"),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# -- registry (0002) -------------------------------------------------------------------

model_packages = Table(
    "model_packages",
    metadata,
    Column("id", String(64), primary_key=True),  # the manifest's sha256
    Column("flavor", String(64), nullable=False),
    Column("model_class", String(255), nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "run_id"),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("description", Text, nullable=True),
    Column("tags", Text, nullable=False),  # JSON object
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(255), ForeignKey("registered_models.name"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("package_id", String(64), ForeignKey("model_packages.id"), nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("status", String(16), nullable=False),  # active | archived
    Column("description", Text, nullable=True),
    Column("created_by", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", String(255), ForeignKey("registered_models.name"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

registry_audit = Table(
    "registry_audit",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("alias", String(64), nullable=True),
    Column("version_from", Integer, nullable=True),
    Column("version_to", Integer, nullable=True),
    Column("actor", String(255), nullable=False),
    Column("reason", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    Index(None, "name", "id"),
)

# -- features (0003) -------------------------------------------------------------------

feature_definitions = Table(
    "feature_definitions",
    metadata,
    Column("kind", String(16), primary_key=True),  # entity | view | service
    Column("name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("sha256", String(64), nullable=False),
    Column("definition", Text, nullable=False),  # canonical JSON
    Column("applied_at", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
    Index(None, "kind", "active"),
)

materializations = Table(
    "materializations",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("view", String(128), nullable=False),
    Column("start", BigInteger, nullable=True),  # UTC microseconds; null: from the beginning
    Column("end", BigInteger, nullable=False),
    Column("watermark", BigInteger, nullable=True),  # max availability time seen
    Column("rows", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Index(None, "view", "id"),
)


# -- monitoring ---------------------------------------------------------------------------

monitor_windows = Table(
    "monitor_windows",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "drift" | "performance"
    Column("window_start", BigInteger, nullable=False),  # UTC microseconds
    Column("window_end", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("alarm", Boolean, nullable=False),  # drift: prediction or feature drift
    Column("summary", Text, nullable=False),  # JSON: the whole result
    Column("computed_at", BigInteger, nullable=False),
    UniqueConstraint("model", "version", "kind", "window_start", "window_end"),
    Index(None, "model", "version", "kind", "window_end"),
)

monitor_incidents = Table(
    "monitor_incidents",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("rule", String(128), nullable=False),
    Column("cause", String(256), nullable=False),
    Column("state", String(16), nullable=False),  # "open" | "resolved"
    Column("opened_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("detail", Text, nullable=False),  # JSON: the windows that breached, values
    UniqueConstraint("model", "version", "rule", "cause"),
)


# -- training pipelines ---------------------------------------------------------------
# A pipeline run is a tracked run (``runs``) and each of its steps a child run. These
# tables add what a run does not hold: the step graph's state, the cache and lineage.

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("pipeline", String(255), nullable=False),
    Column("module", String(255), nullable=False),
    Column("params", Text, nullable=False),  # JSON object: the validated parameters
    Column("status", String(16), nullable=False),  # running | completed | failed
    Column("resumed_from", String(32), nullable=True),
    Column("executor", String(32), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Index(None, "pipeline", "started_at"),
)

pipeline_steps = Table(
    "pipeline_steps",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("pipeline_run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("step", String(255), nullable=False),  # the node's name, unique in its run
    Column("function", String(512), nullable=False),  # module:qualname
    Column("cache_key", String(64), nullable=True),  # NULL until its inputs are known
    Column("source_hash", String(64), nullable=False),
    # pending | running | completed | cached | failed | skipped
    Column("status", String(16), nullable=False),
    Column("cached_from", String(32), nullable=True),  # the step run whose outputs it reused
    Column("started_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("logs_sha256", String(64), nullable=True),
    UniqueConstraint("pipeline_run_id", "step"),
    Index(None, "cache_key"),
)

pipeline_outputs = Table(
    "pipeline_outputs",
    metadata,
    Column("step_run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("type", String(512), nullable=False),
    Column("materializer", String(128), nullable=False),
    Column("manifest", Text, nullable=False),  # JSON: file name -> sha256, and metadata
    Column("size", BigInteger, nullable=False),
    Index(None, "digest"),
)

pipeline_inputs = Table(
    "pipeline_inputs",
    metadata,
    Column("step_run_id", String(32), ForeignKey("runs.id"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # output | file | features
    Column("source_step_run_id", String(32), nullable=True),  # NULL for outside data
    Column("description", Text, nullable=True),  # a path, a feature service, ...
    Index(None, "digest"),
)

step_cache = Table(
    "step_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("step_run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# -- promotion gates (0007) ---------------------------------------------------------------
# One evaluation is one run of a model version's gates against the holder of an alias;
# its results keep every measured number, so a promotion can show (and check) its evidence.

gate_evaluations = Table(
    "gate_evaluations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("against", String(64), nullable=False),
    Column("champion_version", Integer, nullable=True),  # NULL: nobody held the alias
    Column("eval_digest", String(64), nullable=False),
    Column("config_digest", String(64), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Index(None, "model", "version", "against", "created_at"),
)

gate_results = Table(
    "gate_results",
    metadata,
    Column("evaluation_id", String(32), ForeignKey("gate_evaluations.id"), primary_key=True),
    Column("gate", String(255), primary_key=True),
    Column("position", Integer, nullable=False),  # the order the gates ran in
    Column("kind", String(32), nullable=False),
    Column("required", Boolean, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("summary", Text, nullable=False),
    Column("numbers", Text, nullable=False),  # JSON object
    Column("ci_low", Float, nullable=True),
    Column("ci_high", Float, nullable=True),
    Column("details", Text, nullable=False),  # JSON list of objects
)


# -- continuous training (0008) ---------------------------------------------------------
# One action per incident that asked for it (a retrain), advanced stage by stage by
# ``modelyard agent``; times in microseconds: ``*_us`` on the agent's clock (``--as-of``
# when replaying), ``recorded_us`` on the wall clock. ``in_flight`` holds the model's
# name while the action is not finished and NULL after: its unique constraint keeps at
# most one candidate in flight per model, whatever process asks.

agent_actions = Table(
    "agent_actions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("kind", String(32), nullable=False),  # "retrain"
    Column("state", String(32), nullable=False),
    Column("in_flight", String(255), nullable=True, unique=True),
    Column("incident_id", _BigId, nullable=True),
    Column("incident_opened_us", BigInteger, nullable=True),
    Column("rule", String(128), nullable=True),
    Column("champion_version", Integer, nullable=True),
    Column("candidate_version", Integer, nullable=True),
    Column("pipeline", String(255), nullable=True),
    Column("params", Text, nullable=False),  # JSON object
    Column("window_start_us", BigInteger, nullable=True),
    Column("window_end_us", BigInteger, nullable=True),
    Column("pipeline_run_id", String(32), nullable=True),
    Column("gate_evaluation_id", String(32), nullable=True),
    Column("canary_started_us", BigInteger, nullable=True),
    Column("decision", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("detail", Text, nullable=False),  # JSON object (the canary's test state, ...)
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    UniqueConstraint("incident_id", "incident_opened_us"),
    Index(None, "model", "created_us"),
)

agent_events = Table(
    "agent_events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("action_id", String(32), ForeignKey("agent_actions.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("key", String(64), nullable=False),  # "" or what makes it unique (a look's number)
    Column("time_us", BigInteger, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("detail", Text, nullable=False),  # JSON object
    UniqueConstraint("action_id", "kind", "key"),
)

agent_leases = Table(
    "agent_leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),  # host:pid:token
    Column("acquired_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)

# -- traffic (0009) --------------------------------------------------------------------
# One traffic policy per served model (``TrafficSettings`` as JSON), shared by every
# worker of every replica. ``version`` rises by one per change (compare-and-set: a write
# names the version it read); each change has its audit row, old and new policy in JSON.

traffic_policies = Table(
    "traffic_policies",
    metadata,
    Column("model", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("policy", Text, nullable=False),  # JSON object (TrafficSettings)
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

traffic_audit = Table(
    "traffic_audit",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("model", String(255), nullable=False),
    Column("version", Integer, nullable=False),  # the policy version this change made
    Column("policy_from", Text, nullable=True),  # JSON; NULL for the first stored policy
    Column("policy_to", Text, nullable=False),  # JSON
    Column("actor", String(255), nullable=False),
    Column("reason", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    UniqueConstraint("model", "version"),
)
