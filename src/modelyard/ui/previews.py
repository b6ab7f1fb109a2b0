"""Previews of a run's artifacts: text, JSON, the head of a CSV or Parquet table, images
and HTML (shown in a sandboxed iframe from the raw artifact's URL).

Only what is small enough is read (``MAX_PREVIEW_BYTES``); a preview that fails to
parse says why instead of failing the page.

>>> kind_of("report/index.html"), kind_of("data.parquet"), kind_of("model.bin")
('html', 'parquet', None)
>>> preview_bytes("a.json", b'{"b": 1}').text
'{\\n  "b": 1\\n}'
"""

from __future__ import annotations

import io
import json
import mimetypes
import posixpath
from dataclasses import dataclass, field

__all__ = [
    "HEAD_ROWS",
    "MAX_PREVIEW_BYTES",
    "Preview",
    "content_type_of",
    "kind_of",
    "preview_bytes",
]

#: artifacts larger than this are linked, not previewed
MAX_PREVIEW_BYTES = 2 * 2**20
#: rows of a table's head
HEAD_ROWS = 20
#: characters of text shown
MAX_TEXT_CHARS = 100_000

_KINDS = {
    ".txt": "text",
    ".log": "text",
    ".md": "text",
    ".py": "text",
    ".yaml": "text",
    ".yml": "text",
    ".toml": "text",
    ".cfg": "text",
    ".ini": "text",
    ".sql": "text",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".gif": "image",
    ".webp": "image",
    ".svg": "image",
    ".html": "html",
    ".htm": "html",
}


def kind_of(path: str) -> str | None:
    """``text``, ``json``, ``csv``, ``parquet``, ``image``, ``html``, or None (no preview)."""
    return _KINDS.get(posixpath.splitext(path.lower())[1])


def content_type_of(path: str) -> str:
    """The Content-Type a raw artifact is served with (text as UTF-8)."""
    kind = kind_of(path)
    if kind in ("text", "csv"):
        return "text/plain; charset=utf-8"
    if kind == "json":
        return "application/json"
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


@dataclass
class Preview:
    kind: str
    text: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    total_rows: int | None = None
    error: str | None = None


def _text(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "\n..."


def _table_cells(table: object) -> tuple[list[str], list[list[str]]]:
    columns = [str(c) for c in table.column_names]  # type: ignore[attr-defined]
    data = table.to_pylist()  # type: ignore[attr-defined]
    return columns, [["" if row[c] is None else str(row[c]) for c in columns] for row in data]


def preview_bytes(path: str, data: bytes) -> Preview:
    """The preview of the artifact at ``path`` holding ``data``."""
    # pyarrow (and numpy under it) is imported on the first table preview, not with the
    # runs pages: it is a quarter of a second of ``modelyard ui``'s start-up otherwise
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    kind = kind_of(path) or "none"
    try:
        if kind == "text":
            return Preview(kind, text=_text(data))
        if kind == "json":
            return Preview(kind, text=_text(json.dumps(json.loads(data), indent=2).encode()))
        if kind == "csv":
            options = pa_csv.ParseOptions(delimiter="\t" if path.lower().endswith(".tsv") else ",")
            table = pa_csv.read_csv(io.BytesIO(data), parse_options=options)
            columns, rows = _table_cells(table.slice(0, HEAD_ROWS))
            return Preview(kind, columns=columns, rows=rows, total_rows=table.num_rows)
        if kind == "parquet":
            handle = pq.ParquetFile(io.BytesIO(data))
            head = next(handle.iter_batches(batch_size=HEAD_ROWS), None)
            columns = [str(n) for n in handle.schema_arrow.names]
            rows = [] if head is None else _table_cells(head)[1]
            return Preview(kind, columns=columns, rows=rows, total_rows=handle.metadata.num_rows)
    except Exception as exc:  # a preview never fails the page: it says why instead
        return Preview(kind, error=f"Cannot preview {path}: {str(exc).splitlines()[0]}")
    return Preview(kind)
