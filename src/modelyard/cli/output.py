"""How commands print: rich tables on a terminal, JSON for scripts, one line per error."""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from modelyard.errors import InvalidInputError

__all__ = ["console", "err_console", "fmt_time", "fmt_value", "parse_time", "print_json"]

# no emoji codes: run names, params and paths are printed as the user wrote them
console = Console(highlight=False, soft_wrap=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def _default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def print_json(data: Any) -> None:
    """Strict JSON on stdout (NaN becomes null, infinities strings)."""
    sys.stdout.write(json.dumps(_clean(data), indent=2, default=_default) + "\n")


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def fmt_value(value: Any, *, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO time with a zone from a command-line option, in UTC; None stays None."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInputError(
            f"Expected an ISO time with a time zone like 2013-03-01T00:00Z, got {value!r}",
            loc=option,
        )
    return moment.astimezone(UTC)
