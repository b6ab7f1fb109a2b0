"""Feedback, the prediction log and /metrics, read back after a live server stops."""

from __future__ import annotations

import json

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from modelyard.store.predlog import read_feedback, read_predictions

from .conftest import NAME, Project, ServeFactory, records


def test_feedback_and_every_answered_request_are_in_the_log(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(project.settings)
    rows = records(held_out.head(3))
    answered: set[str] = set()
    with server.client() as http:
        for _ in range(4):
            answer = http.post(f"/v1/models/{NAME}:predict", json={"instances": rows})
            assert answer.status_code == 200
            assert answer.json()["request_id"] == answer.headers["X-Request-ID"]
            answered.add(answer.headers["X-Request-ID"])
        mine = http.post(
            f"/v1/models/{NAME}:predict",
            json={"instances": rows},
            headers={"X-Request-ID": "mine-1"},
        )
        assert mine.headers["X-Request-ID"] == "mine-1"
        answered.add("mine-1")
        v2 = http.post(
            f"/v2/models/{NAME}/infer",
            json={
                "id": "v2-id",
                "inputs": [
                    {"name": "amount", "shape": [1], "datatype": "FP64", "data": [0.5]},
                    {"name": "age", "shape": [1], "datatype": "INT64", "data": [33]},
                    {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["max"]},
                    {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["lyon"]},
                ],
            },
        )
        assert v2.status_code == 200
        answered.add("v2-id")
        failed = http.post(f"/v1/models/{NAME}:predict", json={"instances": [{"age": "x"}]})
        assert failed.status_code == 422

        one = http.post("/v1/feedback", json={"request_id": "mine-1", "label": 1})
        assert one.status_code == 200 and one.json()["accepted"] == 1
        batch = {
            "feedback": [
                {"request_id": "v2-id", "label": "0", "row": 0},
                {"request_id": "mine-1", "label": [0, 1, 1]},
            ]
        }
        assert http.post("/v1/feedback", json=batch).json()["accepted"] == 2
        bad_bodies = [
            (b"{not json", 400),
            (b'{"label": 1}', 422),
            (b'{"feedback": []}', 422),
            (b'{"request_id": "", "label": 1}', 422),
            (b'{"request_id": "r", "label": 1, "extra": 2}', 422),
            (b'{"feedback": [{"request_id": "r"}]}', 422),
        ]
        for body, status in bad_bodies:
            answer = http.post(
                "/v1/feedback", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["error"]["type"] in {
                "invalid_input",
                "malformed_request",
                "bad_request",
            }

        metrics = http.get("/metrics")
    server.stop()

    feedback = read_feedback(server.log_dir).to_pylist()
    got = sorted(json.dumps([f["request_id"], f["row"], json.loads(f["label"])]) for f in feedback)
    sent = [["mine-1", None, 1], ["v2-id", 0, "0"], ["mine-1", None, [0, 1, 1]]]
    assert got == sorted(json.dumps(item) for item in sent)
    assert len(feedback) == 3

    logged = read_predictions(server.log_dir)
    assert set(logged.column("request_id").to_pylist()) == answered
    assert logged.num_rows == 5 * 3 + 1  # one record per predicted row

    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    requests = {
        (s.labels["model"], s.labels["protocol"], s.labels["status"]): s.value
        for s in families["modelyard_requests"].samples
        if s.name == "modelyard_requests_total"
    }
    assert requests[(NAME, "v1", "200")] == 5
    assert requests[(NAME, "v2", "200")] == 1
    assert requests[(NAME, "v1", "422")] == 1
    phases = {
        s.labels["phase"]: s.value
        for s in families["modelyard_phase_seconds"].samples
        if s.name == "modelyard_phase_seconds_count" and s.labels["model"] == NAME
    }
    assert set(phases) >= {"decode", "validate", "predict", "encode", "log"}
    assert phases["predict"] == 6
    rows = [
        s.value
        for s in families["modelyard_rows"].samples
        if s.name == "modelyard_rows_total" and s.labels["route"] == "primary"
    ]
    assert rows == [16]
