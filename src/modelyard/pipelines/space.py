"""Search spaces for ``tune``: a plain dict of ranges and choices, or Optuna distributions.

>>> space = parse_space({"max_depth": (2, 10), "lr": (1e-3, 0.3, "log"), "kind": ["a", "b"]})
>>> [type(d).__name__ for d in space.values()]
['IntDistribution', 'FloatDistribution', 'CategoricalDistribution']
>>> parse_space({"lr": (0.0, 1.0, "log")})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a log range with low > 0 for 'lr', ... - at space.lr
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from modelyard.errors import InvalidInputError

__all__ = ["call_objective", "parse_space", "suggest"]

_CHOICE_TYPES = (type(None), bool, int, float, str)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range(key: str, entry: tuple[Any, ...]) -> BaseDistribution:
    def bad(expected: str) -> InvalidInputError:
        return InvalidInputError(
            f"Expected {expected} for {key!r}, got {_shown(entry)}", loc=f"space.{key}"
        )

    if len(entry) not in (2, 3):
        raise bad("(low, high), (low, high, 'log') or (low, high, step)")
    low, high, *rest = entry
    if not (_number(low) and _number(high)):
        raise bad("numbers as low and high")
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise bad("finite low and high")
    if low > high:
        raise bad("low <= high")
    option = rest[0] if rest else None
    log = option == "log"
    step = None if option is None or log else option
    if option is not None and not log and not (_number(step) and float(step or 0) > 0):
        raise bad("'log' or a positive step as the third item")
    if log and low <= 0:
        raise bad("a log range with low > 0")
    integral = isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral)
    # Optuna warns and silently narrows a range that the step does not divide: refuse it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if integral and (step is None or isinstance(step, numbers.Integral)):
                dist: BaseDistribution = IntDistribution(
                    int(low), int(high), log=log, step=int(step or 1)
                )
            else:
                dist = FloatDistribution(
                    float(low), float(high), log=log, step=None if step is None else float(step)
                )
        except (ValueError, ArithmeticError) as exc:  # Optuna's checks (log with a step, ...)
            raise bad(f"a range Optuna accepts ({exc})") from None
    if caught:
        raise bad(f"a step that divides high - low ({caught[0].message})")
    return dist


def _choices(key: str, entry: list[Any]) -> BaseDistribution:
    if not entry:
        raise InvalidInputError(f"Expected at least one choice for {key!r}", loc=f"space.{key}")
    for choice in entry:
        if not isinstance(choice, _CHOICE_TYPES):
            raise InvalidInputError(
                f"Expected choices that are None, bool, int, float or str for {key!r}, "
                f"got {type(choice).__name__} {_shown(choice)}",
                loc=f"space.{key}",
            )
    return CategoricalDistribution(list(entry))


def parse_space(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """Optuna distributions for ``space``; a bad entry is an InvalidInputError naming its key.

    Entries: ``(low, high)`` a range (ints: an integer range), ``(low, high, "log")`` a
    log-scaled range, ``(low, high, step)`` a stepped range, a list of choices, or any
    ``optuna.distributions`` object.
    """
    if not isinstance(space, Mapping):
        raise InvalidInputError(
            f"Expected a dict of parameter name -> range or choices, got {_shown(space)}",
            loc="space",
        )
    parsed: dict[str, BaseDistribution] = {}
    for key, entry in space.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(
                f"Expected parameter names that are non-empty strings, got {_shown(key)}",
                loc="space",
            )
        if isinstance(entry, BaseDistribution):
            parsed[key] = entry
        elif isinstance(entry, tuple):
            parsed[key] = _range(key, entry)
        elif isinstance(entry, list):
            parsed[key] = _choices(key, entry)
        else:
            raise InvalidInputError(
                f"Expected a tuple (low, high[, 'log' | step]), a list of choices or an "
                f"optuna distribution for {key!r}, got {type(entry).__name__} {_shown(entry)}",
                loc=f"space.{key}",
            )
    return parsed


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """One value per parameter, asked in the space's order (as plain Optuna code would)."""
    params: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(
                name, dist.low, dist.high, step=dist.step, log=dist.log
            )
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(
                name, dist.low, dist.high, step=dist.step, log=dist.log
            )
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:  # a distribution of a future Optuna: its generic path
            params[name] = trial._suggest(name, dist)
    return params


def _takes_trial(objective: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no keyword to give
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "trial" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


def call_objective(
    objective: Callable[..., Any], space: Mapping[str, BaseDistribution] | None
) -> Callable[[optuna.Trial], Any]:
    """``objective`` as Optuna calls it: with a space it gets the params dict (and
    ``trial=`` when it accepts that keyword); without one, the trial."""
    if space is None:
        return objective
    with_trial = _takes_trial(objective)

    def call(trial: optuna.Trial) -> Any:
        params = suggest(trial, space)
        return objective(params, trial=trial) if with_trial else objective(params)

    return call
