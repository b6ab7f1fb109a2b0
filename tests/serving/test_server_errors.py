"""Error answers of a live server: status, the protocol's error shape, no echo, no secrets."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.models.runtimes import Inputs
from modelyard.serving.deployments import Served

from .conftest import NAME, Project, ServeFactory, records, serving

PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"


def _assert_v1_error(body: dict[str, Any], kind: str) -> None:
    """The one error shape of STYLE.md."""
    assert set(body) <= {"error", "request_id"}
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_bad_requests_get_the_right_status_and_shape(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(serving(project.settings, max_body_bytes=64 * 1024))
    rows = records(held_out.head(3))
    with server.client() as http:
        malformed = http.post(
            PREDICT, content=b'{"instances": [', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        _assert_v1_error(malformed.json(), malformed.json()["error"]["type"])

        huge = "x" * 50_000
        wrong = [dict(rows[0]), dict(rows[1], age=huge)]
        answer = http.post(PREDICT, json={"instances": wrong})
        assert answer.status_code == 422, answer.text
        body = answer.json()
        _assert_v1_error(body, "invalid_input")
        [problem] = body["error"]["problems"]
        assert problem["loc"] == "$.instances[1].age"
        assert "int" in problem["expected"]
        assert problem["got"].startswith('"xxx')
        assert len(answer.content) < 2_000  # the payload is never echoed whole

        v2 = http.post(
            INFER,
            json={"inputs": [{"name": "age", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
        )
        assert v2.status_code == 422
        assert isinstance(v2.json()["error"], str) and v2.json()["problems"]

        too_big = http.post(PREDICT, json={"instances": rows * 2_000})
        assert too_big.status_code == 413
        _assert_v1_error(too_big.json(), "payload_too_large")
        v2_big = http.post(INFER, content=b"[" * 70_000)
        assert v2_big.status_code == 413 and isinstance(v2_big.json()["error"], str)

        unknown = http.post("/v1/models/chrun:predict", json={"instances": rows})
        assert unknown.status_code == 404
        _assert_v1_error(unknown.json(), "not_found")
        assert NAME in unknown.json()["error"]["message"]
        unknown_v2 = http.get("/v2/models/chrun")
        assert unknown_v2.status_code == 404 and NAME in unknown_v2.json()["error"]

        for path in (f"/v2/models/{NAME}/versions/7", f"/v2/models/{NAME}/versions/7/ready"):
            missing = http.get(path)
            assert missing.status_code == 404
            assert "Served versions: 1" in missing.json()["error"]
        no_version = http.post(f"/v2/models/{NAME}/versions/7/infer", json={"inputs": []})
        assert no_version.status_code == 404 and isinstance(no_version.json()["error"], str)

        # the server still answers correctly after every one of those
        ok = http.post(PREDICT, json={"instances": rows})
        assert ok.status_code == 200
        got = [p["probabilities"]["1"] for p in ok.json()["predictions"]]
        np.testing.assert_allclose(got, project.proba(1, held_out.head(3)), atol=1e-6)


@dataclasses.dataclass
class _Exploding:
    """A runtime that fails on a marked row, else delegates."""

    inner: Any
    name: str = "exploding"

    def scores(self, inputs: Inputs) -> np.ndarray:
        amount = inputs.columns[inputs.names.index("amount")]
        if np.any(amount == 123.0):
            raise ZeroDivisionError("boom on purpose")
        return np.asarray(self.inner.scores(inputs))


@pytest.mark.parametrize("batching", ["off", "on"])
def test_a_model_that_raises_is_a_500_with_the_request_id(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame, batching: str
) -> None:
    from modelyard.config import BatchingSettings

    settings = serving(project.settings, batching=BatchingSettings(mode=batching))  # type: ignore[arg-type]
    server = serve(settings)
    deployment = server.state.deployments[NAME]
    assert deployment.primary is not None
    model = deployment.primary.model
    exploding = dataclasses.replace(model, runtime=_Exploding(model.runtime))
    batcher = deployment.primary.batcher
    deployment.primary = Served(exploding, None)
    if batcher is not None:
        from modelyard.serving.deployments import make_served

        batcher.close()
        deployment.primary = make_served(exploding, settings.serving.batching)
    rows = records(held_out.head(2))
    bad = [dict(rows[0], amount=123.0)]
    with server.client() as http:
        for path, body in ((PREDICT, {"instances": bad}), ("/invocations", {"instances": bad})):
            answer = http.post(path, json=body, headers={"X-Request-ID": "rid-500"})
            assert answer.status_code == 500, answer.text
            assert answer.headers["X-Request-ID"] == "rid-500"
            assert answer.json()["request_id"] == "rid-500"
            assert answer.json()["error"]["type"] == "model"
        v2 = http.post(
            INFER,
            json={
                "id": "v2-500",
                "inputs": [
                    {"name": "amount", "shape": [1], "datatype": "FP64", "data": [123.0]},
                    {"name": "age", "shape": [1], "datatype": "INT64", "data": [40]},
                    {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
                    {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["oslo"]},
                ],
            },
        )
        assert v2.status_code == 500 and v2.json()["id"] == "v2-500"
        assert "ZeroDivisionError" in v2.json()["error"]
        # and it keeps answering
        for _ in range(3):
            ok = http.post(PREDICT, json={"instances": rows})
            assert ok.status_code == 200
        np.testing.assert_allclose(
            [p["probabilities"]["1"] for p in ok.json()["predictions"]],
            project.proba(1, held_out.head(2)),
            atol=1e-6,
        )


def test_api_keys_and_scopes(project: Project, serve: ServeFactory, held_out: pd.DataFrame) -> None:
    predict_key, admin_key = "pk-Zq81secret", "ak-Wx99secret"
    environ = {"MODELYARD_API_KEYS": f"{predict_key}:predict,{admin_key}:admin"}
    server = serve(project.settings, environ=environ)
    body = {"instances": records(held_out.head(1))}
    with server.client() as http:
        cases = [
            ({}, 401),
            ({"Authorization": "Bearer wrong-key-123"}, 401),
            ({"X-API-Key": predict_key[:-1]}, 401),
            ({"Authorization": f"Bearer {predict_key}"}, 200),
            ({"X-API-Key": predict_key}, 200),
            ({"Authorization": f"Bearer {admin_key}"}, 200),
        ]
        for headers, status in cases:
            answer = http.post(PREDICT, json=body, headers=headers)
            assert answer.status_code == status, (headers, answer.text)
            assert predict_key not in answer.text and admin_key not in answer.text
        v2 = http.get(f"/v2/models/{NAME}/ready")
        assert v2.status_code == 200  # health and metadata stay open
        admin_cases = [
            ({}, 401),
            ({"Authorization": f"Bearer {predict_key}"}, 403),
            ({"Authorization": f"Bearer {admin_key}"}, 200),
        ]
        for headers, status in admin_cases:
            answer = http.post("/admin/reload", headers=headers)
            assert answer.status_code == status, (headers, answer.text)
            traffic = http.get(f"/admin/models/{NAME}/traffic", headers=headers)
            assert traffic.status_code == status
            for text in (answer.text, traffic.text):
                assert predict_key not in text and admin_key not in text
        assert (
            http.get(f"/admin/models/{NAME}/traffic", headers={"X-API-Key": admin_key}).json()[
                "primary"
            ]
            == "production"
        )


def test_without_keys_predict_is_open_and_admin_is_refused(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(project.settings, environ={})
    with server.client() as http:
        ok = http.post(PREDICT, json={"instances": records(held_out.head(1))})
        assert ok.status_code == 200
        refused = http.post("/admin/reload", headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "forbidden"
        assert "anything" not in refused.text


def test_a_unicode_digit_version_is_a_422_not_a_500(project: Project, serve: ServeFactory) -> None:
    """str.isdigit() holds for "¹" and "٣", which int() refuses (found by schemathesis)."""
    server = serve(project.settings)
    with server.client() as http:
        for version in ("%C2%B9", "%D9%A3"):
            answer = http.get(f"/v2/models/{NAME}/versions/{version}")
            assert answer.status_code == 422, answer.text
            assert "version" in answer.json()["error"]
