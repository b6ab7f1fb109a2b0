"""Scored tables split into ``predictions.parquet`` and ``rejects.parquet``, in input order.

Both files are written under temporary names and renamed when the run has finished, so a
run that failed half way never leaves files that look complete. With a prediction log,
each scored piece of at most ``LOG_ROWS`` rows becomes one :class:`PredictionRecord`
with route ``batch`` (see :mod:`modelyard.store.predlog`), and the predictions file
carries its ``record_id`` and ``row`` so labels can be sent for it later.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelyard.batch.scoring import INPUT_PREFIX, REJECT_COLUMN, REJECT_REASON, REJECT_VALUES
from modelyard.errors import InvalidInputError
from modelyard.store.predlog import PredictionLog, PredictionRecord

__all__ = ["LOG_ROWS", "PREDICTIONS", "REJECTS", "BatchWriter", "FileCount"]

PREDICTIONS = "predictions.parquet"
REJECTS = "rejects.parquet"
#: rows per prediction-log record
LOG_ROWS = 1000
_REJECTS_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("row", pa.int64()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("values", pa.string()),
    ]
)
_PRIVATE = (REJECT_COLUMN, REJECT_REASON, REJECT_VALUES)


@dataclass
class FileCount:
    """Rows seen, scored and rejected of one input file."""

    rows: int = 0
    scored: int = 0
    rejected: int = 0


@dataclass
class BatchWriter:
    """Writes scored tables as they come; one per run, used from one thread."""

    out: Path
    model: str
    version: int
    run_id: str
    #: the model's output columns (a logged record's outputs)
    outputs: list[str]
    log: PredictionLog | None = None
    counts: dict[str, FileCount] = field(default_factory=dict)
    logged_records: int = 0
    _predictions: pq.ParquetWriter | None = None
    _rejects: pq.ParquetWriter | None = None
    _schema: pa.Schema | None = None
    _sequence: int = 0

    def _tmp(self, name: str) -> Path:
        return self.out / f".{name}.{self.run_id}.tmp"

    def _conform(self, table: pa.Table, source: str) -> pa.Table:
        if self._schema is None:
            self._schema = table.schema
            self._predictions = pq.ParquetWriter(self._tmp(PREDICTIONS), table.schema)
            return table
        if table.schema.equals(self._schema):
            return table
        try:
            return table.select(self._schema.names).cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
            raise InvalidInputError(
                f"Expected the columns of {source} to have the types of the first file's "
                f"({self._schema}), got {table.schema}: {exc}",
                loc="--input",
            ) from exc

    def write(self, source: str, table: pa.Table) -> None:
        """Add the scored rows of ``table``, read from the file ``source``, in order."""
        count = self.counts.setdefault(source, FileCount())
        first_row = count.rows
        rows = table.num_rows
        rejected_mask = table.column(REJECT_REASON).is_valid()
        rejected = int(pc.sum(rejected_mask).as_py() or 0)
        count.rows += rows
        count.rejected += rejected
        count.scored += rows - rejected
        if rejected:
            self._write_rejects(source, first_row, table, rejected_mask)
        scored = table.filter(pc.invert(rejected_mask)) if rejected else table
        inputs = [c for c in scored.column_names if c.startswith(INPUT_PREFIX)]
        if self.log is not None and scored.num_rows:
            scored = self._log(scored, inputs)
        scored = scored.drop_columns([*_PRIVATE, *inputs])
        if self._schema is None and scored.num_rows == 0:
            return  # the schema comes from the first table with a scored row
        self._write_predictions(source, scored)

    def _write_predictions(self, source: str, scored: pa.Table) -> None:
        scored = self._conform(scored, source)
        assert self._predictions is not None
        if scored.num_rows:
            self._predictions.write_table(scored)

    def _write_rejects(
        self, source: str, first_row: int, table: pa.Table, mask: pa.ChunkedArray
    ) -> None:
        index = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
        picked = table.take(pa.array(index))
        rejects = pa.table(
            {
                "file": pa.array([source] * len(index), type=pa.string()),
                "row": pa.array(index + first_row, type=pa.int64()),
                "column": picked.column(REJECT_COLUMN),
                "reason": picked.column(REJECT_REASON),
                "values": picked.column(REJECT_VALUES),
            },
            schema=_REJECTS_SCHEMA,
        )
        if self._rejects is None:
            self._rejects = pq.ParquetWriter(self._tmp(REJECTS), _REJECTS_SCHEMA)
        self._rejects.write_table(rejects)

    def _log(self, scored: pa.Table, inputs: list[str]) -> pa.Table:
        """One prediction-log record per ``LOG_ROWS`` scored rows; their ids added."""
        assert self.log is not None
        outputs = [c for c in self.outputs if c in scored.column_names]
        record_ids: list[str] = []
        rows_in_record: list[int] = []
        now_us = time.time_ns() // 1000
        for start in range(0, scored.num_rows, LOG_ROWS):
            piece = scored.slice(start, LOG_ROWS)
            self._sequence += 1
            record_id = f"batch-{self.run_id}-{self._sequence}"
            record = PredictionRecord(
                request_id=record_id,
                record_id=record_id,
                time_us=now_us,
                model=self.model,
                version=self.version,
                rows=piece.num_rows,
                inputs={c[len(INPUT_PREFIX) :]: piece.column(c).to_pylist() for c in inputs},
                outputs={c: piece.column(c).to_pylist() for c in outputs},
                latency_us=0,
                route="batch",
            )
            self.log.append_blocking(record)
            self.logged_records += 1
            record_ids += [record_id] * piece.num_rows
            rows_in_record += list(range(piece.num_rows))
        return scored.append_column(
            "record_id", pa.array(record_ids, type=pa.string())
        ).append_column("row", pa.array(rows_in_record, type=pa.int64()))

    def finish(self, empty: pa.Table) -> list[str]:
        """Close both files and move them in place; the names of the files written."""
        if self._predictions is None:
            # no scored row at all: an empty file with the columns a scored row would have
            schema = empty.drop_columns(list(_PRIVATE)).schema
            if self.log is not None:
                schema = schema.append(pa.field("record_id", pa.string()))
                schema = schema.append(pa.field("row", pa.int64()))
            self._predictions = pq.ParquetWriter(self._tmp(PREDICTIONS), schema)
        self._predictions.close()
        if self._rejects is None:
            self._rejects = pq.ParquetWriter(self._tmp(REJECTS), _REJECTS_SCHEMA)
        self._rejects.close()
        os.replace(self._tmp(PREDICTIONS), self.out / PREDICTIONS)
        os.replace(self._tmp(REJECTS), self.out / REJECTS)
        return [PREDICTIONS, REJECTS]

    def abort(self) -> None:
        """Close and remove the temporary files of a failed run."""
        for writer in (self._predictions, self._rejects):
            if writer is not None:
                with contextlib.suppress(OSError, pa.ArrowException):  # best effort
                    writer.close()
        for name in (PREDICTIONS, REJECTS):
            self._tmp(name).unlink(missing_ok=True)
