"""The ``gates:`` section of ``modelyard.yaml``, validated into gate objects.

``config.py`` keeps the section as a raw mapping (it sits below this package); this
module checks every key and builds the gates. A bad key or value is one
InvalidInputError naming ``gates.MODEL.checks[i].KEY``, with the closest known key.

Each kind's class lives in its own module of this package and is built with the
check's keys plus ``name=`` and ``required=``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError, did_you_mean
from modelyard.gates.base import GATE_KINDS, Gate
from modelyard.gates.behaviour import BehaviourGate
from modelyard.gates.champion import ChampionGate
from modelyard.gates.data import DataGate
from modelyard.gates.latency import LatencyGate
from modelyard.gates.metric import METRIC_NAMES, MetricGate
from modelyard.gates.parity import ParityGate
from modelyard.gates.records import jsonable
from modelyard.gates.signature import SignatureGate
from modelyard.gates.slices import SliceGate

__all__ = [
    "CHECK_KEYS",
    "GateConfig",
    "MODEL_KEYS",
    "build_gate",
    "gate_config",
    "gates_digest",
    "parse_gate_config",
]

MODEL_KEYS = ("label", "metric", "eval", "checks")
COMMON_KEYS = ("type", "name", "required")

#: the keys each kind of check accepts (besides type, name, required)
CHECK_KEYS: dict[str, tuple[str, ...]] = {
    "metric": ("metric", "min", "max"),
    "champion": ("metric", "margin", "alpha", "n_boot", "seed", "interval"),
    "slices": ("by", "buckets", "metric", "min_rows", "max_drop", "worst"),
    "latency": ("batch_sizes", "p50_ms", "p99_ms", "repeats", "warmup"),
    "parity": ("atol", "rtol"),
    "signature": ("strict_values",),
    "behaviour": ("module", "max_rows"),
    "data": (
        "min_rows",
        "max_missing",
        "ranges",
        "label_balance_tolerance",
        "max_missing_increase",
    ),
}

#: the class of each kind; each takes its config keys plus ``name=`` and ``required=``
_CLASSES: dict[str, Callable[..., Any]] = {
    "metric": MetricGate,
    "champion": ChampionGate,
    "slices": SliceGate,
    "latency": LatencyGate,
    "parity": ParityGate,
    "signature": SignatureGate,
    "behaviour": BehaviourGate,
    "data": DataGate,
}

#: kinds whose ``metric`` defaults to the model's primary metric
_METRIC_DEFAULT = ("champion", "slices")


@dataclass(frozen=True)
class GateConfig:
    """One model's gates as declared: the label, the primary metric, the eval set."""

    model: str
    label: str | None
    metric: str | None
    eval: str | None
    gates: tuple[Gate, ...]
    digest: str  # sha256 of the canonical (defaults filled) declaration


def _fail(message: str, loc: str) -> InvalidInputError:
    return InvalidInputError(message, loc=loc)


def _unknown_keys(entry: Mapping[str, Any], allowed: Sequence[str], loc: str) -> None:
    for key in entry:
        if key not in allowed:
            raise _fail(
                f"Unknown key {key!r}." + did_you_mean(str(key), list(allowed), "keys"),
                f"{loc}.{key}",
            )


def build_gate(kind: str, options: Mapping[str, Any], *, name: str, required: bool) -> Gate:
    """The gate of ``kind`` with ``options`` (the check's keys less type/name/required)."""
    gate: Gate = _CLASSES[kind](**options, name=name, required=required)
    return gate


def _check_entry(
    raw: Any, loc: str, primary: str | None
) -> tuple[str, str | None, bool, dict[str, Any]]:
    if not isinstance(raw, Mapping):
        raise _fail(f"Expected a mapping with a type key, got {raw!r}", loc)
    kind = raw.get("type")
    if kind is None:
        raise _fail(f"Expected a type, one of {', '.join(GATE_KINDS)}; got none", f"{loc}.type")
    if kind not in CHECK_KEYS:
        raise _fail(
            f"Unknown gate type {kind!r}." + did_you_mean(str(kind), list(GATE_KINDS), "types"),
            f"{loc}.type",
        )
    _unknown_keys(raw, (*COMMON_KEYS, *CHECK_KEYS[kind]), loc)
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise _fail(f"Expected a non-empty text, got {name!r}", f"{loc}.name")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise _fail(f"Expected true or false, got {required!r}", f"{loc}.required")
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    if kind in _METRIC_DEFAULT and "metric" not in options and primary is not None:
        options["metric"] = primary
    if kind == "metric" and "metric" in options and options["metric"] not in METRIC_NAMES:
        metric = options["metric"]
        raise _fail(
            f"Expected a metric name, got {metric!r}."
            + did_you_mean(str(metric), list(METRIC_NAMES), "metrics"),
            f"{loc}.metric",
        )
    if kind == "metric" and "metric" not in options:
        raise _fail("Expected the metric the gate measures, got none", f"{loc}.metric")
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(f"Expected a finite number, got {value!r}", f"{loc}.{key}")
    return str(kind), name, required, options


