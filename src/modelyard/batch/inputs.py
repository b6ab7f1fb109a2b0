"""The files a batch scores: found from a path or a glob, described, read in bounded batches.

Parquet and CSV are read as streams of Arrow record batches of at most ``batch_rows``
rows, so memory stays bounded whatever the file size. CSV columns are read as text
(empty fields as null) and converted column by column against the signature, so one bad
value rejects one row instead of failing the read; CSV columns outside the signature are
carried as text.
"""

from __future__ import annotations

import csv
import glob
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from modelyard.errors import InvalidInputError
from modelyard.models.signature import Signature

__all__ = [
    "InputFile",
    "csv_convert_options",
    "describe_inputs",
    "find_inputs",
    "iter_batches",
    "sha256_of",
]

FileKind = Literal["parquet", "csv"]
_KINDS: dict[str, FileKind] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
#: bytes of a CSV file parsed at a time (the stream then cuts them to ``batch_rows``)
_CSV_BLOCK = 4 * 2**20


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, its format, its columns in file order."""

    path: Path
    kind: FileKind
    columns: tuple[str, ...]
    #: Arrow types of the columns (Parquet's own; text for every CSV column)
    schema: pa.Schema


def _kind_of(path: Path) -> FileKind:
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"Expected a .parquet or .csv file, got {path.name!r}", loc="--input"
        )
    return kind


def find_inputs(pattern: str | Path) -> list[Path]:
    """The files ``pattern`` names: one file, a folder's Parquet/CSV files, or a glob.

    Sorted by path, so a run reads them in the same order every time.
    """
    text = str(pattern)
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _KINDS)
        if not found:
            raise InvalidInputError(
                f"Expected Parquet or CSV files in the folder {text!r}, got none", loc="--input"
            )
        return found
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise InvalidInputError(f"Expected files matching {text!r}, got none", loc="--input")
        return found
    raise InvalidInputError(
        f"Expected an existing file, folder or glob, got {text!r}", loc="--input"
    )


def _csv_header(path: Path) -> tuple[str, ...]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(
            f"Cannot read the CSV header of {path}: {exc}", loc="--input"
        ) from exc
    if not header:
        raise InvalidInputError(
            f"Expected a header row in {path}, got an empty file", loc="--input"
        )
    return tuple(header)


def _describe(path: Path) -> InputFile:
    kind = _kind_of(path)
    if kind == "csv":
        columns = _csv_header(path)
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise InvalidInputError(
                f"Expected unique column names in {path}, got {dupes[0]!r} twice", loc="--input"
            )
        schema = pa.schema([(c, pa.string()) for c in columns])
        return InputFile(path, kind, columns, schema)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"Cannot read {path} as Parquet: {exc}", loc="--input") from exc
    return InputFile(path, kind, tuple(schema.names), schema)


def describe_inputs(
    paths: Sequence[Path], signature: Signature, keep: Sequence[str] | None
) -> tuple[list[InputFile], list[str]]:
    """Each file described and checked, and the key columns carried to the output.

    Every file must hold every signature column and the same key columns (``keep``, or
    by default the first file's columns that are not in the signature); anything else
    is bad input, named with the file and the column.
    """
    files = [_describe(p) for p in paths]
    wanted = set(signature.names)
    first = files[0]
    keys = list(keep) if keep else [c for c in first.columns if c not in wanted]
    for item in files:
        have = set(item.columns)
        for name in signature.names:
            if name not in have:
                spec = signature.column(name)
                raise InvalidInputError(
                    f"Expected a column {name!r} ({spec.dtype}) in {item.path}, got columns "
                    f"{', '.join(item.columns)}",
                    loc=name,
                )
        missing = [k for k in keys if k not in have]
        if missing:
            where = "--keep" if keep else "--input"
            raise InvalidInputError(
                f"Expected the key column {missing[0]!r} in {item.path} (as in {first.path}), "
                "got none",
                loc=where,
            )
        if not keep:
            extra = [c for c in item.columns if c not in wanted and c not in keys]
            if extra:
                raise InvalidInputError(
                    f"Expected the columns of {first.path} in {item.path}, got an extra "
                    f"column {extra[0]!r}; pass --keep to choose the carried columns",
                    loc="--input",
                )
    return files, keys


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(2**20):
            digest.update(piece)
    return digest.hexdigest()


def csv_convert_options(columns: Sequence[str]) -> pacsv.ConvertOptions:
    """Every column read as text, empty fields as null: conversion happens per row."""
    return pacsv.ConvertOptions(
        column_types={c: pa.string() for c in columns}, strings_can_be_null=True
    )


def _cut(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of exactly ``rows`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            piece = batch.slice(offset, rows - count)
            offset += piece.num_rows
            pending.append(piece)
            count += piece.num_rows
            if count == rows:
                yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def iter_batches(item: InputFile, columns: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]:
    """The file's ``columns`` as record batches of ``rows`` rows, streamed."""
    try:
        if item.kind == "parquet":
            parquet = pq.ParquetFile(item.path)
            yield from _cut(parquet.iter_batches(batch_size=rows, columns=list(columns)), rows)
            return
        reader = pacsv.open_csv(
            item.path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in item.columns},
                strings_can_be_null=True,
                include_columns=list(columns),
            ),
        )
        yield from _cut(iter(reader), rows)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"Cannot read {item.path}: {exc}", loc="--input") from exc
