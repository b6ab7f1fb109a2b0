"""The records a server remembers for feedback lookups are invisible to the cycle collector.

A serving worker keeps its last 65,536 records (``RecentRecords``). As tracked objects
they made each full collection walk them all, a ~17 ms stall of the event loop several
times a second under load (the serving benchmark's p99 at concurrency 32). Measured
here as what the collector tracks: adding thousands of records with unique request ids
adds almost no tracked object, and a request id a client reuses still finds every record.
"""

from __future__ import annotations

import gc

from modelyard.store.predlog import RecentRecords, RecordRef


def _ref(i: int, request_id: str | None = None) -> RecordRef:
    return RecordRef(f"rec-{i}", request_id or f"req-{i}", "model", 1, 1, "primary")


def test_unique_records_add_no_tracked_objects() -> None:
    recent = RecentRecords(size=5_000)
    for i in range(100):  # the containers exist
        recent.add(_ref(i))
    gc.collect()
    before = len(gc.get_objects())
    for i in range(100, 20_100):  # four times the bound: evictions too
        recent.add(_ref(i))
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert not gc.is_tracked(_ref(0))
    assert recent.complete(["rec-20099", "rec-99"]) == {"rec-20099": [_ref(20_099)]}


def test_a_reused_request_id_keeps_every_record_until_evicted() -> None:
    recent = RecentRecords(size=4)
    refs = [_ref(0, "shared"), _ref(1), _ref(2, "rec-1"), _ref(3, "shared")]
    for ref in refs:
        recent.add(ref)
    # a record id names its record and every record that took it as its request id
    assert recent.complete(["rec-1"]) == {"rec-1": [refs[1], refs[2]]}
    recent.add(_ref(4))  # evicts rec-0
    recent.add(_ref(5))  # evicts rec-1: rec-2 stays, but rec-1 is no longer a known record id
    assert recent.complete(["rec-1", "rec-2", "rec-3"]) == {
        "rec-2": [refs[2]],
        "rec-3": [refs[3]],
    }
    assert recent._with_request("shared") == [refs[3]]  # rec-0 gone, rec-3 kept
