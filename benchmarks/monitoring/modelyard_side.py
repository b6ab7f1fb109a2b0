"""The modelyard side of the monitoring benchmark (runs in the project's venv).

Passes the two Parquet files by path: ``Reference.from_data(path)`` and
``reference.compare(path, settings=DriftSettings())`` read them a column at a time, so
neither frame is ever in memory whole; default settings.
Prints one results line (``common.MARKER``); when ``modelyard.monitoring`` cannot be
imported or the comparison fails, the line says ``"available": false`` and why.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clock, emit, side_args


def _dataset_drift(report: Any, as_dict: dict[str, Any]) -> bool | None:
    """The report's dataset-level verdict, where it gives one."""
    for name in ("dataset_drift", "drift_detected", "drifted"):
        value = getattr(report, name, None)
        if isinstance(value, bool):
            return value
        value = as_dict.get(name)
        if isinstance(value, bool):
            return value
    return None


def _arrow_bytes(pq: Any, path: str) -> int:
    """The file's in-memory (Arrow) size, read a column at a time, before the clock runs."""
    handle = pq.ParquetFile(path)
    return sum(int(handle.read(columns=[name]).nbytes) for name in handle.schema_arrow.names)


def main() -> None:
    args = side_args("modelyard")
    try:
        import pyarrow.parquet as pq

        from modelyard.monitoring import DriftSettings, Reference
    except Exception as exc:  # the drift engine may not exist yet
        emit({"available": False, "stage": "import", "why": f"{type(exc).__name__}: {exc}"})
        return
    clock = Clock()
    try:
        # the files go in as paths: the engine reads one column at a time, so the frames
        # never sit in memory whole (the Parquet decoding is counted in its CPU time)
        input_mb = (_arrow_bytes(pq, args.reference) + _arrow_bytes(pq, args.current)) / 2**20
        settings = DriftSettings()
        reference = clock("profile", lambda: Reference.from_data(args.reference))
        report = clock("compare", lambda: reference.compare(args.current, settings=settings))
        flagged = [str(c) for c in report.drifted_columns]
        as_dict = report.to_dict()
    except Exception as exc:
        last = traceback.format_exc().strip().splitlines()[-3:]
        emit({"available": False, "why": f"{type(exc).__name__}: {exc}", "trace": last})
        return
    details = json.dumps(as_dict, default=str)
    emit(
        {
            "available": True,
            "version": importlib.metadata.version("modelyard"),
            **clock.summary(),
            "input_mb": input_mb,
            "input_kind": "Parquet paths, read a column at a time",
            "flagged": flagged,
            "dataset_drift": _dataset_drift(report, as_dict),
            "prediction_drift": bool(getattr(report, "prediction_drift", False)),
            "method": "DriftSettings() defaults",
            "details": as_dict if len(details) < 200_000 else None,
        }
    )


if __name__ == "__main__":
    main()
