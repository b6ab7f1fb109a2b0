"""Continuous training: ``modelyard agent`` turns alerts into retrains, gates and canaries.

The names below are imported on first use (``from modelyard.agent import run_pass``), so
importing one submodule (``modelyard.agent.records``) does not import the whole loop.
See ``docs/continuous-training.md`` and ``modelyard.agent.loop``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.agent.faults import CHECKPOINTS, checkpoint
    from modelyard.agent.lease import AgentLease
    from modelyard.agent.loop import PassReport, approve, monitored_models, run_forever, run_pass
    from modelyard.agent.records import STATES, TERMINAL, Action, ActionEvent, ActionStore

_LAZY = {
    "CHECKPOINTS": "modelyard.agent.faults",
    "checkpoint": "modelyard.agent.faults",
    "AgentLease": "modelyard.agent.lease",
    "PassReport": "modelyard.agent.loop",
    "approve": "modelyard.agent.loop",
    "monitored_models": "modelyard.agent.loop",
    "run_forever": "modelyard.agent.loop",
    "run_pass": "modelyard.agent.loop",
    "STATES": "modelyard.agent.records",
    "TERMINAL": "modelyard.agent.records",
    "Action": "modelyard.agent.records",
    "ActionEvent": "modelyard.agent.records",
    "ActionStore": "modelyard.agent.records",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CHECKPOINTS",
    "STATES",
    "TERMINAL",
    "Action",
    "ActionEvent",
    "ActionStore",
    "AgentLease",
    "PassReport",
    "approve",
    "checkpoint",
    "monitored_models",
    "run_forever",
    "run_pass",
]
