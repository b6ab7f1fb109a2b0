"""The agent's canary: the candidate serves a share of traffic and is judged online.

``start_canary`` points the canary alias (``agent.models.M.canary.alias``) at the
candidate; the servers (by the model's traffic policy: the traffic store's, else
``serving.traffic.M``; its ``canary`` must be that alias and ``canary_weight`` above 0,
see :func:`check_traffic`) then send it its share of requests,
logged with route ``canary``. Each pass of the agent makes one :func:`look`; once a look
decides, :func:`finish_canary` promotes the candidate (through the registry's gate
evidence) or rolls it back, and removes the canary alias.

Arms and outcomes (:func:`canary_outcomes`). The candidate arm is the rows logged with
route ``canary`` by the candidate version, the primary arm those logged with route
``primary`` by the champion, both since the canary started and before the agent's ``now``.
Per row, once its feedback label arrived:

- the primary metric (``canary.metric``): ``log_loss`` (default for a classifier: the
  negative log of the probability given to the true class) or ``error_rate`` (1 when the
  arg-max class is not the label); ``squared_error`` (default for a regressor) or
  ``absolute_error``;
- ``error_rate`` for a classifier (``canary.error_rate``), unless it is the primary metric.
  A regressor has no error rate and gets no second accuracy test: its primary metric is
  the accuracy test (an absolute-error test beside a squared-error one would need its own
  margin on the target's scale, and each added test lowers every test's alpha);
- ``latency_ms`` (``canary.latency``): one value per request record, labelled or not
  (a latency needs no label), tested on its logarithm, so the margin is relative.

Labels whose value is not one of the classifier's classes (or not a number, for a
regressor) are left out and counted in the look.

The test (:mod:`modelyard.gates.sequential`). One mSPRT per metric at ``alpha / k`` (k
tests), all "lower is better"; :func:`~modelyard.gates.sequential.combine_decisions` joins
them: any rollback rolls back, promote only when every test promotes. Each look re-reads
every labelled row so far (:meth:`~modelyard.gates.sequential.SequentialTest.observe`):
labels mature in any order, so a look sees a superset of the previous look's rows, not the
rows after them. The tests' state (totals, running p-value and bounds, a sticky decision)
is kept in ``action.detail["canary"]`` between looks; a look re-run from the same state
(after a crash) gives the same look, over the same or more rows.

Per-test settings (tau: the mixture scale, the test is most powerful for differences of
about tau; margin: the accepted loss), fixed when the test is created, at the first look at
which it can count; the list of metrics is fixed at the first look:

- ``log_loss``: tau ``canary.tau`` or 0.02; margin ``canary.margin``;
- ``error_rate`` as the primary metric: tau ``canary.tau`` or 0.02; margin ``canary.margin``;
  beside another primary metric: tau 0.02, margin ``canary.error_rate_margin`` (0.02, two
  points of error rate);
- ``squared_error``, ``absolute_error``: tau ``canary.tau`` or 10% of the primary arm's mean
  error, read once the primary arm has ``min_samples`` rows (never off the candidate's rows);
  margin ``canary.margin``;
- ``latency_ms``, on log(ms): tau 0.1 (about 10%); margin ``log(1 + canary.latency_margin)``
  (0.1: a geometric mean 10% slower is accepted).

Timeout. The canary stops at ``canary.horizon`` labelled rows per arm, or
``canary.max_duration`` after it started, whichever comes first. A test that reached no
decision then decides on its estimate: ``timeout_promote`` when the estimated loss of the
candidate is within the test's margin (``gain >= -margin``), else ``timeout_rollback``. The
primary metric's test with fewer than ``min_samples`` rows per arm rolls back (too little
evidence to replace the primary); a guard's (error rate, latency: latency counts requests,
not rows, so it may have far fewer) is ``inconclusive`` and does not vote, so a canary is
never rolled back only because a guard saw too few requests to say anything. A timeout
carries no error guarantee; it is reported as such.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from modelyard.agent.faults import checkpoint
from modelyard.agent.records import Action, actor
from modelyard.config import CanarySettings, Settings, TrafficSettings, duration_seconds
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError
from modelyard.gates.sequential import SequentialTest, combine_decisions
from modelyard.models.manifest import Manifest
from modelyard.monitoring.labelled import labels_as
from modelyard.monitoring.windows import read_log, utc_us
from modelyard.registry.client import ModelRegistry
from modelyard.registry.refs import ModelRef
from modelyard.registry.store import SQLRegistryStore
from modelyard.registry.traffic import TrafficPolicies
from modelyard.store.predlog.shipping import shipped_log

__all__ = [
    "CLASSIFIER_METRICS",
    "REGRESSOR_METRICS",
    "CanaryFinish",
    "CanaryLook",
    "canary_outcomes",
    "check_traffic",
    "served_policy",
    "finish_canary",
    "finish_canary_result",
    "look",
    "start_canary",
]

#: the primary metrics a classifier's canary may be judged on (the first is the default)
CLASSIFIER_METRICS = ("log_loss", "error_rate")
#: ... and a regressor's
REGRESSOR_METRICS = ("squared_error", "absolute_error")
#: default mixture scales (tau) of the tests on an absolute scale
DEFAULT_TAU = {"log_loss": 0.02, "error_rate": 0.02}
#: a regressor's default tau: this share of the primary arm's mean error
RELATIVE_TAU = 0.1
#: the latency test's tau, on the log scale (about a 10% difference)
LATENCY_TAU = 0.1
LATENCY = "latency_ms"
_STATE_VERSION = 1
_PROMOTE = ("promote", "timeout_promote")
#: a guard's decision at a timeout when it saw fewer than ``min_samples`` per arm: no vote
INCONCLUSIVE = "inconclusive"
_ROLLBACK = ("rollback", "timeout_rollback")
_NEVER = sys.maxsize  # a horizon no test reaches: decide() then answers its sticky decision


@dataclass(frozen=True)
class CanaryLook:
    """One interim look at the canary: per-metric statistics and the joint decision."""

    number: int
    now_us: int
    n_candidate: int  # labelled rows of the candidate arm (primary metric)
    n_primary: int
    metrics: dict[str, dict[str, Any]]  # name -> {diff, lower, upper, p_value, decision, alpha}
    decision: str  # continue | promote | rollback | timeout_promote | timeout_rollback
    state: dict[str, Any]  # what to keep in action.detail["canary"] for the next look

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "now_us": self.now_us,
            "n_candidate": self.n_candidate,
            "n_primary": self.n_primary,
            "metrics": self.metrics,
            "decision": self.decision,
            "state": self.state,
        }


@dataclass(frozen=True)
class CanaryFinish:
    """What :func:`finish_canary_result` did: the outcome and, for a rollback, why."""

    outcome: str  # promoted | rolled_back
    reason: str


# -- settings -------------------------------------------------------------------------


def _canary(settings: Settings, model: str) -> CanarySettings:
    return settings.agent.model(model).canary


def served_policy(
    settings: Settings, model: str, registry: ModelRegistry | None = None
) -> tuple[TrafficSettings | None, str]:
    """The policy the servers route ``model`` by and where it comes from: the traffic
    store's (every replica serves by it) when ``registry`` is given and it holds one, else
    ``serving.traffic.MODEL``'s; with the key an error names (``traffic.MODEL`` for the
    store's)."""
    if registry is not None:
        stored = TrafficPolicies(registry).get_policy(model)
        if stored is not None:
            return stored.policy, f"traffic.{model}"
    return settings.serving.traffic.get(model), f"serving.traffic.{model}"


