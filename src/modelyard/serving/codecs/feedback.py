"""Decoding ``POST /v1/feedback`` and checking each label against the model it labels.

A body is one item ``{"request_id", "label", "row"?}`` or ``{"feedback": [items]}``.
``request_id`` is either id the client knows: the server's record id (``X-Record-ID``)
or the client's own request id (``X-Request-ID``, v2 ``id``).

A label must be a target of the model that made the prediction (its package manifest):
one of a classifier's classes (``"1"``, or ``1``, whose text is ``"1"``), a finite
number for a regressor, a JSON scalar for anything else. ``label`` may instead be a
list of labels, one per row of the request, when no ``row`` is named.

>>> target = Target(task="classification", classes=("0", "1"))
>>> found = ProblemList()
>>> check_label(1, None, 1, target, "$.label", found)
>>> check_label("yes", None, 1, target, "$.label", found)
>>> check_label([0, 1, 1], None, 2, target, "$.label", found)
>>> [(p.loc, p.expected) for p in found.items]  # doctest: +NORMALIZE_WHITESPACE
[('$.label', "one of the model's classes: '0', '1'"),
 ('$.label', 'a list of 2 labels (one per row of the request)')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from modelyard.errors import InvalidInputError
from modelyard.serving.codecs.jsonbody import decode_json, validation_error
from modelyard.serving.codecs.problems import ProblemList
from modelyard.store.predlog import MAX_CLIENT_ID

__all__ = ["FeedbackItem", "Target", "check_label", "decode_feedback"]

#: a feedback batch holds at most this many items
MAX_ITEMS = 10_000


class FeedbackItem(msgspec.Struct, forbid_unknown_fields=True):
    """One label as sent."""

    request_id: str
    label: Any
    row: int | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    feedback: list[FeedbackItem]


@dataclass(frozen=True)
class Target:
    """What a model predicts, from its manifest: the task and, for a classifier, its classes."""

    task: str
    classes: tuple[str, ...] | None = None


def decode_feedback(body: bytes) -> tuple[list[FeedbackItem], bool]:
    """The items of a feedback body, and whether it was a batch.

    400 when it is not JSON, 422 naming the bad field.
    """
    raw = decode_json(body)
    batch = isinstance(raw, dict) and "feedback" in raw
    try:
        items = (
            msgspec.convert(raw, _Batch).feedback if batch else [msgspec.convert(raw, FeedbackItem)]
        )
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    prefix = "$.feedback" if batch else "$"
    found = ProblemList()
    if not items:
        found.add(prefix, "at least one feedback item", "an empty array", raw=True)
    if len(items) > MAX_ITEMS:
        found.add(prefix, f"at most {MAX_ITEMS} items", f"{len(items)} items", raw=True)
    for i, item in enumerate(items):
        at = f"{prefix}[{i}]" if batch else prefix
        if not item.request_id or len(item.request_id) > MAX_CLIENT_ID:
            wanted = f"a request or record id of 1 to {MAX_CLIENT_ID} characters"
            found.add(f"{at}.request_id", wanted, item.request_id)
        if item.row is not None and item.row < 0:
            found.add(f"{at}.row", "a row number >= 0, or no row", item.row)
    found.raise_if_any()
    return items, batch


def _text(value: Any) -> str | None:
    """A scalar label as the log's readers see it (JSON text, strings unquoted)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return msgspec.json.encode(value).decode()
    return None


def _scalar(value: Any, target: Target, loc: str, found: ProblemList) -> None:
    if target.task == "classification" and target.classes:
        if _text(value) not in target.classes:
            shown = ", ".join(repr(c) for c in target.classes[:10])
            more = f" (and {len(target.classes) - 10} more)" if len(target.classes) > 10 else ""
            found.add(loc, f"one of the model's classes: {shown}{more}", value)
    elif target.task == "regression":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            found.add(loc, "a finite number (the model is a regressor)", value)
    elif _text(value) is None:
        found.add(loc, "a label: a string, number or boolean", value)


def check_label(
    label: Any, row: int | None, rows: int, target: Target, loc: str, found: ProblemList
) -> None:
    """Add what is wrong with a label for a record of ``rows`` rows of the ``target`` model."""
    if row is not None and row >= rows:
        found.add(loc.rsplit(".", 1)[0] + ".row", f"a row number below {rows}", row)
        return
    if isinstance(label, list):
        if row is not None or len(label) != rows:
            wanted = (
                "one label for the named row"
                if row is not None
                else f"a list of {rows} labels (one per row of the request)"
            )
            found.add(loc, wanted, label)
            return
        for i, value in enumerate(label):
            _scalar(value, target, f"{loc}[{i}]", found)
        return
    _scalar(label, target, loc, found)


def refuse_unknown_shape(label: Any, loc: str) -> None:
    """A label for an unknown id is kept as sent, but it must still be a label's shape."""
    values = label if isinstance(label, list) else [label]
    if any(_text(v) is None for v in values):
        raise InvalidInputError(
            f"Expected a label (a string, number or boolean, or a list of them), "
            f"got {type(label).__name__}",
            loc=loc,
        )
