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

__all__ = ["labels_as", "window_frame"]


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


def window_frame(
    settings: Settings,
    registry: ModelRegistry,
    candidate: ModelVersion,
    champion: ModelVersion | None,
    label: str,
    days: int,
    *,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The labelled rows the prediction log holds for the last ``days`` days.

    The rows are those the alias's holder served (``champion``: the traffic the
    candidate would take over), or the candidate's own when no version holds the alias
    (a canary or shadow); labels come from the feedback joined as monitoring joins them.
    """
    served = champion or candidate
    manifest = registry.manifest(ModelRef(served.name, version=served.version))
    wanted = registry.manifest(ModelRef(candidate.name, version=candidate.version))
    inputs = None if wanted.signature is None else [c.name for c in wanted.signature.columns]
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    log_dir = settings.project_dir / settings.serving.log_dir
    routes = ("primary", "canary") if champion is not None else ("primary", "canary", "shadow")
    table: pa.Table | None = None
    if Path(log_dir).is_dir():
        table = read_log(
            log_dir,
            served.name,
            served.version,
            inputs=inputs,
            outputs=[],
            since=since,
            labels=True,
            routes=routes,
        )
    if table is None or table.num_rows == 0 or table.column("label").null_count == len(table):
        raise InvalidInputError(
            f"Expected labelled rows in the prediction log of {served.ref} over the last "
            f"{days} day(s), got none: send labels to POST /feedback, or pass --eval FILE",
            loc="--window",
        )
    frame: pd.DataFrame = table.to_pandas()
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    columns = {c: c.removeprefix("input.") for c in frame.columns if c.startswith("input.")}
    out: pd.DataFrame = frame[list(columns)].rename(columns=columns)
    out[label] = labels_as(frame["label"].tolist(), manifest.task, manifest.classes)
    return out
