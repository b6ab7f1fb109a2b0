"""The candidate as the server would run it: its serving runtime and its request arrays.

Shared by the latency and parity gates, so both look at the same runtime the same way
``modelyard serve`` does (``serving.runtime`` of the project, the package's manifest).
"""

from __future__ import annotations

import pandas as pd

from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext
from modelyard.models.runtimes import Runtime, open_serving_runtime
from modelyard.models.signature import Signature
from modelyard.store.artifacts import ArtifactStore

__all__ = ["features", "serving_runtime", "signature_of"]


def signature_of(ctx: GateContext) -> Signature:
    """The candidate's signature; an error when it has none (the server refuses it too)."""
    signature = ctx.candidate_model.manifest.signature
    if signature is None:
        raise InvalidInputError(
            f"{ctx.candidate.ref} has no input signature, so the server cannot serve it; "
            "log it with a training frame (or signature=)",
            loc="signature",
        )
    return signature


def serving_runtime(ctx: GateContext) -> Runtime:
    """The runtime ``modelyard serve`` would open for the candidate in this project."""
    signature_of(ctx)
    artifacts = ArtifactStore(ctx.settings.artifacts)
    return open_serving_runtime(ctx.candidate_model, artifacts, choice=ctx.settings.serving.runtime)


def features(ctx: GateContext) -> pd.DataFrame:
    """The evaluation rows without the label (``build_inputs`` reads the signature's columns)."""
    return ctx.frame.drop(columns=[ctx.label], errors="ignore")
