"""Every protocol against a live server; each answer is checked against the native model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .conftest import NAME, Project, ServeFactory, records

tritonhttp = pytest.importorskip("tritonclient.http")

ATOL = 1e-6


def _v2_inputs(frame: pd.DataFrame) -> list[dict[str, object]]:
    n = len(frame)
    return [
        {"name": "amount", "shape": [n], "datatype": "FP64", "data": frame["amount"].tolist()},
        {"name": "age", "shape": [n], "datatype": "INT64", "data": frame["age"].tolist()},
        {
            "name": "plan",
            "shape": [n],
            "datatype": "BYTES",
            "data": [str(p) for p in frame["plan"]],
        },
        {"name": "city", "shape": [n], "datatype": "BYTES", "data": frame["city"].tolist()},
    ]


def test_v1_v2_and_mlflow_answers_equal_the_native_model(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(project.settings)
    oracle = project.proba(1, held_out)
    labels = [str(int(p > 0.5)) for p in oracle]
    rows = records(held_out)
    with server.client() as http:
        # v1: records, then rows in signature order
        for instances in (rows, [list(r.values()) for r in rows]):
            answer = http.post(f"/v1/models/{NAME}:predict", json={"instances": instances})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Model-Version"] == "1"
            predictions = answer.json()["predictions"]
            got = [p["probabilities"]["1"] for p in predictions]
            np.testing.assert_allclose(got, oracle, atol=ATOL)
            assert [p["label"] for p in predictions] == labels

        # v2 infer: the id comes back, on the model path and the version path
        for path in (f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/versions/1/infer"):
            answer = http.post(path, json={"id": "req-42", "inputs": _v2_inputs(held_out)})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["id"] == "req-42"
            assert answer.headers["X-Request-ID"] == "req-42"
            assert body["model_name"] == NAME and body["model_version"] == "1"
            outputs = {o["name"]: o for o in body["outputs"]}
            np.testing.assert_allclose(outputs["proba_1"]["data"], oracle, atol=ATOL)
            assert outputs["label"]["data"] == labels

        # MLflow /invocations: dataframe_split (columns out of order), records, instances
        split = {"columns": ["city", "plan", "age", "amount"]}
        split["data"] = [[r["city"], r["plan"], r["age"], r["amount"]] for r in rows]  # type: ignore[assignment]
        for body in ({"dataframe_split": split}, {"dataframe_records": rows}, {"instances": rows}):
            answer = http.post("/invocations", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == labels


def test_v2_metadata_ready_and_health(project: Project, serve: ServeFactory) -> None:
    server = serve(project.settings)
    with server.client() as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").status_code == 200
        for path in (f"/v2/models/{NAME}", f"/v2/models/{NAME}/versions/1"):
            meta = http.get(path)
            assert meta.status_code == 200, meta.text
            body = meta.json()
            assert body["name"] == NAME and body["versions"] == ["1"]
            inputs = {i["name"]: i["datatype"] for i in body["inputs"]}
            assert inputs == {"amount": "FP64", "age": "INT64", "plan": "BYTES", "city": "BYTES"}
            assert {o["name"] for o in body["outputs"]} == {"label", "proba_0", "proba_1"}
        for path in (f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}/versions/1/ready"):
            ready = http.get(path)
            assert ready.status_code == 200 and ready.json()["ready"] is True
        assert http.get(f"/v2/models/{NAME}/versions/2/ready").status_code == 404
        assert http.get("/ping").status_code == 200


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_against_the_live_server(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame, binary: bool
) -> None:
    server = serve(project.settings)
    client = tritonhttp.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(NAME)
        assert client.is_model_ready(NAME, "1")
        meta = client.get_model_metadata(NAME)
        assert meta["name"] == NAME
        assert [i["name"] for i in meta["inputs"]] == ["amount", "age", "plan", "city"]

        n = len(held_out)
        arrays = {
            "amount": held_out["amount"].to_numpy(np.float32).reshape(n, 1),
            "age": held_out["age"].to_numpy(np.int32).reshape(n, 1),
            "plan": np.array([[str(p)] for p in held_out["plan"]], dtype=object),
            "city": np.array([[c] for c in held_out["city"]], dtype=object),
        }
        types = {"amount": "FP32", "age": "INT32", "plan": "BYTES", "city": "BYTES"}
        inputs = []
        for name, values in arrays.items():
            tensor = tritonhttp.InferInput(name, list(values.shape), types[name])
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        outputs = [
            tritonhttp.InferRequestedOutput("proba_1", binary_data=binary),
            tritonhttp.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer(NAME, inputs, outputs=outputs, request_id="t-1")
        # the float32 input is the oracle's input too, so the tolerance stays tight
        sent = held_out.assign(amount=arrays["amount"].ravel().astype(np.float64))
        oracle = project.proba(1, sent)
        np.testing.assert_allclose(result.as_numpy("proba_1").ravel(), oracle, atol=ATOL)
        labels = [
            v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").ravel()
        ]
        assert labels == [str(int(p > 0.5)) for p in oracle]
        assert result.get_response()["id"] == "t-1"
    finally:
        client.close()
