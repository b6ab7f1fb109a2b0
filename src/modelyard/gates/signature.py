"""The signature gate: can the candidate take every request the champion takes?

The candidate's input signature is compared with the champion's by
:func:`modelyard.models.signature.changes`, the same comparison the server makes before
it routes one URL's traffic to another version. Breaking changes, each named: a column the
champion takes and the candidate rejects (removed), a type change, a column that may no
longer be null, a narrowed category set (and, when the project's ``serving.value_checks``
is ``reject``, narrowed ranges and vocabularies of text columns, since the server then
refuses values outside them). A new column the candidate needs is breaking too, unless it
may be null; a new nullable column is listed but allowed (clients must still send the
column, with ``null`` as its value: a request without it is refused with a 4xx, never
answered with a guess).

With no champion there is nothing to compare: the gate passes and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.gates.base import GateContext, GateResult, result_of
from modelyard.models.signature import Change, changes

__all__ = ["SignatureGate", "is_breaking"]


def is_breaking(change: Change) -> bool:
    """Every change breaks requests except a new column that may be null."""
    return not (change.kind == "added" and change.nullable)


class SignatureGate:
    """Candidate vs champion signatures: breaking changes named in the details."""

    kind = "signature"

    def __init__(
        self,
        *,
        strict_values: bool | None = None,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        #: count narrowed ranges/vocabularies; None: as the server does
        #: (``serving.value_checks: reject``)
        self.strict_values = strict_values
        self.name = name or "signature"
        self.required = required

    def _result(
        self,
        passed: bool,
        summary: str,
        numbers: Mapping[str, Any],
        details: tuple[Mapping[str, Any], ...] = (),
    ) -> GateResult:
        return result_of(self, passed, summary, numbers, details)

    def evaluate(self, ctx: GateContext) -> GateResult:
        mine = ctx.candidate_model.manifest.signature
        if mine is None:
            return self._result(
                False,
                f"{ctx.candidate.ref} has no input signature: the server cannot serve it",
                {"applicable": True, "breaking": None},
            )
        if ctx.champion is None or ctx.champion_model is None:
            return self._result(True, "no champion to compare", {"applicable": False})
        theirs = ctx.champion_model.manifest.signature
        champion = f"champion {ctx.champion.ref}"
        if theirs is None:
            return self._result(
                True,
                f"no champion signature to compare ({champion} has none)",
                {"applicable": False},
            )
        strict = self.strict_values
        if strict is None:
            strict = ctx.settings.serving.value_checks == "reject"
        found = changes(theirs, mine, strict_values=strict, called="the champion")
        breaking = [c for c in found if is_breaking(c)]
        allowed = [c for c in found if not is_breaking(c)]
        details = tuple(
            {"kind": c.kind, "column": c.column, "change": c.message, "breaking": is_breaking(c)}
            for c in [*breaking, *allowed]
        )
        numbers = {
            "applicable": True,
            "breaking": len(breaking),
            "allowed_changes": len(allowed),
            "champion_version": ctx.champion.version,
            "strict_values": strict,
        }
        if breaking:
            plural = "s" if len(breaking) > 1 else ""
            summary = f"{len(breaking)} breaking change{plural} vs {champion}: " + "; ".join(
                c.message for c in breaking
            )
            return self._result(False, summary, numbers, details)
        extra = ""
        if allowed:
            names = ", ".join(repr(c.column) for c in allowed)
            extra = f" (new nullable column{'s' if len(allowed) > 1 else ''} {names})"
        return self._result(True, f"compatible with {champion}{extra}", numbers, details)
