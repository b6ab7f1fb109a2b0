"""Request ids: every prediction is its own record, whatever id the client sends or reuses.

The server makes a unique record id per prediction (``X-Record-ID``); the client's id
(``X-Request-ID``, v2 ``id``) is kept beside it, at most 256 characters. Feedback sent
for a client id that names several records labels each of them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from modelyard.config import load_settings
from modelyard.monitoring.windows import read_log
from modelyard.serving.app import create_app
from modelyard.store.predlog import (
    PredictionLog,
    PredictionRecord,
    RecentRecords,
    compact,
    connect,
    find_records,
    read_feedback,
    read_predictions,
)
from modelyard.store.predlog.layout import SEGMENTS

from .conftest import NAME, SEED, LiveServer, Project, ServeFactory, make_frame, records

PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"


def _v2_body(rows: list[dict[str, Any]], request_id: str | None) -> dict[str, Any]:
    types = {"amount": "FP64", "age": "INT64", "plan": "BYTES", "city": "BYTES"}
    body: dict[str, Any] = {
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": t, "data": [r[n] for r in rows]}
            for n, t in types.items()
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def _predict(
    http: httpx.Client, rows: list[dict[str, Any]], client_id: str | None, v2: bool
) -> httpx.Response:
    if v2:
        answer = http.post(INFER, json=_v2_body(rows, client_id))
    else:
        headers = {} if client_id is None else {"X-Request-ID": client_id}
        answer = http.post(PREDICT, json={"instances": rows}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture(scope="module")
def live(
    _base_project: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ids") / "project"
    shutil.copytree(_base_project[0], root)
    server = LiveServer(create_app(load_settings(root, environ={}), [NAME], environ={}))
    server.start()
    yield server
    server.stop()


_ROWS = records(make_frame(seed=SEED + 7, rows=8)[0])


def test_two_requests_with_one_client_id_are_two_records(live: LiveServer) -> None:
    """Before record ids, the log's readers kept one of them (deduplicated by request id)."""
    with live.client() as http:
        answers = [
            _predict(http, _ROWS[:2], "dup-1", v2=False),
            _predict(http, _ROWS[2:5], "dup-1", v2=False),
            _predict(http, _ROWS[:1], "dup-1", v2=True),
        ]
    record_ids = [a.headers["X-Record-ID"] for a in answers]
    assert len(set(record_ids)) == 3
    assert all(a.headers["X-Request-ID"] == "dup-1" for a in answers)
    assert answers[2].json()["id"] == "dup-1"
    logged = read_predictions(live.log_dir)
    mine = logged.filter(pd.Series(logged["request_id"].to_pylist()).eq("dup-1").to_numpy())
    assert mine.num_rows == 2 + 3 + 1
    by_record = pd.Series(mine["record_id"].to_pylist()).value_counts().to_dict()
    assert by_record == {record_ids[0]: 2, record_ids[1]: 3, record_ids[2]: 1}
    con = connect(live.log_dir)
    try:
        count = con.execute(
            "SELECT count(*) FROM predictions WHERE request_id = 'dup-1'"
        ).fetchone()
    finally:
        con.close()
    assert count == (6,)


def test_without_a_client_id_the_request_id_is_the_record_id(live: LiveServer) -> None:
    with live.client() as http:
        answer = _predict(http, _ROWS[:1], None, v2=False)
    assert answer.headers["X-Request-ID"] == answer.headers["X-Record-ID"]
    assert answer.json()["request_id"] == answer.headers["X-Record-ID"]


@pytest.mark.parametrize("v2", [False, True])
def test_a_client_id_over_256_characters_is_a_422_naming_it(live: LiveServer, v2: bool) -> None:
    with live.client() as http:
        ok = _predict(http, _ROWS[:1], "k" * 256, v2=v2)
        assert ok.headers["X-Request-ID"] == "k" * 256
        long = "k" * 257
        if v2:
            answer = http.post(INFER, json=_v2_body(_ROWS[:1], long))
        else:
            answer = http.post(
                PREDICT, json={"instances": _ROWS[:1]}, headers={"X-Request-ID": long}
            )
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"] if v2 else answer.json()["error"]["message"]
    assert ("$.id" if v2 else "X-Request-ID") in message
    assert "256" in message


@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from([None, "a", "b", "same", "x" * 256]),
            st.integers(1, 4),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
@hyp_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_n_requests_with_colliding_client_ids_log_n_times_their_rows(
    live: LiveServer, calls: list[tuple[str | None, int, bool]]
) -> None:
    sent: dict[str, int] = {}
    with live.client() as http:
        for client_id, rows, v2 in calls:
            answer = _predict(http, _ROWS[:rows], client_id, v2)
            sent[answer.headers["X-Record-ID"]] = rows
    assert len(sent) == len(calls)  # every answer got its own record id
    logged = read_predictions(live.log_dir)
    counts = pd.Series(logged["record_id"].to_pylist()).value_counts().to_dict()
    assert {r: counts.get(r, 0) for r in sent} == sent
    assert sum(counts.get(r, 0) for r in sent) == sum(rows for _, rows, _ in calls)


