"""Checks on what users log: keys, param values, metric values and steps.

>>> check_key("val/auc", "metric")
'val/auc'
>>> check_key("", "param")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a param key of 1-250 letters, ... got '' - at params
>>> metric_value("auc", "0.9")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a number for metric 'auc', got str '0.9' - at ...
"""

from __future__ import annotations

import numbers
import re

from modelyard.errors import InvalidInputError

__all__ = [
    "MAX_PARAM_LENGTH",
    "check_key",
    "metric_value",
    "param_value",
    "step_value",
    "timestamp_value",
]

_KEY = re.compile(r"^[A-Za-z0-9_\-./ :]{1,250}$")
MAX_PARAM_LENGTH = 8000


def check_key(key: object, kind: str) -> str:
    """``key`` if it is a usable name for a ``kind`` (param, metric, tag)."""
    if not isinstance(key, str) or not _KEY.match(key) or key.strip() != key:
        raise InvalidInputError(
            f"Expected a {kind} key of 1-250 letters, digits, spaces or _ - . / : got {key!r}",
            loc=f"{kind}s",
        )
    return key


def param_value(key: str, value: object) -> str:
    """A param's value as the string stored."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_PARAM_LENGTH:
        raise InvalidInputError(
            f"Expected a param value of at most {MAX_PARAM_LENGTH} characters, "
            f"got {len(text)}; log long values as an artifact instead",
            loc=f"params.{key}",
        )
    return text


def metric_value(key: str, value: object) -> float:
    """A metric's value as a float; NaN and infinities are kept."""
    if isinstance(value, float):
        return value
    if isinstance(value, int | numbers.Real) and not isinstance(value, bool):
        return float(value)
    try:  # numpy scalars and 0-d arrays
        if not isinstance(value, str | bytes | bool):
            return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise InvalidInputError(
        f"Expected a number for metric {key!r}, got {type(value).__name__} {shown}",
        loc=f"metrics.{key}",
    )


def step_value(key: str, step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidInputError(
            f"Expected an integer step for metric {key!r}, got {step!r}", loc=f"metrics.{key}.step"
        )
    return int(step)


def timestamp_value(key: str, timestamp: object) -> int:
    """A timestamp in integer milliseconds since the epoch."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Integral) or timestamp < 0:
        raise InvalidInputError(
            f"Expected a timestamp in integer milliseconds since the epoch for metric {key!r}, "
            f"got {timestamp!r}",
            loc=f"metrics.{key}.timestamp",
        )
    return int(timestamp)
