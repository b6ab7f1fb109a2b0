"""One pass of ``modelyard agent``: monitoring, alert actions, retrains, gates, canaries.

A pass (``run_pass``) takes the agent lease, then for each monitored model:

1. runs monitoring on the champion (``MODEL@against``): the windows closed by ``now``
   (the last few computed again, for labels that arrived late), alert rules and their
   notifications;
2. creates one action per opening of an open incident of the champion whose rule has
   ``action.retrain``: ``pending``, or ``skipped`` with the reason when another action
   of the model is in flight or the last retrain is within the cool-down;
3. advances the model's action in flight as far as it goes this pass: the pipeline runs
   to its end (``agent.retrain``), the gates judge the candidate against the champion
   on the latest labelled window (``agent.evaluation``), the candidate becomes the
   canary (or waits for ``approve`` under ``approve: manual``), and a running canary
   makes one look (``agent.canary``) and, once decided, is promoted or rolled back.

Every stage follows one protocol: read the action, make its effect idempotent or
detectable, then record the outcome and the next state in one transaction with a
compare-and-set on the state (``ActionStore.advance``). A process killed anywhere leaves
the old state (the stage runs again and finds its effect done) or the new one; the tests
kill it at every ``agent.faults`` checkpoint. A retrain that fails (``failed``) or a
candidate that fails its gates (``rejected``) never touches production and opens an
incident (rule ``agent``, cause ``retrain:ID`` or ``gates:ID``) on the champion. An
unexpected error in one model's action fails that action (its canary, if any, is
removed) and the pass goes on with the next model.

Times are the agent's clock ``now`` (``--as-of`` replays set it); it is stored in
microseconds in every ``*_us`` field.

>>> from modelyard.config import init_project, load_settings
>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> settings = load_settings(init_project(root) and root, environ={})
>>> report = run_pass(settings)  # a fresh project: no model to watch yet
>>> report.models, report.actions, report.failed
([], [], False)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelyard.agent import canary, evaluation, retrain
from modelyard.agent.faults import checkpoint
from modelyard.agent.lease import AgentLease
from modelyard.agent.records import Action, ActionStore, EventSpec, actor
from modelyard.config import AgentModelSettings, AlertRule, Settings, duration_seconds
from modelyard.errors import ConflictError, InvalidInputError, ModelyardError, StorageError
from modelyard.gates.records import new_evaluation_id
from modelyard.monitoring.monitor import Monitor
from modelyard.monitoring.windows import ORIGIN, parse_window, utc_us
from modelyard.pipelines.project import load_pipelines
from modelyard.pipelines.runner import StepEvent
from modelyard.registry.client import ModelRegistry
from modelyard.store.database import Database, open_database
from modelyard.store.monitor_results import Incident, MonitorResults

__all__ = ["PassReport", "approve", "monitored_models", "run_forever", "run_pass"]

#: the rule name of the incidents the agent opens for its own failures
AGENT_RULE = "agent"
#: windows computed again by each pass beyond the rules' ``m`` (labels arrive late)
RECOMPUTE = 7


@dataclass
class PassReport:
    """What one pass did."""

    now_us: int
    models: list[str] = field(default_factory=list)
    #: the incidents monitoring opened or reopened in this pass
    incidents_opened: list[dict[str, Any]] = field(default_factory=list)
    #: the actions this pass created or moved, as they are after it
    actions: list[Action] = field(default_factory=list)
    #: one line per thing done, in order (what the CLI prints)
    events: list[str] = field(default_factory=list)
    #: an action failed or was rejected in this pass (or a model could not be handled)
    failed: bool = False
    #: another live agent held the lease: nothing was done
    skipped_lease: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "now_us": self.now_us,
            "models": list(self.models),
            "incidents_opened": list(self.incidents_opened),
            "actions": [a.to_dict() for a in self.actions],
            "events": list(self.events),
            "failed": self.failed,
            "skipped_lease": self.skipped_lease,
        }


def _us(when: datetime) -> int:
    if when.tzinfo is None:
        raise InvalidInputError(
            f"Expected a timezone-aware time for the agent's clock, got {when.isoformat()}",
            loc="now",
        )
    return int(when.timestamp() * 1_000_000)


def monitored_models(settings: Settings, registry: ModelRegistry) -> list[str]:
    """The models the agent watches: ``agent.models``, else every model with ``production``."""
    if settings.agent.models:
        return sorted(settings.agent.models)
    return sorted(m.name for m in registry.list_models() if "production" in m.aliases)


def retrain_rules(settings: Settings) -> list[AlertRule]:
    """The alert rules whose incidents start a retrain."""
    return [r for r in settings.monitoring.alerts if r.action is not None and r.action.retrain]


def validate(settings: Settings, models: list[str], registry: ModelRegistry | None = None) -> None:
    """InvalidInputError naming the key when the agent could not act as configured.

    No alert may be named ``agent`` (the agent's own incidents carry that rule); each
    retrain rule's pipeline must exist, and each model it acts for must have a traffic
    policy whose canary is ``agent.models.MODEL.canary.alias``.
    """
    for i, rule in enumerate(settings.monitoring.alerts):
        if rule.name == AGENT_RULE:
            raise InvalidInputError(
                f"Expected an alert name other than {AGENT_RULE!r} (the agent's own "
                f"incidents carry it), got {rule.name!r}",
                loc=f"monitoring.alerts[{i}].name",
            )
    rules = retrain_rules(settings)
    if not rules:
        return
    pipelines = load_pipelines(settings)
    for i, rule in enumerate(settings.monitoring.alerts):
        action = rule.action.retrain if rule.action is not None else None
        if action is not None and action.pipeline not in pipelines:
            known = ", ".join(sorted(pipelines)) or "none"
            raise InvalidInputError(
                f"Expected the name of a pipeline of the project ({known}), "
                f"got {action.pipeline!r}",
                loc=f"monitoring.alerts[{i}].action.retrain.pipeline",
            )
    for model in models:
        canary.check_traffic(settings, model, registry)


# -- one pass ----------------------------------------------------------------------------


class _Pass:
    """The state of one pass: the stores, the clock, the report."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        now: datetime,
        on_event: Callable[[str], None] | None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.now = now
        self.now_us = _us(now)
        self.registry = ModelRegistry(settings, db=db)
        self.store = ActionStore(db)
        self.results = MonitorResults(db)
        self.report = PassReport(self.now_us)
        self._on_event = on_event
        self._touched: dict[str, Action] = {}

    def say(self, line: str) -> None:
        self.report.events.append(line)
        if self._on_event is not None:
            self._on_event(line)

    def touch(self, action: Action) -> Action:
        self._touched[action.id] = action
        return action

    def finish(self) -> PassReport:
        self.report.actions = list(self._touched.values())
        return self.report

    # -- monitoring and new actions ----------------------------------------------------

    def model(self, name: str) -> None:
        policy = self.settings.agent.model(name)
        champion = self.monitor(name, policy)
        checkpoint("incident-opened")
        if champion is not None:
            self.create_actions(name, champion, policy)
        action = self.store.in_flight(name)
        if action is not None:
            self.drive(action, policy)

    def monitor(self, name: str, policy: AgentModelSettings) -> int | None:
        """Monitoring of the champion up to now; its version (None: nothing to monitor)."""
        try:
            with Monitor(self.settings, db=self.db) as monitor:
                ref = f"{name}@{policy.against}"
                since, until = self.monitor_range(name, monitor.registry.get_version(ref).version)
                run = monitor.run(ref, since=since, until=until)
        except ModelyardError as exc:
            self.say(f"{name}: monitoring skipped: {exc}")
            return None
        for event in run.events:
            if event.change in ("opened", "reopened") and event.incident is not None:
                incident = event.incident
                self.report.incidents_opened.append(
                    {"model": name, "change": event.change, **incident.to_dict()}
                )
                self.say(
                    f"{name} v{incident.version}: incident {incident.id} {event.change} "
                    f"({incident.rule}: {incident.cause}, {event.breaches} of "
                    f"{event.windows} windows)"
                )
        return run.model.version

    def monitor_range(self, name: str, version: int) -> tuple[datetime | None, datetime]:
        """The windows a pass (re)computes: complete ones only, from the last stored.

        ``until`` is the start of the window ``now`` falls in: a window is judged once it
        has closed, never on its first minutes (a 5 minute interval would otherwise
        store a new partial window each pass and alert on a few rows). The last
        ``max(m) + RECOMPUTE`` windows are computed again so late labels count; before
        them, the windows stored by earlier passes stand.
        """
        length = int(parse_window(self.settings.monitoring.window).total_seconds() * 1e6)
        origin = utc_us(ORIGIN)
        until_us = origin + (self.now_us - origin) // length * length
        until = datetime.fromtimestamp(until_us / 1e6, UTC)
        latest = self.results.latest(name, version, "drift")
        if latest is None:
            return None, until
        back = max([r.m for r in self.settings.monitoring.alerts] + [1]) + RECOMPUTE
        since_us = min(latest.end_us, until_us - back * length)
        since_us = origin + (since_us - origin) // length * length
        return datetime.fromtimestamp(since_us / 1e6, UTC), until

    def create_actions(self, name: str, champion: int, policy: AgentModelSettings) -> None:
        rules = {r.name: r for r in retrain_rules(self.settings)}
        if not rules:
            return
        incidents = [
            i
            for i in self.results.incidents(name, champion, state="open")
            if i.rule in rules and i.rule != AGENT_RULE
        ]
        for incident in sorted(incidents, key=lambda i: (i.opened_at_us, i.id)):
            self.create_action(name, champion, policy, incident, rules[incident.rule])

    def create_action(
        self,
        name: str,
        champion: int,
        policy: AgentModelSettings,
        incident: Incident,
        rule: AlertRule,
    ) -> None:
        assert rule.action is not None and rule.action.retrain is not None
        spec = rule.action.retrain
        window_us = duration_seconds("action.retrain.window", spec.window) * 1_000_000
        common: dict[str, Any] = {
            "model": name,
            "kind": "retrain",
            "now_us": self.now_us,
            "incident": incident,
            "rule": rule.name,
            "champion_version": champion,
            "pipeline": spec.pipeline,
            "params": dict(spec.params),
            "window": (self.now_us - window_us, self.now_us),
        }
        reason = self.skip_reason(name, policy)
        if reason is None:
            try:
                created = self.store.create(state="pending", **common)
            except ConflictError as exc:
                reason = str(exc)
            else:
                if created is not None:
                    self.touch(created)
                    self.say(
                        f"{name}: action {created.id} created: retrain {spec.pipeline} on "
                        f"the last {spec.window} (incident {incident.id}, {rule.name})"
                    )
                    checkpoint("action-created")
                return
        skipped = self.store.create(state="skipped", reason=reason, **common)
        if skipped is not None:
            self.touch(skipped)
            self.say(f"{name}: incident {incident.id}: retrain skipped: {reason}")

    def skip_reason(self, name: str, policy: AgentModelSettings) -> str | None:
        holder = self.store.in_flight(name)
        if holder is not None:
            return f"action {holder.id} is in flight ({holder.state}): one candidate at a time"
        last = self.store.last_retrain(name)
        cooldown_us = duration_seconds("cooldown", policy.cooldown) * 1_000_000
        if last is not None and self.now_us - last.created_us < cooldown_us:
            hours = (self.now_us - last.created_us) / 3.6e9
            return (
                f"cool-down: the last retrain (action {last.id}) was {hours:.1f} h ago, "
                f"cooldown {policy.cooldown}"
            )
        return None

    # -- advancing an action ----------------------------------------------------------

    def drive(self, action: Action, policy: AgentModelSettings) -> None:
        """Advance ``action`` as far as it goes in this pass."""
        try:
            while not action.terminal and action.state != "awaiting_approval":
                before = action.state
                action = self.touch(self.stage(action, policy))
                if action.state == before:
                    break  # the canary started or made its look: one per pass
        except ConflictError as exc:
            fresh = self.store.get(action.id)
            if (fresh.state, fresh.canary_started_us) != (action.state, action.canary_started_us):
                self.say(f"{action.model}: action {action.id}: {exc}")  # another process
            else:  # a conflict of the stage's own (the registry refused a move)
                self.fail_unexpected(action, policy, exc)
        except Exception as exc:  # one model's failure must not stop the pass
            self.fail_unexpected(action, policy, exc)

    def stage(self, action: Action, policy: AgentModelSettings) -> Action:
        if action.state == "pending":
            return self.store.advance(
                action,
                "training",
                now_us=self.now_us,
                event=(
                    "retrain_started",
                    "",
                    {
                        "pipeline": action.pipeline,
                        "params": action.params,
                        "window_start_us": action.window_start_us,
                        "window_end_us": action.window_end_us,
                    },
                ),
            )
        if action.state == "training":
            return self.train(action)
        if action.state == "gating":
            return self.gate(action, policy)
        if action.state == "canary":
            if action.canary_started_us is None:
                return self.start_canary(action, policy)
            return self.look(action)
        if action.state in ("promoting", "rolling_back"):
            return self.finish_canary(action)
        return action  # awaiting_approval: `models approve` moves it

    def train(self, action: Action) -> Action:
        self.say(f"{action.model}: action {action.id}: running pipeline {action.pipeline}")

        def step_line(event: StepEvent) -> None:
            if event.status in ("completed", "cached", "failed"):
                took = "" if event.duration_s is None else f" in {event.duration_s:.1f} s"
                self.say(f"{action.model}:   step {event.step} {event.status}{took}")

        result = retrain.run_retrain(self.settings, action, on_event=step_line)
        events: list[EventSpec] = [
            ("orphan_archived", str(v), {"version": v}) for v in result.orphans
        ]
        if result.restored_production:
            events.append(
                ("production_restored", "", {"champion_version": action.champion_version})
            )
            self.say(
                f"{action.model}: the pipeline moved the champion's alias: moved back to "
                f"v{action.champion_version}"
            )
        if result.error is not None or result.candidate_version is None:
            error = result.error or "the pipeline registered no version of the model"
            events.append(("retrain_failed", "", {"error": error, "run": result.pipeline_run_id}))
            return self.fail(
                action,
                "failed",
                cause=f"retrain:{action.id}",
                reason=f"retrain failed: {error}",
                events=events,
                pipeline_run_id=result.pipeline_run_id,
            )
        events += [
            ("retrain_completed", "", {"pipeline_run_id": result.pipeline_run_id}),
            ("candidate", "", {"version": result.candidate_version}),
        ]
        done = self.store.advance(
            action,
            "gating",
            now_us=self.now_us,
            events=events,
            pipeline_run_id=result.pipeline_run_id,
            candidate_version=result.candidate_version,
        )
        self.say(
            f"{action.model}: action {action.id}: candidate v{result.candidate_version} "
            f"(pipeline run {result.pipeline_run_id})"
        )
        checkpoint("candidate-recorded")
        return done

    def gate(self, action: Action, policy: AgentModelSettings) -> Action:
        if "gate_evaluation_id" not in action.detail:
            # the id is written before the evaluation that uses it: a rerun finds it stored
            action = self.store.update_detail(
                action,
                {**action.detail, "gate_evaluation_id": new_evaluation_id()},
                now_us=self.now_us,
            )
        report = evaluation.gate_candidate(self.settings, action, now=self.now)
        summary = {
            "evaluation_id": report.id,
            "passed": report.passed,
            "champion_version": report.champion_version,
            "results": [
                {"gate": r.gate, "passed": r.passed, "required": r.required, "summary": r.summary}
                for r in report.results
            ],
        }
        ref = f"{action.model}/{action.candidate_version}"
        if not report.passed:
            failed = ", ".join(r.gate for r in report.failed_required)
            return self.fail(
                action,
                "rejected",
                cause=f"gates:{action.id}",
                reason=f"gates failed: {failed}",
                events=[("gates", "", summary)],
                gate_evaluation_id=report.id,
            )
        self.say(f"{action.model}: action {action.id}: {ref} passed its gates ({report.id})")
        if policy.approve == "manual":
            self.say(
                f"{action.model}: action {action.id}: awaiting approval: "
                f"modelyard models approve {ref}"
            )
            return self.store.advance(
                action,
                "awaiting_approval",
                now_us=self.now_us,
                events=[("gates", "", summary), ("awaiting_approval", "", {"ref": ref})],
                gate_evaluation_id=report.id,
            )
        return self.store.advance(
            action,
            "canary",
            now_us=self.now_us,
            event=("gates", "", summary),
            gate_evaluation_id=report.id,
        )

    def start_canary(self, action: Action, policy: AgentModelSettings) -> Action:
        return _start_canary(
            self.settings, self.store, self.registry, action, self.now_us, self.say
        )

    def look(self, action: Action) -> Action:
        look = canary.look(self.settings, action, now=self.now)
        shown = {
            "number": look.number,
            "n_candidate": look.n_candidate,
            "n_primary": look.n_primary,
            "metrics": look.metrics,
            "decision": look.decision,
        }
        detail = {**action.detail, "canary": look.state, "looks": look.number}
        self.say(
            f"{action.model}: action {action.id}: canary look {look.number}: "
            f"{look.n_candidate} canary / {look.n_primary} primary labelled rows: {look.decision}"
        )
        events: list[EventSpec] = [("look", str(look.number), shown)]
        if look.decision == "continue":
            return self.store.advance(
                action, "canary", now_us=self.now_us, events=events, detail=detail
            )
        promote = look.decision in ("promote", "timeout_promote")
        events.append(("decision", "", {"decision": look.decision, "look": look.number}))
        done = self.store.advance(
            action,
            "promoting" if promote else "rolling_back",
            now_us=self.now_us,
            events=events,
            detail=detail,
            decision=look.decision,
        )
        checkpoint("decided")
        return done

    def finish_canary(self, action: Action) -> Action:
        decision = action.decision or ("promote" if action.state == "promoting" else "rollback")
        finished = canary.finish_canary_result(
            self.settings, action, decision, registry=self.registry
        )
        checkpoint("finished")
        ref = f"{action.model}/{action.candidate_version}"
        outcome = finished.outcome
        reason = f"{ref} {outcome.replace('_', ' ')}: {finished.reason}"
        self.say(f"{action.model}: action {action.id}: {reason}")
        return self.store.advance(
            action,
            outcome,
            now_us=self.now_us,
            event=(
                outcome,
                "",
                {
                    "decision": decision,
                    "version": action.candidate_version,
                    "reason": finished.reason,
                },
            ),
            reason=reason,
        )

    # -- failures ---------------------------------------------------------------------

    def fail(
        self,
        action: Action,
        state: str,
        *,
        cause: str,
        reason: str,
        events: list[EventSpec],
        **fields: Any,
    ) -> Action:
        """``action`` -> ``state`` (failed or rejected) with an incident on the champion."""
        incident = self.open_incident(action, cause, reason)
        events = [
            *events,
            ("incident_opened", "", {"incident_id": incident, "cause": cause}),
        ]
        if state == "failed":
            events.append(("failed", "", {"reason": reason}))
        done = self.store.advance(
            action, state, now_us=self.now_us, events=events, reason=reason, **fields
        )
        self.report.failed = True
        self.say(f"{action.model}: action {action.id} {state}: {reason} (incident {incident})")
        return done

    def open_incident(self, action: Action, cause: str, reason: str) -> int | None:
        if action.champion_version is None:
            return None
        incident, _ = self.results.record_incident(
            action.model,
            action.champion_version,
            AGENT_RULE,
            cause,
            breaching=True,
            detail={
                "action_id": action.id,
                "state": action.state,
                "reason": reason,
                "candidate_version": action.candidate_version,
                "pipeline_run_id": action.pipeline_run_id,
            },
        )
        return None if incident is None else incident.id

    def fail_unexpected(self, action: Action, policy: AgentModelSettings, exc: Exception) -> None:
        line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
        self.report.failed = True
        try:
            fresh = self.store.get(action.id)
            if fresh.terminal:
                self.say(f"{action.model}: action {action.id}: {line}")
                return
            if fresh.state in ("canary", "rolling_back") and fresh.canary_started_us is not None:
                try:  # never leave a failed candidate serving a share of the traffic
                    canary.finish_canary_result(
                        self.settings, fresh, "rollback", registry=self.registry
                    )
                except Exception as removal:
                    line += f" (the canary alias could not be removed: {removal})"
            self.touch(
                self.fail(
                    fresh,
                    "failed",
                    cause=f"error:{action.id}",
                    reason=f"unexpected error in {fresh.state}: {line}",
                    events=[],
                )
            )
        except Exception as again:  # the store itself may be failing
            self.say(f"{action.model}: action {action.id}: {line}; not recorded: {again}")


def _start_canary(
    settings: Settings,
    store: ActionStore,
    registry: ModelRegistry,
    action: Action,
    now_us: int,
    say: Callable[[str], None],
) -> Action:
    """Put the candidate on the canary alias (idempotent) and record the start."""
    policy = settings.agent.model(action.model)
    canary.start_canary(settings, action, registry=registry)
    traffic, _ = canary.served_policy(settings, action.model, registry)
    weight = None if traffic is None else traffic.canary_weight
    done = store.advance(
        action,
        "canary",
        now_us=now_us,
        event=(
            "canary_started",
            "",
            {"alias": policy.canary.alias, "weight": weight, "version": action.candidate_version},
        ),
        canary_started_us=now_us,
        expect={"canary_started_us": None},  # `models approve` and a pass may race here
    )
    say(
        f"{action.model}: action {action.id}: canary started: "
        f"{action.model}/{action.candidate_version} on @{policy.canary.alias}"
        + ("" if weight is None else f" at weight {weight:g}")
    )
    return done


def run_pass(
    settings: Settings,
    *,
    now: datetime | None = None,
    on_event: Callable[[str], None] | None = None,
) -> PassReport:
    """One pass of the agent at ``now`` (default: the wall clock); see the module doc.

    InvalidInputError (naming the key) when the configuration cannot work; a second
    agent while one holds the lease skips the pass (``skipped_lease``) with one line.
    """
    when = now or datetime.now(UTC)
    db = open_database(settings.db_url)
    try:
        state = _Pass(settings, db, when, on_event)
        lease = AgentLease(
            db, ttl_s=max(600.0, 3 * duration_seconds("interval", settings.agent.interval))
        )
        if not lease.acquire():
            state.report.skipped_lease = True
            state.say(f"another agent holds the lease ({lease.holder_seen}): pass skipped")
            return state.finish()
        try:
            models = monitored_models(settings, state.registry)
            state.report.models = models
            validate(settings, models, state.registry)
            for name in models:
                try:
                    state.model(name)
                except StorageError:
                    raise
                except Exception as exc:  # the next model still gets its pass
                    state.report.failed = True
                    state.say(f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())}")
                lease.renew()
        finally:
            lease.release()
        return state.finish()
    finally:
        db.close()


