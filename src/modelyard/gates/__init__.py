"""Promotion gates: checks a model version must pass before an alias moves to it.

See docs and ``modelyard gate REF``. Each family of gates lives in its own module;
this package exports the core types, the runner and every gate class.
"""

from __future__ import annotations

from modelyard.gates.base import GATE_KINDS, Gate, GateContext, GateResult

__all__ = [
    "GATE_KINDS",
    "Gate",
    "GateContext",
    "GateResult",
]
