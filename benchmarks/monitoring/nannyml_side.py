"""The NannyML side of the monitoring benchmark (runs in NannyML's own venv).

``UnivariateDriftCalculator`` with its default methods (Jensen-Shannon for continuous
and categorical columns) and default thresholds (``StandardDeviationThreshold``: the
mean of the reference chunks' scores + 3 standard deviations). No timestamp column:
the reference is fitted with NannyML's default chunker (10 chunks, from which the
thresholds come), then the chunker is swapped for one chunk of the current frame's size,
so the whole current frame is one analysis chunk. A column is flagged when NannyML's
``alert`` is true for it; NannyML has no dataset-level verdict (reported as null).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CATEGORICAL, COLUMNS, Clock, emit, read_pandas_frames, side_args

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")


def _flags(result: Any) -> tuple[list[str], dict[str, Any]]:
    frame = result.filter(period="analysis").to_df()
    flagged: list[str] = []
    scores: dict[str, Any] = {}
    for column in COLUMNS:
        for method in ("jensen_shannon",):
            if (column, method, "alert") not in frame.columns:
                continue
            alert = bool(frame[(column, method, "alert")].fillna(False).any())
            scores[column] = {
                "method": method,
                "score": float(frame[(column, method, "value")].iloc[-1]),
                "upper_threshold": frame[(column, method, "upper_threshold")].iloc[-1],
            }
            if alert:
                flagged.append(column)
    return flagged, scores


def main() -> None:
    args = side_args("nannyml")
    warnings.filterwarnings("ignore")
    import nannyml
    from nannyml.chunk import SizeBasedChunker

    clock = Clock()
    reference_frame, current_frame, input_mb = read_pandas_frames(clock, args)

    def compare() -> Any:
        calculator = nannyml.UnivariateDriftCalculator(
            column_names=COLUMNS, treat_as_categorical=list(CATEGORICAL)
        )
        calculator.fit(reference_frame)
        calculator.chunker = SizeBasedChunker(chunk_size=len(current_frame), incomplete="keep")
        return calculator.calculate(current_frame)

    result = clock("compare", compare)
    flagged, scores = clock("results", lambda: _flags(result))
    emit(
        {
            "available": True,
            "version": nannyml.__version__,
            **clock.summary(),
            "input_mb": input_mb,
            "input_kind": "pandas DataFrames",
            "flagged": flagged,
            "dataset_drift": None,
            "method": ["jensen_shannon"],
            "details": scores,
        }
    )


if __name__ == "__main__":
    main()