def check_traffic(settings: Settings, model: str, registry: ModelRegistry | None = None) -> None:
    """Refuse (InvalidInputError naming ``serving.traffic.MODEL``, or the stored policy's
    version when the traffic store holds one, see :func:`served_policy`) a model whose
    traffic policy would give the canary no requests, or whose primary is not the alias
    the candidate is judged against and promoted to."""
    policy, policy_key = served_policy(settings, model, registry)
    wanted = _canary(settings, model).alias
    against = settings.agent.model(model).against
    if policy is None:
        raise InvalidInputError(
            f"expected a traffic policy with canary: {wanted} and canary_weight above 0 "
            "for the agent's canary, got none",
            loc=policy_key,
        )
    if policy.canary != wanted:
        raise InvalidInputError(
            f"expected canary: {wanted} (agent.models.{model}.canary.alias), got {policy.canary!r}",
            loc=f"{policy_key}.canary",
        )
    if not policy.canary_weight > 0:
        raise InvalidInputError(
            f"expected canary_weight above 0 (the canary's share of requests), "
            f"got {policy.canary_weight!r}",
            loc=f"{policy_key}.canary_weight",
        )
    if policy.primary != against:
        raise InvalidInputError(
            f"expected primary: {against} (agent.models.{model}.against: the canary is "
            f"judged against it), got {policy.primary!r}",
            loc=f"{policy_key}.primary",
        )