def _default_name(kind: str, options: Mapping[str, Any]) -> str:
    metric = options.get("metric")
    return f"{kind}:{metric}" if metric else kind


def parse_gate_config(model: str, raw: Any) -> GateConfig:
    """Validate one model's entry of ``gates:`` and build its gates."""
    base = f"gates.{model}"
    if not isinstance(raw, Mapping):
        raise _fail(f"Expected a mapping of {', '.join(MODEL_KEYS)}, got {raw!r}", base)
    _unknown_keys(raw, MODEL_KEYS, base)
    for key in ("label", "metric", "eval"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _fail(f"Expected a non-empty text, got {value!r}", f"{base}.{key}")
    primary = raw.get("metric")
    if primary is not None and primary not in METRIC_NAMES:
        raise _fail(
            f"Expected a metric name, got {primary!r}."
            + did_you_mean(str(primary), list(METRIC_NAMES), "metrics"),
            f"{base}.metric",
        )
    checks = raw.get("checks", [])
    if not isinstance(checks, list):
        raise _fail(f"Expected a list of checks, got {checks!r}", f"{base}.checks")
    parsed = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(checks):
        loc = f"{base}.checks[{i}]"
        kind, name, required, options = _check_entry(entry, loc, primary)
        if name is None:
            stem = _default_name(kind, options)
            count = seen.get(stem, 0)
            name = stem if count == 0 else f"{stem}#{count + 1}"
            while name in seen:
                count += 1
                name = f"{stem}#{count + 1}"
            seen[stem] = count + 1
        elif name in seen:
            raise _fail(f"Expected a unique gate name, got {name!r} twice", f"{loc}.name")
        seen.setdefault(name, 1)
        parsed.append((kind, name, required, options))
    canonical = {
        "label": raw.get("label"),
        "metric": primary,
        "checks": [{"type": k, "name": n, "required": r, **jsonable(o)} for k, n, r, o in parsed],
    }
    gates = []
    for i, (kind, name, required, options) in enumerate(parsed):
        try:
            gates.append(build_gate(kind, options, name=name, required=required))
        except InvalidInputError as exc:
            key = exc.loc or "?"
            raise _fail(exc.message.split(" - at ")[0], f"{base}.checks[{i}].{key}") from exc
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as exc:
            # a class refused a value of the wrong shape without naming it
            given = ", ".join(f"{k}={v!r}" for k, v in options.items())
            raise _fail(
                f"Bad options for a {kind} gate ({given}): {exc}", f"{base}.checks[{i}]"
            ) from exc
    return GateConfig(
        model=model,
        label=raw.get("label"),
        metric=primary,
        eval=raw.get("eval"),
        gates=tuple(gates),
        digest=_digest(canonical),
    )


def _digest(value: Any) -> str:
    text = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def gate_config(settings: Settings, model: str) -> GateConfig:
    """The declared gates of ``model`` in the project's ``modelyard.yaml``."""
    raw = settings.gates.get(model)
    if raw is None:
        raise NotFoundError(
            f"No gates declared for {model!r} in modelyard.yaml (gates.{model})."
            + did_you_mean(model, list(settings.gates), "models with gates")
        )
    return parse_gate_config(model, raw)


def _spec(gate: Any) -> Any:
    inner = gate
    fields = {
        k: v
        for k, v in vars(inner).items()
        if not k.startswith("_")
        and (v is None or isinstance(v, bool | int | float | str | list | tuple | dict))
    }
    return {
        "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
        "name": gate.name,
        "kind": gate.kind,
        "required": gate.required,
        "fields": fields,
    }


def gates_digest(label: str, gates: Sequence[Gate]) -> str:
    """The config digest of gates built in Python: their classes and simple attributes."""
    return _digest({"label": label, "gates": [_spec(g) for g in gates]})