def run_forever(
    settings: Settings,
    *,
    interval_s: float,
    stop: threading.Event,
    now: Callable[[], datetime] | None = None,
    on_report: Callable[[PassReport], None] | None = None,
) -> None:
    """Passes every ``interval_s`` seconds until ``stop`` is set (a pass is never cut).

    A pass the metadata store failed (StorageError: the database is down) is reported
    as failed and the next pass comes on time; bad configuration (InvalidInputError)
    stops the loop.
    """
    while not stop.is_set():
        when = None if now is None else now()
        try:
            report = run_pass(settings, now=when)
        except StorageError as exc:
            report = PassReport(_us(when or datetime.now(UTC)), failed=True)
            report.events.append(f"pass failed: {exc}; the next in {interval_s:g} s")
        if on_report is not None:
            on_report(report)
        # in slices: a signal handler setting ``stop`` is seen within a second, whatever
        # the interval (a long Event.wait is not always woken under every runner)
        deadline = time.monotonic() + interval_s
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, 1.0))


def approve(
    settings: Settings,
    ref: str,
    *,
    who: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> Action:
    """Approve the candidate ``ref`` whose action awaits approval: it becomes the canary.

    ConflictError when no action of that version awaits approval (naming its state);
    InvalidInputError when the model's traffic policy sends the canary nothing.
    """
    when_us = _us(now or datetime.now(UTC))
    db = open_database(settings.db_url)
    registry = ModelRegistry(settings, db=db)
    try:
        store = ActionStore(db)
        version = registry.get_version(ref)
        canary.check_traffic(settings, version.name, registry)
        actions = store.for_version(version.name, version.version)
        waiting = [a for a in actions if a.state == "awaiting_approval"]
        if not waiting:
            states = ", ".join(f"{a.id} {a.state}" for a in actions) or "no agent action"
            raise ConflictError(
                f"{version.name}/{version.version} has no action awaiting approval ({states})"
            )
        action = store.advance(
            waiting[0],
            "canary",
            now_us=when_us,
            event=("approved", "", {"who": who or actor(), "reason": reason}),
        )
        return _start_canary(settings, store, registry, action, when_us, lambda _line: None)
    finally:
        registry.close()
        db.close()
