"""The prediction log: every prediction the server makes, durable, queryable with DuckDB.

Each server worker opens one PredictionLog and appends a PredictionRecord per request
(and FeedbackRecords as labels arrive, an ErrorRecord per request answered with an
error status). Records go to framed segment files with group
commit; ``compact`` turns closed segments into Parquet partitioned by model, version and
UTC day; ``read_predictions``, ``read_feedback`` and ``connect`` (DuckDB) read both.

On disk, under the log's root::

    segments/<time>-<pid>-<random>.seg            predictions not yet compacted
    feedback-segments/<time>-<pid>-<random>.seg   feedback not yet compacted
    predictions/model=<m>/version=<v>/day=<YYYY-MM-DD>/<segment>.parquet
    feedback/day=<YYYY-MM-DD>/<segment>.parquet
    unmatched-feedback-segments/..., unmatched-feedback/day=<YYYY-MM-DD>/...
                                                  labels for ids no prediction had
    error-segments/..., errors/day=<YYYY-MM-DD>/...   requests answered with 4xx/5xx

See ``frames`` for the segment format, ``tables`` for the Parquet columns.
"""

from __future__ import annotations

from modelyard.store.predlog.compaction import CompactionResult, compact
from modelyard.store.predlog.lookup import RecentRecords, RecordRef, find_records
from modelyard.store.predlog.reader import (
    read_errors,
    read_feedback,
    read_predictions,
    read_unmatched_feedback,
)
from modelyard.store.predlog.records import (
    MAX_CLIENT_ID,
    ErrorRecord,
    FeedbackRecord,
    PredictionRecord,
)
from modelyard.store.predlog.views import connect
from modelyard.store.predlog.writer import LogStats, PredictionLog

__all__ = [
    "MAX_CLIENT_ID",
    "CompactionResult",
    "ErrorRecord",
    "FeedbackRecord",
    "LogStats",
    "PredictionLog",
    "PredictionRecord",
    "RecentRecords",
    "RecordRef",
    "compact",
    "connect",
    "find_records",
    "read_errors",
    "read_feedback",
    "read_predictions",
    "read_unmatched_feedback",
]
