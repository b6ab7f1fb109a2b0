"""Labelled rows from the prediction log: what a model served, joined with its feedback.

Used where a model is judged on its own recent traffic: ``modelyard gate --window N``
and the agent's gates on a candidate (the champion's last N days of labelled requests).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.monitoring.windows import read_log
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import ModelRef
from modelyard.store.predlog.shipping import shipped_log

__all__ = ["labels_as", "logged_inputs", "window_frame"]


def labels_as(values: list[str | None], task: str, classes: list[str] | None) -> list[Any]:
    """The feedback labels (strings in the log) as the model's label values.

    A classifier's labels become the type of its classes (``"1"`` -> 1 when the classes
    are integers, ``"true"``/``"True"`` -> True when they are booleans); a regressor's
    become floats.
    """
    out: list[Any] = []
    if task == "regression":
        return [None if v is None else float(v) for v in values]
    if classes and set(classes) <= {"True", "False"}:
        named = {"true": True, "false": False, "1": True, "0": False}
        return [None if v is None else named.get(v.lower(), v) for v in values]
    if classes and all(_is_int(c) for c in classes):
        for v in values:
            out.append(int(v) if v is not None and _is_int(v) else v)
        return out
    return list(values)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def logged_inputs(frame: pd.DataFrame, names: list[str] | None) -> pd.DataFrame:
    """A model's input columns ``names`` from logged rows (all logged inputs for None).

    A column is the logged ``input.NAME`` (what the serving model saw: the request's
    field, or the feature it looked up). A model served by entity key has its feature
    service's values logged as ``feature.VIEW:NAME`` too, and the server gives the model
    the feature ``NAME`` (the part after the colon) wherever the request did not send
    the field: so where ``input.NAME`` is missing or null (the serving model did not take
    ``NAME``, a candidate trained on more features does), the one non-empty
    ``feature.VIEW:NAME`` column fills it. Two such columns for one name are refused
    (which one the server gives depends on the service's order); a name found nowhere
    is left out (the gates' signature check names it).
    """
    logged = {c.removeprefix("input."): c for c in frame.columns if c.startswith("input.")}
    looked_up: dict[str, list[str]] = {}
    for key in frame.columns:
        if key.startswith("feature.") and ":" in key and frame[key].notna().any():
            looked_up.setdefault(key.partition(":")[2], []).append(key)
    out: dict[str, pd.Series] = {}
    for name in sorted(logged) if names is None else names:
        found = looked_up.get(name, [])
        column = frame[logged[name]] if name in logged else None
        if column is not None and (not found or column.notna().all()):
            out[name] = column
            continue
        if len(found) > 1:
            raise InvalidInputError(
                f"Expected one logged feature named {name!r} for the model's input, got "
                f"{', '.join(found)}: the feature service decides which one the model takes",
                loc=name,
            )
        if found:
            feature = frame[found[0]]
            out[name] = feature if column is None else column.combine_first(feature)
    return pd.DataFrame(out, index=frame.index)


def window_frame(
    settings: Settings,
    registry: ModelRegistry,
    candidate: ModelVersion,
    champion: ModelVersion | None,
    label: str,
    days: float,
    *,
    now: datetime | None = None,
    loc: str = "--window",
) -> pd.DataFrame:
    """The labelled rows the prediction log holds for the ``days`` days before ``now``.

    The rows are those the alias's holder served (``champion``: the traffic the
    candidate would take over), or the candidate's own when no version holds the alias
    (a canary or shadow); labels come from the feedback joined as monitoring joins them.
    The columns are the inputs of both models (see :func:`logged_inputs`: a model
    served by entity key gets its looked-up features; every logged input when either
    has no signature) and ``label``. ``loc`` names the setting
    that asked for the window, in the error raised when it holds no labelled row.
    """
    served = champion or candidate
    manifest = registry.manifest(ModelRef(served.name, version=served.version))
    wanted = registry.manifest(ModelRef(candidate.name, version=candidate.version))
    # the candidate's inputs, and the champion's it does not take (both models score them)
    inputs = None
    if wanted.signature is not None and manifest.signature is not None:
        inputs = list(dict.fromkeys([*wanted.signature.names, *manifest.signature.names]))
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    log_dir = settings.project_dir / settings.serving.log_dir
    routes = ("primary", "canary") if champion is not None else ("primary", "canary", "shadow")
    table: pa.Table | None = None
    shipped = shipped_log(settings)  # every replica's log, in a fleet
    if Path(log_dir).is_dir() or shipped is not None:
        table = read_log(
            log_dir,
            served.name,
            served.version,
            inputs=inputs,
            outputs=[],
            since=since,
            until=now,  # the agent's clock: a replay or a backfill never sees later rows
            labels=True,
            features=True,
            routes=routes,
            shipped=shipped,
        )
    if table is None or table.num_rows == 0 or table.column("label").null_count == len(table):
        raise InvalidInputError(
            f"Expected labelled rows in the prediction log of {served.ref} over the last "
            f"{days:g} day(s), got none: send labels to POST /feedback, or pass --eval FILE",
            loc=loc,
        )
    frame: pd.DataFrame = table.to_pandas()
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    out = logged_inputs(frame, inputs)
    out[label] = labels_as(frame["label"].tolist(), manifest.task, manifest.classes)
    return out
