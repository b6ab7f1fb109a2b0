"""Where the prediction log keeps its files under its root folder.

::

    <root>/segments/<time>-<pid>-<random>.seg           prediction records, framed
    <root>/feedback-segments/<time>-<pid>-<random>.seg  feedback records, framed
    <root>/predictions/model=<m>/version=<v>/day=<YYYY-MM-DD>/<segment stem>.parquet
    <root>/feedback/day=<YYYY-MM-DD>/<segment stem>.parquet
    <root>/unmatched-feedback-segments/<time>-<pid>-<random>.seg  labels for unknown ids
    <root>/unmatched-feedback/day=<YYYY-MM-DD>/<segment stem>.parquet
    <root>/error-segments/<time>-<pid>-<random>.seg     failed requests, framed
    <root>/errors/day=<YYYY-MM-DD>/<segment stem>.parquet

Model names are percent-encoded in the ``model=`` folder (``a/b`` -> ``a%2Fb``), so any
name is a safe path part; the Parquet files hold the name itself in their ``model`` column.

>>> encode_part("fraud/eu v2")
'fraud%2Feu%20v2'
>>> utc_day(86_400_000_000 - 1), utc_day(86_400_000_000)
('1970-01-01', '1970-01-02')
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "ERRORS",
    "ERROR_SEGMENTS",
    "FEEDBACK",
    "FEEDBACK_SEGMENTS",
    "PREDICTIONS",
    "SEGMENTS",
    "UNMATCHED",
    "UNMATCHED_SEGMENTS",
    "encode_part",
    "feedback_dir",
    "new_segment_name",
    "prediction_dir",
    "utc_day",
]

SEGMENTS = "segments"
FEEDBACK_SEGMENTS = "feedback-segments"
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
#: labels sent for ids no prediction record had: kept, never joined
UNMATCHED_SEGMENTS = "unmatched-feedback-segments"
UNMATCHED = "unmatched-feedback"
#: prediction requests answered with a 4xx/5xx status (``ErrorRecord``)
ERROR_SEGMENTS = "error-segments"
ERRORS = "errors"

#: a folder name stays well below the 255-byte limit of common filesystems
_MAX_PART = 180
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


def encode_part(value: str) -> str:
    """``value`` as one safe path part: percent-encoded, long names shortened by a hash."""
    encoded = quote(value, safe="")
    if len(encoded) <= _MAX_PART:
        return encoded
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{encoded[:_MAX_PART]}~{digest}"


def utc_day(time_us: int) -> str:
    """The UTC day of a time in microseconds since the epoch, as ``YYYY-MM-DD``."""
    return dt.date.fromordinal(_EPOCH_ORDINAL + time_us // _DAY_US).isoformat()


def new_segment_name(now_us: int) -> str:
    """A fresh segment file name: sortable by creation time, unique across processes."""
    stamp = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=now_us)).strftime(
        "%Y%m%dT%H%M%S%fZ"
    )
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.seg"


def prediction_dir(root: Path, model: str, version: int, day: str) -> Path:
    """The partition folder of one model version's predictions on one UTC day."""
    return root / PREDICTIONS / f"model={encode_part(model)}" / f"version={version}" / f"day={day}"


def feedback_dir(root: Path, day: str, folder: str = FEEDBACK) -> Path:
    """The partition folder of the feedback received on one UTC day."""
    return root / folder / f"day={day}"