def _versions(action: Action) -> tuple[int, int]:
    if action.candidate_version is None or action.champion_version is None:
        raise ConflictError(
            f"Action {action.id} of {action.model} has no candidate and champion versions "
            "yet: its canary cannot run"
        )
    return action.candidate_version, action.champion_version


def _started(action: Action) -> int:
    if action.canary_started_us is None:
        raise ConflictError(f"Action {action.id} of {action.model} has not started its canary")
    return action.canary_started_us


def _primary_metric(settings: Settings, model: str, manifest: Manifest) -> str:
    chosen = _canary(settings, model).metric
    key = f"agent.models.{model}.canary.metric"
    if manifest.task == "classification":
        allowed = CLASSIFIER_METRICS
    elif manifest.task == "regression":
        allowed = REGRESSOR_METRICS
    else:
        raise InvalidInputError(
            f"expected a classifier or a regressor for the canary's per-row outcomes, "
            f"got a model of task {manifest.task!r}",
            loc=key,
        )
    if chosen is None:
        return allowed[0]
    if chosen not in allowed:
        raise InvalidInputError(
            f"expected one of {', '.join(allowed)} for a {manifest.task} model, got {chosen!r}",
            loc=key,
        )
    return chosen


def _plan(settings: Settings, model: str, manifest: Manifest) -> list[str]:
    """The metrics tested, the primary one first."""
    cfg = _canary(settings, model)
    primary = _primary_metric(settings, model, manifest)
    names = [primary]
    if cfg.error_rate and manifest.task == "classification" and primary != "error_rate":
        names.append("error_rate")
    if cfg.latency:
        names.append(LATENCY)
    return names


# -- start --------------------------------------------------------------------------


def start_canary(settings: Settings, action: Action, *, registry: ModelRegistry) -> None:
    """Point the canary alias at the candidate, unless it points there already.

    A canary alias held by another version (a canary someone else started) is left alone:
    ConflictError naming it, nothing moved.
    """
    candidate, _ = _versions(action)
    alias = _canary(settings, action.model).alias
    holder = _holder(registry, action.model, alias)
    if holder != candidate:

        def check(current: int | None) -> tuple[str, str | None]:
            if current is not None and current != candidate:
                raise ConflictError(
                    f"The {alias} alias of {action.model} holds v{current}, not the "
                    f"candidate v{candidate} of action {action.id}: remove it (modelyard "
                    f"models unalias {action.model} {alias}) to let the agent's canary start"
                )
            return "alias", f"agent: action {action.id} canary of v{candidate}"

        SQLRegistryStore(registry.db).move_alias_checked(
            action.model, alias, candidate, check=check, actor=actor(), now=_now_ms()
        )
    checkpoint("canary-alias-set")


