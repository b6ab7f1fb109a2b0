"""Data set digests over the whole content: a change to any cell changes the digest.

MLflow hashes only the first 10,000 rows; we hash every value, column by column
(columns in parallel threads, since ``hashlib`` releases the GIL), so 1M x 10
floats digest in about a tenth of a second. The same content with the same schema
gives the same digest however it is laid out (chunks, slices, bytes under nulls);
in float columns null and NaN are one missing value, as they are in pandas. Files
and folders are digested by their bytes (and, in a folder, their relative names).

>>> import pyarrow as pa
>>> a = digest_frame(pa.table({"x": [1.0, 2.0], "y": ["a", "b"]}))
>>> b = digest_frame(pa.table({"x": [1.0, 2.0], "y": ["a", "c"]}))
>>> a.num_rows, a.digest == b.digest
(2, False)
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInputError, NotFoundError

__all__ = ["DatasetDigest", "digest_frame", "digest_input", "digest_path"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetDigest:
    digest: str
    schema: list[dict[str, str]]
    num_rows: int
    source: str | None


_BINARY_LIKE = tuple(
    getattr(pa.types, name)
    for name in (
        "is_string",
        "is_binary",
        "is_large_string",
        "is_large_binary",
        "is_string_view",
        "is_binary_view",
        "is_fixed_size_binary",
    )
    if hasattr(pa.types, name)  # the view types arrived in pyarrow 16
)


def _is_fixed_width_number(kind: pa.DataType) -> bool:
    """Numbers, dates, times, timestamps, durations: values ``to_numpy`` gives as bytes."""
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or (pa.types.is_temporal(kind) and not pa.types.is_interval(kind))
    )


def _hash_column(column: pa.ChunkedArray) -> bytes:
    h = hashlib.sha256()
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_floating(kind) and array.null_count:
        # pandas cannot tell a null float from NaN (it turns NaN into null on the way to
        # arrow), so a frame and its numpy values digest alike only if both are NaN here
        array = pc.fill_null(array, pa.scalar(math.nan, kind))
    if array.null_count:
        h.update(b"nulls")
        h.update(np.packbits(array.is_null().to_numpy(zero_copy_only=False)).tobytes())
    if any(test(kind) for test in _BINARY_LIKE):
        large = array.cast(pa.large_binary())
        if large.null_count:  # a null's slot may hold stray bytes: they are not content
            large = pc.fill_null(large, pa.scalar(b"", pa.large_binary()))
        _, offsets_buf, data_buf = large.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
            large.offset : large.offset + len(large) + 1
        ]
        start, end = int(offsets[0]), int(offsets[-1])
        h.update((offsets - start).tobytes())
        if data_buf is not None:
            h.update(memoryview(data_buf)[start:end])
    elif pa.types.is_boolean(kind):
        h.update(np.packbits(array.fill_null(False).to_numpy(zero_copy_only=False)).tobytes())
    elif _is_fixed_width_number(kind):
        filled = pc.fill_null(array, pa.scalar(0, kind)) if array.null_count else array
        values = filled.to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f":
            values = np.where(np.isnan(values), np.nan, values)  # one NaN pattern
        if values.dtype == object:  # times of day come back as datetime.time
            h.update(repr(values.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    else:  # nulls, nested, decimals, intervals, ...: slower but exact
        h.update(repr(array.to_pylist()).encode())
    return h.digest()


def _to_table(data: Any) -> pa.Table:
    try:
        return _convert(data)
    except InvalidInputError:
        raise
    except (pa.ArrowException, TypeError, ValueError) as exc:  # what the converters raise
        raise InvalidInputError(
            f"Expected columns of one length and one type each, got a {type(data).__name__} "
            f"that does not convert to a table: {exc}",
            loc="log_input.data",
        ) from exc


def _convert(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        if type(data).__name__ == "Series":
            data = data.to_frame()
        return pa.Table.from_pandas(data, preserve_index=None)
    if module == "polars":
        return data.to_arrow()
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2:
            raise InvalidInputError(
                f"Expected a 1-d or 2-d array, got {data.ndim} dimensions", loc="log_input.data"
            )
        return pa.table({f"c{i}": data[:, i] for i in range(data.shape[1])})
    if isinstance(data, dict):
        return pa.table(data)
    raise InvalidInputError(
        "Expected a pandas/polars DataFrame, pyarrow Table, numpy array, dict of "
        f"columns or a path, got {type(data).__name__}",
        loc="log_input.data",
    )


def digest_frame(data: Any, *, source: str | None = None) -> DatasetDigest:
    """Digest a table-like object over every cell, its column names and types."""
    table = _to_table(data)
    schema = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    columns = table.columns
    workers = min(len(columns), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_hash_column, columns))
    h = hashlib.sha256()
    h.update(f"rows={table.num_rows}".encode())
    for field, part in zip(schema, parts, strict=True):
        h.update(f"|{field['name']}:{field['type']}|".encode())
        h.update(part)
    return DatasetDigest(h.hexdigest(), schema, table.num_rows, source)


def _file_rows_and_schema(path: Path) -> tuple[int, list[dict[str, str]]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        return meta.metadata.num_rows, [{"name": f.name, "type": str(f.type)} for f in schema]
    if path.suffix == ".csv":
        lines, last = 0, b"\n"
        with open(path, "rb") as handle:
            header = handle.readline().decode(errors="replace").strip()
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        if last != b"\n":
            lines += 1  # the last row has no line break after it
        return lines, [{"name": name, "type": "unknown"} for name in header.split(",") if name]
    return -1, []


def _hash_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def digest_path(path: str | os.PathLike[str]) -> DatasetDigest:
    """Digest a file or a folder of files by their bytes (and relative names)."""
    root = Path(path)
    if not root.exists():
        raise NotFoundError(f"No file or folder at {root}")
    if not root.is_dir():  # a single file's digest is its content alone, whatever its name
        rows, schema = _file_rows_and_schema(root)
        return DatasetDigest(_hash_file(root).hex(), schema, rows, str(root.resolve()))
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        # each file's name, length-prefixed, then its own digest: one file's bytes
        # never pass for the next file's name
        name = file.relative_to(root).as_posix().encode()
        h.update(b"%d:%s" % (len(name), name))
        h.update(_hash_file(file))
    return DatasetDigest(h.hexdigest(), [], -1, str(root.resolve()))


def digest_input(data: Any) -> DatasetDigest:
    """Digest whatever ``log_input`` was given: a frame-like object or a path."""
    if isinstance(data, str | os.PathLike):
        return digest_path(data)
    return digest_frame(data)
