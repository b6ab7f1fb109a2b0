"""The Evidently side of the monitoring benchmark (runs in Evidently's own venv).

Evidently 0.7 with its defaults, as a user gets them: ``pd.read_parquet`` of both files,
``Dataset.from_pandas(frame, data_definition=DataDefinition())`` (column types
inferred: it finds the 20 numeric and 5 categorical columns) and
``Report([DataDriftPreset()]).run(current, reference)``. A column is flagged when its
``ValueDrift`` result crosses the method's threshold the way Evidently's stattests
decide (p-value tests: below; distances: at or above); "dataset drift" is
``DriftedColumnsCount``'s share reaching the preset's ``drift_share`` (0.5).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clock, emit, read_pandas_frames, side_args


def _flags(snapshot: Any) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Flagged columns, each column's (method, threshold, score) and the drift count."""
    flagged: list[str] = []
    scores: dict[str, Any] = {}
    count: dict[str, Any] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            count = {**metric["value"], "drift_share": config.get("drift_share", 0.5)}
        elif kind.endswith("ValueDrift"):
            column, method = config["column"], str(config.get("method", ""))
            threshold, score = float(config["threshold"]), float(metric["value"])
            drifted = score < threshold if "p_value" in method else score >= threshold
            scores[column] = {"method": method, "threshold": threshold, "score": score}
            if drifted:
                flagged.append(column)
    return flagged, scores, count


def main() -> None:
    args = side_args("evidently")
    warnings.filterwarnings("ignore")
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    clock = Clock()
    reference_frame, current_frame, input_mb = read_pandas_frames(clock, args)

    def compare() -> Any:
        reference = Dataset.from_pandas(reference_frame, data_definition=DataDefinition())
        current = Dataset.from_pandas(current_frame, data_definition=DataDefinition())
        return Report([DataDriftPreset()]).run(current, reference)

    snapshot = clock("compare", compare)
    flagged, scores, count = clock("results", lambda: _flags(snapshot))
    share = count.get("share")
    emit(
        {
            "available": True,
            "version": evidently.__version__,
            **clock.summary(),
            "input_mb": input_mb,
            "input_kind": "pandas DataFrames",
            "flagged": flagged,
            "dataset_drift": None if share is None else bool(share >= count["drift_share"]),
            "drifted_count": count.get("count"),
            "method": sorted({s["method"] for s in scores.values()}),
            "details": scores,
        }
    )


if __name__ == "__main__":
    main()