def _holder(registry: ModelRegistry, model: str, alias: str) -> int | None:
    try:
        return registry.get_version(ModelRef(model, alias=alias)).version
    except NotFoundError:
        return None


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


# -- outcomes -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arm:
    """One arm's outcomes: labelled rows per metric, latency per request, rows left out."""

    outcomes: dict[str, NDArray[np.float64]]
    ignored: int


def _arm(
    log_dir: Path,
    registry: ModelRegistry,
    model: str,
    version: int,
    route: str,
    names: list[str],
    since: datetime,
    until: datetime,
) -> _Arm:
    manifest = registry.manifest(ModelRef(model, version=version))
    classes = manifest.classes or []
    if manifest.task == "classification":
        outputs = [f"proba_{c}" for c in classes]
    else:
        outputs = [manifest.outputs[0].name if manifest.outputs else "prediction"]
    own = CLASSIFIER_METRICS if manifest.task == "classification" else REGRESSOR_METRICS
    wrong = [n for n in names if n != LATENCY and n not in own]
    if wrong:
        raise InvalidInputError(
            f"expected metrics of a {manifest.task} model ({', '.join(own)}), got {wrong[0]!r}",
            loc="detail.canary.metrics",
        )
    empty = np.zeros(0, dtype=np.float64)
    shipped = shipped_log(registry.settings)  # every replica's log, in a fleet
    if not log_dir.is_dir() and shipped is None:
        return _Arm(dict.fromkeys(names, empty), 0)
    table = read_log(
        log_dir,
        model,
        version,
        inputs=[],
        outputs=outputs,
        since=since,
        until=until,
        labels=True,
        routes=(route,),
        columns=("row", "latency_us"),
        shipped=shipped,
    )
    out: dict[str, NDArray[np.float64]] = {}
    if LATENCY in names:
        first = pc.equal(table.column("row"), 0)
        latency = table.filter(first).column("latency_us").to_numpy(zero_copy_only=False)
        out[LATENCY] = np.asarray(latency, dtype=np.float64) / 1000.0
    labelled = table.filter(pc.is_valid(table.column("label")))
    labels = labelled.column("label").to_pylist()
    values = labels_as(labels, manifest.task, classes)
    if manifest.task == "classification":
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)
        scores = _matrix(labelled, [f"output.{n}" for n in outputs])
        usable = (y >= 0) & np.isfinite(scores).all(axis=1)
        y, scores = y[usable], scores[usable]
        given = scores[np.arange(len(y)), y]
        per_row = {
            "log_loss": -np.log(np.clip(given, 1e-15, 1.0)),
            "error_rate": (np.argmax(scores, axis=1) != y).astype(np.float64),
        }
    else:
        truth = np.array([_number(v) for v in values], dtype=np.float64)
        predicted = _matrix(labelled, [f"output.{outputs[0]}"])[:, 0]
        usable = np.isfinite(truth) & np.isfinite(predicted)
        error = predicted[usable] - truth[usable]
        per_row = {"squared_error": error**2, "absolute_error": np.abs(error)}
    for name in names:
        if name != LATENCY:
            out[name] = per_row[name]
    return _Arm(out, int(len(labels) - usable.sum()))


def _matrix(table: pa.Table, columns: list[str]) -> NDArray[np.float64]:
    """The named columns as floats (NaN where a column is missing or a value null)."""
    rows = table.num_rows
    parts = []
    for name in columns:
        if name not in table.column_names:
            parts.append(np.full(rows, np.nan))
            continue
        column = table.column(name)
        try:
            column = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parts.append(np.full(rows, np.nan))
            continue
        parts.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64))
    return np.column_stack(parts) if parts else np.zeros((rows, 0))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _arms(
    settings: Settings, action: Action, now: datetime, names: list[str] | None
) -> tuple[list[str], _Arm, _Arm]:
    """The metrics tested (``names``, or the plan before the first look) and both arms."""
    candidate, champion = _versions(action)
    started = datetime.fromtimestamp(_started(action) / 1e6, UTC)
    registry = ModelRegistry(settings)
    try:
        if names is None:
            manifest = registry.manifest(ModelRef(action.model, version=candidate))
            names = _plan(settings, action.model, manifest)
        log_dir = settings.project_dir / settings.serving.log_dir
        args = (names, started, now)
        arm_c = _arm(log_dir, registry, action.model, candidate, "canary", *args)
        arm_p = _arm(log_dir, registry, action.model, champion, "primary", *args)
    finally:
        registry.close()
    return names, arm_c, arm_p


