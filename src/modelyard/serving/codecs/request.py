"""What every decoder returns: the checked inputs and what the client asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelyard.models.runtimes import Inputs

__all__ = ["DecodedRequest"]


@dataclass(frozen=True)
class DecodedRequest:
    """A request decoded and checked against the signature, ready for the runtime.

    ``inputs`` is ``None`` only for a v1 ``{"entities": [...]}`` request, whose keys the
    app looks up in the online store: ``entities`` holds them as columns.
    ``binary_outputs`` is ``True`` for "every output as binary" (v2
    ``parameters.binary_data_output``), else the names of outputs asked for as binary.
    """

    inputs: Inputs | None
    entities: dict[str, list[Any]] | None
    rows: int
    request_id: str | None = None
    requested_outputs: list[str] | None = None
    binary_outputs: frozenset[str] | bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
