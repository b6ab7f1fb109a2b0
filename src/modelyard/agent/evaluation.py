"""The gating stage of an agent action: the candidate's gates on recent labelled traffic.

``gate_candidate`` runs the candidate's gates against the holder of the model's
``agent.models.NAME.against`` alias (``production``) on the rows that holder served in
the last ``gate_window`` (``14d``) before the agent's clock, labelled by the feedback
(``modelyard.monitoring.labelled.window_frame``; a model served by entity key gets the
features the server looked up). The gates are the model's ``gates:`` section of
``modelyard.yaml``; a model without one gets the default set:

- ``champion``: the candidate is not worse than the champion on its metric (AUC for a
  binary classifier, RMSE for a regressor), with margin 0;
- ``signature``: the candidate takes the champion's traffic (its columns and types).

The report is stored under the evaluation id the action allocated before the call
(``action.detail["gate_evaluation_id"]``): run again after a crash, it finds the stored
evaluation and returns it, so the gates never run twice for one action.
"""

from __future__ import annotations

from datetime import datetime

from modelyard.agent.faults import checkpoint
from modelyard.agent.records import Action
from modelyard.config import Settings, duration_seconds
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.gates.base import Gate
from modelyard.gates.champion import ChampionGate
from modelyard.gates.config import gate_config
from modelyard.gates.records import GateReport, load_evaluation
from modelyard.gates.runner import run_gates
from modelyard.gates.signature import SignatureGate
from modelyard.monitoring.labelled import window_frame
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import ModelRef

__all__ = ["DEFAULT_LABEL", "default_gates", "gate_candidate"]

#: the label column of the evaluation rows when the model declares no ``gates.NAME.label``
DEFAULT_LABEL = "label"


def default_gates(registry: ModelRegistry, candidate: ModelVersion) -> tuple[Gate, ...]:
    """The gates of a model with no ``gates:`` section: champion (margin 0) and signature."""
    manifest = registry.manifest(ModelRef(candidate.name, version=candidate.version))
    if manifest.task == "regression":
        metric = "rmse"
    elif manifest.task == "classification" and len(manifest.classes or []) == 2:
        metric = "auc"
    else:
        raise InvalidInputError(
            f"Expected gates declared for {candidate.name} (a {manifest.task} model with "
            f"{len(manifest.classes or [])} classes has no default metric), got none",
            loc=f"gates.{candidate.name}",
        )
    return (ChampionGate(metric=metric, margin=0.0), SignatureGate())


def _label(registry: ModelRegistry, candidate: ModelVersion) -> str:
    """``label``, or ``__label__`` when the model has an input named ``label``."""
    manifest = registry.manifest(ModelRef(candidate.name, version=candidate.version))
    names = set() if manifest.signature is None else set(manifest.signature.names)
    return DEFAULT_LABEL if DEFAULT_LABEL not in names else f"__{DEFAULT_LABEL}__"


def _evaluation_id(action: Action) -> str:
    value = action.detail.get("gate_evaluation_id")
    if not isinstance(value, str) or not value:
        raise InvalidInputError(
            f"Expected the evaluation id allocated for action {action.id} before its gates "
            f"run, got {value!r}",
            loc="action.detail.gate_evaluation_id",
        )
    return value


def gate_candidate(settings: Settings, action: Action, *, now: datetime) -> GateReport:
    """Run (once) and store the candidate's gates; the report (see the module's docstring)."""
    if now.tzinfo is None:
        raise InvalidInputError(f"Expected a time with a zone, got {now.isoformat()}", loc="now")
    if action.candidate_version is None:
        raise InvalidInputError(
            f"Expected the candidate of action {action.id} before its gates, got none",
            loc="action.candidate_version",
        )
    evaluation_id = _evaluation_id(action)
    policy = settings.agent.model(action.model)
    ref = ModelRef(action.model, version=action.candidate_version)
    with ModelRegistry(settings) as registry:
        if load_evaluation(registry.db, evaluation_id) is not None:
            # stored by an earlier call: run_gates returns it (checking it is this one's)
            return run_gates(
                settings,
                ref,
                against=policy.against,
                registry=registry,
                evaluation_id=evaluation_id,
            )
        candidate = registry.get_version(ref)
        try:
            champion: ModelVersion | None = registry.get_version(
                ModelRef(action.model, alias=policy.against)
            )
        except NotFoundError:
            champion = None
        gates: tuple[Gate, ...] | None
        try:
            declared = gate_config(settings, action.model)
        except NotFoundError:
            gates, label = default_gates(registry, candidate), _label(registry, candidate)
        else:
            gates, label = None, declared.label or _label(registry, candidate)
        days = duration_seconds("gate_window", policy.gate_window) / 86_400
        frame = window_frame(
            settings,
            registry,
            candidate,
            champion,
            label,
            days,
            now=now,
            loc=f"agent.models.{action.model}.gate_window",
        )
        report = run_gates(
            settings,
            ref,
            against=policy.against,
            eval=frame,
            gates=gates,
            label=label,
            registry=registry,
            evaluation_id=evaluation_id,
        )
    checkpoint("gates-stored")
    return report