def canary_outcomes(
    settings: Settings, action: Action, *, now: datetime
) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Per-row outcomes of each tested metric: ``name -> (candidate arm, primary arm)``.

    Rows logged since the canary started, before ``now``, in time order; every metric but
    ``latency_ms`` holds only rows whose label arrived (see the module docstring).
    """
    names, arm_c, arm_p = _arms(
        settings, action, now, _saved_state(action.detail.get("canary")).metrics
    )
    return {name: (arm_c.outcomes[name], arm_p.outcomes[name]) for name in names}


# -- looks ----------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _new_test(
    name: str, cfg: CanarySettings, plan: list[str], primary: NDArray[np.float64]
) -> SequentialTest | None:
    """The test of ``name`` with its settings, or None while it cannot be created yet."""
    alpha = cfg.alpha / len(plan)
    if name == LATENCY:
        tau, margin = LATENCY_TAU, math.log1p(cfg.latency_margin)
    elif name == plan[0]:
        margin = cfg.margin
        if cfg.tau is not None:
            tau = cfg.tau
        elif name in DEFAULT_TAU:
            tau = DEFAULT_TAU[name]
        else:
            if primary.size < cfg.min_samples:
                return None  # the scale is read off the primary arm once it counts
            tau = RELATIVE_TAU * float(primary.mean())
            if not tau > 0:
                tau = 1e-12  # a primary with no error at all: any loss is a loss
    else:  # the error rate beside another primary metric
        tau, margin = DEFAULT_TAU["error_rate"], cfg.error_rate_margin
    return SequentialTest(
        tau2=tau * tau,
        alpha=alpha,
        margin=margin,
        higher_is_better=False,
        min_samples=cfg.min_samples,
        metric=name,
    )


def _log_latency(values: NDArray[np.float64]) -> NDArray[np.float64]:
    # 1 microsecond floor: a 0 us latency (a clock's resolution) has no logarithm
    return np.log(np.maximum(values, 1e-3))


def _timeout(test: SequentialTest | None, *, guard: bool) -> str:
    """A test's decision when the canary times out (see the module docstring)."""
    if test is None:
        return INCONCLUSIVE if guard else "timeout_rollback"
    sticky = test.decide(_NEVER)
    if sticky != "continue":
        return sticky
    if min(test.n_candidate, test.n_primary) < test.min_samples:
        return INCONCLUSIVE if guard else "timeout_rollback"
    gain = -test.diff  # every canary test is "lower is better"
    return "timeout_promote" if gain >= -test.margin else "timeout_rollback"


def _summary(
    name: str, test: SequentialTest | None, decision: str, c: NDArray[Any], p: NDArray[Any]
) -> dict[str, Any]:
    if test is None:
        return {
            "diff": None,
            "lower": None,
            "upper": None,
            "p_value": None,
            "decision": decision,
            "alpha": None,
            "n_candidate": int(c.size),
            "n_primary": int(p.size),
            "waiting": "the primary arm has too few rows to set the test's scale",
        }
    low, high = test.confidence_sequence
    out: dict[str, Any] = {
        "diff": _finite(test.diff),
        "lower": _finite(low),
        "upper": _finite(high),
        "p_value": test.p_value,
        "decision": decision,
        "alpha": test.alpha,
        "margin": test.margin,
        "tau": math.sqrt(test.tau2),
        "n_candidate": test.n_candidate,
        "n_primary": test.n_primary,
        "counted": test.variance is not None,
    }
    if name == LATENCY:
        # the test is on log(ms): the ratio of the geometric means, and its bounds
        out["scale"] = "log"
        for key, value in (("ratio", test.diff), ("ratio_lower", low), ("ratio_upper", high)):
            out[key] = _finite(math.exp(value)) if math.isfinite(value) else None
        out["candidate_median_ms"] = _finite(float(np.median(c))) if c.size else None
        out["primary_median_ms"] = _finite(float(np.median(p))) if p.size else None
    else:
        out["candidate_mean"] = _finite(float(c.mean())) if c.size else None
        out["primary_mean"] = _finite(float(p.mean())) if p.size else None
    return out


