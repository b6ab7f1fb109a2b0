"""Promotion gates: checks a model version must pass before an alias moves to it.

``run_gates(settings, "churn/4", against="production", eval="eval.parquet")`` runs the
gates declared under ``gates:`` in ``modelyard.yaml`` (or a list handed in) and stores
the report; ``latest_evaluation`` reads the newest one back. Each family of gates lives
in its own module; this package exports the core types, the runner and the gate classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.gates.base import GATE_KINDS, Gate, GateContext, GateResult
    from modelyard.gates.behaviour import (
        BehaviourGate,
        DirectionalTest,
        InvarianceTest,
        MinimumFunctionalityTest,
    )
    from modelyard.gates.champion import ChampionGate
    from modelyard.gates.config import GateConfig, gate_config, parse_gate_config
    from modelyard.gates.data import DataGate
    from modelyard.gates.latency import LatencyGate
    from modelyard.gates.metric import MetricGate
    from modelyard.gates.parity import ParityGate
    from modelyard.gates.records import GateReport, latest_evaluation, list_evaluations
    from modelyard.gates.runner import run_gates
    from modelyard.gates.sequential import SequentialTest, combine_decisions
    from modelyard.gates.signature import SignatureGate
    from modelyard.gates.slices import SliceGate
    from modelyard.gates.statistics import (
        PairedComparison,
        auc_delong,
        non_inferior,
        paired_bootstrap,
        paired_delong,
    )

#: each exported name and the module it lives in, loaded on first use: the registry
#: imports ``modelyard.gates.records`` and the runner imports the registry, so an eager
#: import here would be a cycle (one-line additions per owner)
_LAZY = {
    "GATE_KINDS": "modelyard.gates.base",
    "Gate": "modelyard.gates.base",
    "GateContext": "modelyard.gates.base",
    "GateResult": "modelyard.gates.base",
    "GateConfig": "modelyard.gates.config",
    "gate_config": "modelyard.gates.config",
    "parse_gate_config": "modelyard.gates.config",
    "DataGate": "modelyard.gates.data",
    "MetricGate": "modelyard.gates.metric",
    "GateReport": "modelyard.gates.records",
    "latest_evaluation": "modelyard.gates.records",
    "list_evaluations": "modelyard.gates.records",
    "run_gates": "modelyard.gates.runner",
    "LatencyGate": "modelyard.gates.latency",
    "ParityGate": "modelyard.gates.parity",
    "SignatureGate": "modelyard.gates.signature",
    "ChampionGate": "modelyard.gates.champion",
    "SliceGate": "modelyard.gates.slices",
    **dict.fromkeys(["SequentialTest", "combine_decisions"], "modelyard.gates.sequential"),
    **dict.fromkeys(
        ["BehaviourGate", "DirectionalTest", "InvarianceTest", "MinimumFunctionalityTest"],
        "modelyard.gates.behaviour",
    ),
    **dict.fromkeys(
        ["PairedComparison", "auc_delong", "non_inferior", "paired_bootstrap", "paired_delong"],
        "modelyard.gates.statistics",
    ),
}

__all__ = [
    "GATE_KINDS",
    "DataGate",
    "Gate",
    "GateConfig",
    "GateContext",
    "GateReport",
    "GateResult",
    "MetricGate",
    "gate_config",
    "latest_evaluation",
    "list_evaluations",
    "parse_gate_config",
    "run_gates",
    "LatencyGate",
    "ParityGate",
    "SignatureGate",
    "ChampionGate",
    "SliceGate",
    "SequentialTest",
    "combine_decisions",
    "BehaviourGate",
    "DirectionalTest",
    "InvarianceTest",
    "MinimumFunctionalityTest",
    "PairedComparison",
    "auc_delong",
    "non_inferior",
    "paired_bootstrap",
    "paired_delong",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard.gates' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
