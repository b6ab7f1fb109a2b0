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
>>> step_value("auc", 2**70)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected an integer step between -2**63 and 2**63-1 ...
"""

from __future__ import annotations

import numbers
import re

from modelyard.errors import InvalidInputError

__all__ = [
    "MAX_INT64",
    "MAX_PARAM_LENGTH",
    "MIN_INT64",
    "check_key",
    "check_run_id",
    "metric_value",
    "param_value",
    "step_value",
    "timestamp_value",
]

_KEY = re.compile(r"^[A-Za-z0-9_\-./ :]{1,250}$")
MAX_PARAM_LENGTH = 8000
#: steps and timestamps are stored as 64-bit integers (BIGINT) on every backend
MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def check_run_id(run_id: object) -> str:
    """``run_id`` if it has the shape of a run id (32 hex digits)."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidInputError(
            f"Expected a run id of 32 hex digits, got {_shown(run_id)}", loc="run_id"
        )
    return run_id


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


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
    """A metric's value as a 64-bit float; NaN and infinities are kept.

    A number too large for a float (an int such as ``10**400``) is refused, not
    rounded to infinity.
    """
    if isinstance(value, float):
        return value
    if not isinstance(value, str | bytes | bool):
        try:  # ints, Fractions, Decimals, numpy scalars and 0-d arrays
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise InvalidInputError(
                f"Expected a number that fits a 64-bit float for metric {key!r}, "
                f"got {type(value).__name__} {_shown(value)}",
                loc=f"metrics.{key}",
            ) from None
        except (TypeError, ValueError):
            pass
    raise InvalidInputError(
        f"Expected a number for metric {key!r}, got {type(value).__name__} {_shown(value)}",
        loc=f"metrics.{key}",
    )


def step_value(key: str, step: object) -> int:
    """A step as an int that fits the 64-bit column."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidInputError(
            f"Expected an integer step for metric {key!r}, got {_shown(step)}",
            loc=f"metrics.{key}.step",
        )
    number = int(step)
    if not MIN_INT64 <= number <= MAX_INT64:
        raise InvalidInputError(
            f"Expected an integer step between -2**63 and 2**63-1 for metric {key!r}, "
            f"got {_shown(step)}",
            loc=f"metrics.{key}.step",
        )
    return number


def timestamp_value(key: str, timestamp: object) -> int:
    """A timestamp in integer milliseconds since the epoch that fits the 64-bit column."""
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, numbers.Integral)
        or not 0 <= int(timestamp) <= MAX_INT64
    ):
        raise InvalidInputError(
            f"Expected a timestamp in integer milliseconds since the epoch (0 to 2**63-1) "
            f"for metric {key!r}, got {_shown(timestamp)}",
            loc=f"metrics.{key}.timestamp",
        )
    return int(timestamp)