@dataclass(frozen=True)
class _Saved:
    """The previous looks' state, checked: ``action.detail["canary"]``."""

    looks: int
    metrics: list[str] | None  # None before the first look
    tests: dict[str, SequentialTest]


_KNOWN = frozenset((*CLASSIFIER_METRICS, *REGRESSOR_METRICS, LATENCY))


def _saved_state(saved: Any) -> _Saved:
    """Read the state a look left; anything malformed is InvalidInputError naming the key."""
    where = "detail.canary"
    if saved is None:
        return _Saved(0, None, {})
    if not isinstance(saved, Mapping):
        raise InvalidInputError(f"expected a mapping, got {type(saved).__name__}", loc=where)
    looks = saved.get("looks", 0)
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 0:
        raise InvalidInputError(f"expected an integer >= 0, got {looks!r}", loc=f"{where}.looks")
    metrics = saved.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, list)
        or not metrics
        or not all(isinstance(m, str) and m in _KNOWN for m in metrics)
        or len(set(metrics)) != len(metrics)
    ):
        raise InvalidInputError(
            f"expected a list of distinct metrics among {', '.join(sorted(_KNOWN))}, "
            f"got {metrics!r}",
            loc=f"{where}.metrics",
        )
    raw = saved.get("tests", {})
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"expected a mapping, got {type(raw).__name__}", loc=f"{where}.tests"
        )
    tests = {}
    for name, state in raw.items():
        if state is None or name not in (metrics or ()):
            continue
        try:
            tests[name] = SequentialTest.from_dict(state)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc), loc=f"{where}.tests.{name}") from None
    return _Saved(looks, None if metrics is None else list(metrics), tests)


def look(settings: Settings, action: Action, *, now: datetime) -> CanaryLook:
    """One interim look: every labelled row so far, each metric's test, the decision.

    Pure: it reads the log and ``action.detail["canary"]`` (the previous looks' state) and
    writes nothing; the caller keeps ``state`` for the next look. Run twice from the same
    state, it gives the same look (over the same rows or, as labels mature, more).
    """
    cfg = _canary(settings, action.model)
    started_us = _started(action)
    now_us = utc_us(now)
    saved = _saved_state(action.detail.get("canary"))
    names, arm_c, arm_p = _arms(settings, action, now, saved.metrics)
    tests = dict(saved.tests)
    decisions: dict[str, str] = {}
    for name in names:
        c, p = arm_c.outcomes[name], arm_p.outcomes[name]
        test = tests.get(name) or _new_test(name, cfg, names, p)
        if test is None:
            decisions[name] = "continue"
            continue
        if name == LATENCY:
            test.observe(_log_latency(c), _log_latency(p))
        else:
            test.observe(c, p)
        tests[name] = test
        decisions[name] = test.decide(_NEVER)
    decision = combine_decisions(decisions.values())
    primary = names[0]
    n_candidate = int(arm_c.outcomes[primary].size)
    n_primary = int(arm_p.outcomes[primary].size)
    timeout: str | None = None
    if decision == "continue":
        elapsed_s = (now_us - started_us) / 1e6
        if min(n_candidate, n_primary) >= cfg.horizon:
            timeout = f"{cfg.horizon} labelled rows per arm reached"
        elif elapsed_s >= duration_seconds("canary.max_duration", cfg.max_duration):
            timeout = f"{cfg.max_duration} since the canary started"
        if timeout is not None:
            decisions = {name: _timeout(tests.get(name), guard=name != primary) for name in names}
            decision = combine_decisions(d for d in decisions.values() if d != INCONCLUSIVE)
    metrics = {
        name: _summary(name, tests.get(name), decisions[name], *_pair(arm_c, arm_p, name))
        for name in names
    }
    metrics[primary]["ignored_labels"] = {"candidate": arm_c.ignored, "primary": arm_p.ignored}
    number = saved.looks + 1
    state = {
        "version": _STATE_VERSION,
        "looks": number,
        "metrics": names,
        "tests": {name: (tests[name].to_dict() if name in tests else None) for name in names},
        "decision": decision,
        "timeout": timeout,
        "now_us": now_us,
        "elapsed": str(timedelta(microseconds=max(0, now_us - started_us))),
    }
    result = CanaryLook(number, now_us, n_candidate, n_primary, metrics, decision, state)
    checkpoint("look-computed")
    return result