def test_a_segment_seen_twice_during_compaction_is_deduplicated_on_record_ids(
    tmp_path: Path,
) -> None:
    """A crash between the Parquet rename and the segment delete leaves both: read once.

    Two records sharing a client id stay two records.
    """
    with PredictionLog(tmp_path) as log:
        for i, record_id in enumerate(["r-1", "r-2", "r-3"]):
            log.append_blocking(
                PredictionRecord(
                    record_id=record_id,
                    request_id="shared",
                    time_us=1_700_000_000_000_000 + i,
                    model="m",
                    version=1,
                    rows=2,
                    inputs={"x": [i, i]},
                    outputs={"y": [0, 1]},
                    latency_us=1,
                )
            )
    [segment] = (tmp_path / SEGMENTS).glob("*.seg")
    kept = segment.read_bytes()
    assert compact(tmp_path).records == 3
    segment.write_bytes(kept)  # as if compaction died before deleting it
    table = read_predictions(tmp_path)
    assert sorted(zip(table["record_id"].to_pylist(), table["row"].to_pylist(), strict=True)) == [
        (r, row) for r in ("r-1", "r-2", "r-3") for row in (0, 1)
    ]
    con = connect(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (6,)
    finally:
        con.close()
    assert compact(tmp_path).records == 3  # the same file names again: no duplicates
    assert read_predictions(tmp_path).num_rows == 6


def test_feedback_for_a_reused_client_id_labels_each_record(
    project: Project, serve: ServeFactory
) -> None:
    server = serve(project.settings)
    with server.client() as http:
        first = _predict(http, _ROWS[:2], "order-9", v2=False)
        second = _predict(http, _ROWS[2:3], "order-9", v2=False)
        other = _predict(http, _ROWS[3:4], None, v2=False)
        answer = http.post("/v1/feedback", json={"request_id": "order-9", "label": 1})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["accepted"] == 1 and body["records"] == 2
        assert body["ambiguous"] == {"count": 1, "request_ids": ["order-9"]}
        by_record = http.post(
            "/v1/feedback",
            json={"request_id": other.headers["X-Record-ID"], "label": 0},
        ).json()
        assert by_record["records"] == 1 and by_record["ambiguous"]["count"] == 0
        # a later label for one row of the first record, by its record id
        row = http.post(
            "/v1/feedback",
            json={"request_id": first.headers["X-Record-ID"], "label": "0", "row": 1},
        )
        assert row.status_code == 200, row.text
    server.stop()
    feedback = read_feedback(server.log_dir)
    assert sorted(feedback["record_id"].to_pylist()) == sorted(
        [
            first.headers["X-Record-ID"],
            second.headers["X-Record-ID"],
            other.headers["X-Record-ID"],
            first.headers["X-Record-ID"],
        ]
    )
    table = read_log(server.log_dir, NAME, 1, inputs=[], outputs=["label"], labels=True)
    labels = dict(
        zip(
            zip(table["request_id"].to_pylist(), range(table.num_rows), strict=True),
            table["label"].to_pylist(),
            strict=True,
        )
    )
    got = sorted(
        (rid, label) for (rid, _), label in labels.items() if rid == "order-9" or label is not None
    )
    # order-9: two rows of the first record (the second row relabelled "0"), one of the second
    assert got == sorted(
        [("order-9", "1"), ("order-9", "0"), ("order-9", "1"), (other.headers["X-Record-ID"], "0")]
    )


@given(
    calls=st.lists(
        st.tuples(st.sampled_from([None, "a", "b"]), st.booleans(), st.integers(1, 3)),
        min_size=1,
        max_size=20,
    ),
    size=st.integers(1, 40),
)
@hyp_settings(max_examples=30, deadline=None)
def test_the_logs_memory_of_record_ids_agrees_with_a_scan(
    tmp_path_factory: pytest.TempPathFactory,
    calls: list[tuple[str | None, bool, int]],
    size: int,
) -> None:
    """What a feedback lookup answers from memory is what a scan of the log finds."""
    root = tmp_path_factory.mktemp("recent")
    with PredictionLog(root) as log:
        log.recent = RecentRecords(size)
        for i, (client_id, shadowed, rows) in enumerate(calls):
            record_id = f"rec-{i}"
            request_id = client_id or record_id
            for route, rid in [("primary", record_id), ("shadow", f"shadow-{i}")][: 1 + shadowed]:
                log.append_blocking(
                    PredictionRecord(
                        record_id=rid,
                        request_id=request_id,
                        time_us=1_700_000_000_000_000 + i,
                        model="m",
                        version=1,
                        rows=rows,
                        inputs={"x": [0] * rows},
                        outputs={"y": [1] * rows},
                        latency_us=1,
                        route=route,
                    )
                )
        ids = {f"rec-{i}" for i in range(len(calls))} | {"a", "b", "nope"}
        remembered = log.recent.complete(ids)
    scanned = find_records(root, ids)
    assert not {"a", "b", "nope"} & remembered.keys()  # client ids always go to disk
    for name, refs in remembered.items():
        assert sorted(refs, key=str) == sorted(scanned[name], key=str), name
    if size >= 2:  # the latest request's record (and its shadow's) fit
        assert f"rec-{len(calls) - 1}" in remembered
