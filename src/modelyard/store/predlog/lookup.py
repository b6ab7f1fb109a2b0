"""Finding the prediction records an id names: a record id, or a client's request id.

Feedback arrives with the id the client knows: the server's ``record_id`` (the
``X-Record-ID`` of the answer) or the client's own ``request_id``. Clients may reuse
their ids, so one id can name several records. ``find_records`` reads only the id
columns: the records still in segments (decoding the few fields it needs) and the
compacted Parquet files (projected, filtered by Arrow).

>>> import tempfile
>>> from modelyard.store.predlog import PredictionLog, PredictionRecord
>>> root = tempfile.mkdtemp()
>>> with PredictionLog(root) as log:
...     for rid in ("a", "b"):
...         log.append_blocking(PredictionRecord(
...             record_id=rid, request_id="same", time_us=0, model="m", version=1,
...             rows=2, inputs={"x": [1, 2]}, outputs={"y": [0, 1]}, latency_us=1))
>>> found = find_records(root, ["same", "b", "nope"])
>>> sorted(r.record_id for r in found["same"]), [r.rows for r in found["b"]], found["nope"]
(['a', 'b'], [2], [])
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelyard.store.predlog.layout import PREDICTIONS, SEGMENTS
from modelyard.store.predlog.segments import list_segments, read_segment
from modelyard.store.predlog.shipping import ShippedLog

__all__ = ["RecentRecords", "RecordRef", "find_records"]


class RecordRef(msgspec.Struct, frozen=True, gc=False):
    """One prediction record an id named: which model answered, with how many rows.

    Never tracked by Python's cycle collector (``gc=False``: it holds only text and
    integers, so it can be in no cycle): a server keeps the last 65,536 of them
    (:class:`RecentRecords`), and as tracked objects they made every full collection
    walk them, a ~17 ms stall of the event loop several times a second under load.
    """

    record_id: str
    request_id: str
    model: str
    version: int
    rows: int
    route: str


class RecentRecords:
    """The records one log appended lately, by record id and by request id (bounded).

    A record id is made by one server worker, so when it is among the records this log
    appended, every record the id names is here too (the record, and a shadow's copy
    that took it as its request id): a lookup needs no scan. Client ids may name records
    of other workers and earlier runs, so they are always looked up on disk.
    """

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self._order: deque[RecordRef] = deque()
        self._by_record: dict[str, RecordRef] = {}
        #: a request id's one record itself (untracked, see RecordRef), or a list of the
        #: records of an id a client reused (the rare case)
        self._by_request: dict[str, RecordRef | list[RecordRef]] = {}
        self._lock = threading.Lock()

    def add(self, ref: RecordRef) -> None:
        with self._lock:
            self._order.append(ref)
            self._by_record[ref.record_id] = ref
            held = self._by_request.get(ref.request_id)
            if held is None:
                self._by_request[ref.request_id] = ref
            elif isinstance(held, list):
                held.append(ref)
            else:
                self._by_request[ref.request_id] = [held, ref]
            while len(self._order) > self.size:
                old = self._order.popleft()
                if self._by_record.get(old.record_id) is old:
                    del self._by_record[old.record_id]
                self._forget_request(old)

    def _forget_request(self, old: RecordRef) -> None:
        held = self._by_request.get(old.request_id)
        if held is old:
            del self._by_request[old.request_id]
        elif isinstance(held, list):
            for i, ref in enumerate(held):
                if ref is old:
                    del held[i]
                    break
            if len(held) == 1:
                self._by_request[old.request_id] = held[0]

    def _with_request(self, request_id: str) -> list[RecordRef]:
        held = self._by_request.get(request_id)
        if held is None:
            return []
        return list(held) if isinstance(held, list) else [held]

    def complete(self, ids: Iterable[str]) -> dict[str, list[RecordRef]]:
        """The ids that are record ids of this log, each with every record it names."""
        out: dict[str, list[RecordRef]] = {}
        with self._lock:
            for name in ids:
                ref = self._by_record.get(name)
                if ref is not None:
                    extra = [r for r in self._with_request(name) if r is not ref]
                    out[name] = [ref, *extra]
        return out


class _Head(msgspec.Struct):
    """The fields of a PredictionRecord that name it (the rest is skipped when decoding)."""

    request_id: str
    model: str
    version: int
    rows: int
    route: str = "primary"
    record_id: str = ""


_head = msgspec.msgpack.Decoder(_Head)
_COLUMNS = ["record_id", "request_id", "row", "model", "version", "route"]


def _from_segments(root: Path, wanted: set[str], found: dict[str, RecordRef]) -> None:
    for path in list_segments(root / SEGMENTS):
        scan = read_segment(path)
        for payload in scan.frames if scan is not None else ():
            try:
                head = _head.decode(payload)
            except msgspec.DecodeError:
                continue  # the full readers report an unreadable record
            key = head.record_id or head.request_id
            if key in wanted or head.request_id in wanted:
                found[f"{key}\0{head.route}"] = RecordRef(
                    key, head.request_id, head.model, head.version, head.rows, head.route
                )


def _from_parquet(root: Path, wanted: set[str], found: dict[str, RecordRef]) -> None:
    seen: set[Path] = set()
    while True:  # a file merged away meanwhile: its rows are in a file listed again
        fresh = [p for p in sorted((root / PREDICTIONS).rglob("*.parquet")) if p not in seen]
        seen.update(fresh)
        if not _scan_files(fresh, wanted, found):
            return


def _scan_files(paths: list[Path], wanted: set[str], found: dict[str, RecordRef]) -> bool:
    """Add the records of ``paths`` that ``wanted`` names; whether a file vanished."""
    vanished = False
    for path in paths:
        if path.name.startswith("."):
            continue
        try:
            names = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in _COLUMNS if c in names])
        except FileNotFoundError:
            vanished = True
            continue
        _add_found(table, wanted, found)
    return vanished


def _from_shipped(shipped: ShippedLog, wanted: set[str], found: dict[str, RecordRef]) -> None:
    for path in shipped.files(PREDICTIONS):
        table = shipped.read(path, columns=_COLUMNS)
        if table is not None:
            _add_found(table, wanted, found)


def _add_found(table: pa.Table, wanted: set[str], found: dict[str, RecordRef]) -> None:
    """Add the records of one file's id columns that ``wanted`` names."""
    ids = pa.array(sorted(wanted), pa.string())
    names = set(table.column_names)
    if table.num_rows:
        requests = table.column("request_id")
        keys = table.column("record_id") if "record_id" in names else requests
        keys = pc.coalesce(keys, requests)
        mask = pc.or_(pc.is_in(keys, ids), pc.is_in(requests, ids))
        if not pc.any(mask).as_py():
            return
        table = table.filter(mask).append_column("key", keys.filter(mask))
        rows = table.group_by(["key", "route"]).aggregate(
            [("request_id", "min"), ("model", "min"), ("version", "min"), ("row", "max")]
        )
        for item in rows.to_pylist():
            found[f"{item['key']}\0{item['route']}"] = RecordRef(
                item["key"],
                item["request_id_min"],
                item["model_min"],
                int(item["version_min"]),
                int(item["row_max"]) + 1,
                item["route"],
            )


def find_records(
    root: str | os.PathLike[str], ids: Iterable[str], shipped: ShippedLog | None = None
) -> dict[str, list[RecordRef]]:
    """For each of ``ids``, the records whose ``record_id`` or ``request_id`` it is.

    With ``shipped``, every replica's shipped records too (read after the local ones).
    """
    wanted = set(ids)
    base = Path(root)
    found: dict[str, RecordRef] = {}
    if wanted:
        # segments first, Parquet after: a segment compacted meanwhile is seen at least once
        _from_segments(base, wanted, found)
        _from_parquet(base, wanted, found)
        # other replicas' records: an id that is the record id of a record found here
        # names no other record (record ids are unique), any other id may
        settled = {ref.record_id for ref in found.values()} & wanted
        if shipped is not None and wanted - settled:
            _from_shipped(shipped, wanted - settled, found)
    out: dict[str, list[RecordRef]] = {i: [] for i in wanted}
    for ref in found.values():
        for name in {ref.record_id, ref.request_id} & wanted:
            out[name].append(ref)
    return out