def _pair(arm_c: _Arm, arm_p: _Arm, name: str) -> tuple[NDArray[Any], NDArray[Any]]:
    return arm_c.outcomes[name], arm_p.outcomes[name]


# -- finish ---------------------------------------------------------------------------


def finish_canary(
    settings: Settings, action: Action, decision: str, *, registry: ModelRegistry
) -> str:
    """Carry out ``decision``: ``"promoted"`` or ``"rolled_back"`` (see
    :func:`finish_canary_result`, which also says why)."""
    return finish_canary_result(settings, action, decision, registry=registry).outcome


def finish_canary_result(
    settings: Settings, action: Action, decision: str, *, registry: ModelRegistry
) -> CanaryFinish:
    """Promote (``promote``/``timeout_promote``) or roll back, then remove the canary alias.

    Promotion goes through ``registry.promote`` and the candidate's gate evidence against
    the ``against`` alias: evidence gone stale (the champion moved since the gates ran) or
    otherwise refused rolls back instead, the refusal as the reason. The canary alias is
    removed only while it points at the candidate. Idempotent: re-run after a kill, it
    finds ``against`` on the candidate already (promoted) or the alias gone, and does the
    rest.
    """
    if decision not in (*_PROMOTE, *_ROLLBACK):
        raise InvalidInputError(
            f"expected one of {', '.join((*_PROMOTE, *_ROLLBACK))}, got {decision!r}",
            loc="decision",
        )
    candidate, _ = _versions(action)
    policy = settings.agent.model(action.model)
    ref = ModelRef(action.model, version=candidate)
    outcome, reason = "rolled_back", f"canary decision: {decision}"
    if decision in _PROMOTE:
        if _holder(registry, action.model, policy.against) == candidate:
            outcome = "promoted"  # moved before a kill
        else:
            try:
                registry.promote_with_evidence(
                    ref,
                    policy.against,
                    reason=f"agent: action {action.id} canary decision {decision}",
                )
                outcome = "promoted"
            except ConflictError as exc:  # GateFailedError: stale, failed or missing
                reason = (
                    f"canary decision {decision}, promotion refused: " + str(exc).split("\n", 1)[0]
                )
        if outcome == "promoted":
            reason = f"canary decision: {decision}"
            checkpoint("production-moved")
    why = f"agent: action {action.id} {outcome.replace('_', ' ')} ({reason})"
    # NotFoundError: removed already (a re-run); ConflictError: it holds another
    # version now, not this action's
    with contextlib.suppress(NotFoundError, ConflictError):
        SQLRegistryStore(registry.db).remove_alias(
            action.model,
            policy.canary.alias,
            actor=actor(),
            reason=why,
            now=_now_ms(),
            expected=candidate,
        )
    return CanaryFinish(outcome, reason)
