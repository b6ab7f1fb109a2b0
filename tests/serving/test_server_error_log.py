"""A live server logs every error answer of a predict route as an ErrorRecord, body-free."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from modelyard.models.runtimes import Inputs
from modelyard.serving.deployments import Served
from modelyard.store.predlog import connect, read_errors, read_predictions

from .conftest import NAME, Project, ServeFactory, records

PREDICT = f"/v1/models/{NAME}:predict"
SECRET = "SECRET-BODY-7f3a"


@dataclasses.dataclass
class _Exploding:
    """A runtime that fails on every request."""

    inner: Any
    name: str = "exploding"

    def scores(self, inputs: Inputs) -> np.ndarray:
        raise ZeroDivisionError("boom on purpose")


def _errors(server: Any) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for row in read_errors(server.log_dir).to_pylist()}


def test_every_error_answer_of_a_predict_route_is_logged_without_its_body(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(project.settings)
    rows = records(held_out.head(2))
    with server.client() as http:
        bad = http.post(
            PREDICT,
            json={"instances": [dict(rows[0], age=SECRET)]},
            headers={"X-Request-ID": "bad-v1", "Authorization": f"Bearer {SECRET}"},
        )
        assert bad.status_code == 422
        unknown = http.post(
            "/v1/models/chrun:predict",
            json={"instances": rows},
            headers={"X-Request-ID": "nomodel"},
        )
        assert unknown.status_code == 404
        malformed = http.post(
            f"/v2/models/{NAME}/versions/1/infer",
            content=b'{"id": "' + SECRET.encode() + b'", "inputs": [',
            headers={"X-Request-ID": "bad-v2", "content-type": "application/json"},
        )
        assert malformed.status_code == 400, malformed.text
        ok = http.post(PREDICT, json={"instances": rows}, headers={"X-Request-ID": "fine"})
        assert ok.status_code == 200
        # not predict routes: never logged as errors
        assert http.get("/v2/models/chrun").status_code == 404
        assert http.post("/admin/reload").status_code in (401, 403)
        assert http.get("/nowhere").status_code == 404
        assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200

        deployment = server.state.deployments[NAME]
        assert deployment.primary is not None
        model = deployment.primary.model
        if deployment.primary.batcher is not None:
            deployment.primary.batcher.close()
        exploding = dataclasses.replace(model, runtime=_Exploding(model.runtime))
        deployment.primary = Served(exploding, None)
        crash = http.post(PREDICT, json={"instances": rows}, headers={"X-Request-ID": "boom"})
        assert crash.status_code == 500
        invocations = http.post(
            "/invocations", json={"instances": rows}, headers={"X-Request-ID": "boom-mlflow"}
        )
        assert invocations.status_code == 500

    errors = _errors(server)
    assert set(errors) == {"bad-v1", "nomodel", "bad-v2", "boom", "boom-mlflow"}
    expected = {
        # the body is read before a version is chosen (a canary might have got it)
        "bad-v1": ("churn", None, None, "v1", 422, "invalid_input"),
        "nomodel": ("_unknown", None, None, "v1", 404, "not_found"),
        "bad-v2": ("churn", 1, "primary", "v2", 400, ""),  # the version is in the URL
        "boom": ("churn", 1, "primary", "v1", 500, "model"),
        "boom-mlflow": ("churn", 1, "primary", "mlflow", 500, "model"),
    }
    for request_id, row in errors.items():
        got = (row["model"], row["version"], row["route"], row["protocol"], row["status"])
        assert got == expected[request_id][:5], request_id
        assert row["latency_us"] >= 0 and row["record_id"]
    assert errors["bad-v1"]["error"] == bad.json()["error"]["type"]
    assert errors["nomodel"]["error"] == unknown.json()["error"]["type"]
    assert errors["boom"]["error"] == crash.json()["error"]["type"]
    # the answered request is a prediction, not an error; the failed ones are no predictions
    assert read_predictions(server.log_dir).column("request_id").to_pylist() == ["fine", "fine"]
    # nothing of any body (nor the credentials) is in the log, in segments or in DuckDB
    for path in server.log_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    con = connect(server.log_dir)
    try:
        assert SECRET not in str(con.execute("SELECT * FROM errors").fetchall())
        assert con.execute("SELECT count(*) FROM errors").fetchone() == (5,)
    finally:
        con.close()


def test_a_failing_error_log_never_changes_the_answer(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(project.settings)
    server.log_dir.mkdir(parents=True, exist_ok=True)
    blocker = server.log_dir / "error-segments"
    blocker.write_text("not a folder: every error append fails")
    rows = records(held_out.head(2))
    with server.client() as http:
        for _ in range(2):
            bad = http.post(PREDICT, json={"instances": [dict(rows[0], age="x")]})
            assert bad.status_code == 422, bad.text
            assert bad.json()["error"]["type"] == "invalid_input"
            unknown = http.post("/v1/models/chrun:predict", json={"instances": rows})
            assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
            ok = http.post(PREDICT, json={"instances": rows})
            assert ok.status_code == 200
    assert server.state.log.stats.errors >= 4  # the failed groups, counted and logged
    blocker.unlink()
    assert read_errors(server.log_dir).num_rows == 0
    assert read_predictions(server.log_dir).num_rows == 4
