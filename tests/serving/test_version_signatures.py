"""Every version answers with its own signature: canary, shadow and pinned requests.

Versions of ``churn`` trained on the same columns in other orders (the one-hot encoder's
passthrough follows the training frame's order, so the models differ in the layout they
read) are served as canary, shadow or pinned next to the primary (v1, the original
order). Each answer, and each shadow record in the prediction log, must equal the native
``predict_proba`` of the version that gave it, for every request form: v1 records, rows
(read in the published primary order) and columns, v2 JSON and binary tensors,
``/invocations``. Hypothesis draws the column orders.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelyard.config import Settings
from modelyard.registry import ModelRegistry
from modelyard.serving.codecs.v2_binary import HEADER, serialize_bytes
from modelyard.store.predlog import read_predictions

from .conftest import (
    NAME,
    SEED,
    LiveServer,
    Project,
    ServeFactory,
    make_frame,
    records,
    serving,
)
from .test_server_entities import COLUMNS as ENTITY_COLUMNS
from .test_server_entities import T0 as ENTITY_T0
from .test_server_entities import _body as _entity_body
from .test_server_entities import _latest
from .test_server_entities import project as entity_project  # noqa: F401 - a fixture

ADMIN = "adm-sig-4410"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ORIGINAL = ("amount", "age", "plan", "city")
ATOL = 1e-6
FORMS = (
    "v1-records",
    "v1-rows",
    "v1-columns",
    "v2-json",
    "v2-binary",
    "mlflow-split",
    "mlflow-records",
)


def fit(order: tuple[str, ...], c: float) -> Pipeline:
    """A churn model trained on the frame's columns in ``order``."""
    frame, labels = make_frame()
    text = [n for n in order if n in ("plan", "city")]
    numbers = [n for n in order if n not in text]
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), text),
        (StandardScaler(), numbers),
    )
    return make_pipeline(encode, LogisticRegression(C=c, max_iter=500)).fit(
        frame[list(order)], labels
    )


def native(model: Pipeline, order: tuple[str, ...], frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(frame[list(order)])[:, 1])


def _v2_tensors(frame: pd.DataFrame) -> list[tuple[str, str, list[Any]]]:
    return [
        ("amount", "FP64", frame["amount"].astype(float).tolist()),
        ("age", "INT64", frame["age"].astype(int).tolist()),
        ("plan", "BYTES", [str(p) for p in frame["plan"]]),
        ("city", "BYTES", [str(c) for c in frame["city"]]),
    ]


def _v2_binary(frame: pd.DataFrame) -> tuple[bytes, dict[str, str]]:
    inputs, blobs = [], []
    for name, datatype, data in _v2_tensors(frame):
        if datatype == "BYTES":
            raw = serialize_bytes(data)
        else:
            raw = np.asarray(data, dtype="<f8" if datatype == "FP64" else "<i8").tobytes()
        blobs.append(raw)
        inputs.append(
            {
                "name": name,
                "shape": [len(frame)],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    outputs = [{"name": "proba_1", "parameters": {"binary_data": False}}]
    header = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    return header + b"".join(blobs), {HEADER: str(len(header))}


def ask(
    http: httpx.Client, form: str, frame: pd.DataFrame, pinned: int | None = None
) -> tuple[int, list[Any]]:
    """(the answering version, its class-1 probabilities; labels for /invocations)."""
    rows = records(frame)
    v2 = f"/v2/models/{NAME}" + (f"/versions/{pinned}" if pinned is not None else "") + "/infer"
    if form.startswith("v1"):
        assert pinned is None  # v1 has no versioned path
        if form == "v1-records":
            instances: Any = rows
        elif form == "v1-rows":  # the primary's published order
            instances = [[r[n] for n in ORIGINAL] for r in rows]
        else:
            instances = {n: [r[n] for r in rows] for n in reversed(ORIGINAL)}
        answer = http.post(f"/v1/models/{NAME}:predict", json={"instances": instances})
        assert answer.status_code == 200, answer.text
        got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
    elif form == "v2-json":
        inputs = [
            {"name": n, "shape": [len(frame)], "datatype": t, "data": d}
            for n, t, d in reversed(_v2_tensors(frame))
        ]
        answer = http.post(v2, json={"inputs": inputs})
        assert answer.status_code == 200, answer.text
        got = {o["name"]: o["data"] for o in answer.json()["outputs"]}["proba_1"]
    elif form == "v2-binary":
        body, headers = _v2_binary(frame)
        answer = http.post(v2, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        length = int(answer.headers.get(HEADER, len(answer.content)))
        got = {o["name"]: o["data"] for o in json.loads(answer.content[:length])["outputs"]}[
            "proba_1"
        ]
    else:
        assert pinned is None
        if form == "mlflow-split":
            columns = ["city", "age", "plan", "amount"]
            body: Any = {
                "dataframe_split": {
                    "columns": columns,
                    "data": [[r[c] for c in columns] for r in rows],
                }
            }
        else:
            body = {"dataframe_records": rows}
        answer = http.post("/invocations", json=body)
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"]
    return int(answer.headers["X-Model-Version"]), got


def check(got: list[Any], form: str, expected: np.ndarray) -> None:
    if form.startswith("mlflow"):
        assert got == [str(int(p > 0.5)) for p in expected]
    else:
        np.testing.assert_allclose(got, expected, atol=ATOL)


class Versions:
    """The churn versions logged for a test, by column order, with their native models."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.models: dict[int, tuple[Pipeline, tuple[str, ...]]] = {
            1: (project.models[1], ORIGINAL),
            2: (project.models[2], ORIGINAL),
        }

    def log(self, order: tuple[str, ...], c: float) -> int:
        model = fit(order, c)
        frame, _ = make_frame()
        logged = self.project.registry.log_model(
            model, name=NAME, training_frame=frame[list(order)]
        )
        self.models[logged.version] = (model, order)
        return logged.version

    def proba(self, version: int, frame: pd.DataFrame) -> np.ndarray:
        model, order = self.models[version]
        return native(model, order, frame)


def set_policy(server: LiveServer, **policy: Any) -> None:
    with server.client(headers=AUTH) as http:
        answer = http.put(f"/admin/models/{NAME}/traffic", json=policy)
        assert answer.status_code == 200, answer.text


def shadow_records(server: LiveServer, version: int, request_ids: set[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        found = [
            r
            for r in read_predictions(server.log_dir, version=version).to_pylist()
            if r["route"] == "shadow" and r["request_id"] in request_ids
        ]
        if {r["request_id"] for r in found} == request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("form", FORMS)
def test_canary_pinned_and_shadow_in_another_column_order_answer_as_natively(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame, form: str
) -> None:
    versions = Versions(project)
    reordered = versions.log(("city", "plan", "age", "amount"), c=0.2)
    project.registry.set_alias(f"{NAME}/{reordered}", "canary")
    server = serve(project.settings, environ={"MODELYARD_API_KEYS": f"{ADMIN}:admin"})
    frame = held_out.head(12)
    assert not np.allclose(versions.proba(1, frame), versions.proba(reordered, frame), atol=0.01)
    with server.client(headers=AUTH) as http:
        # the canary answers every request
        set_policy(server, canary="canary", canary_weight=1.0)
        version, got = ask(http, form, frame)
        assert version == reordered
        check(got, form, versions.proba(reordered, frame))
        # pinned to it (v2 only), while it is the canary
        if form.startswith("v2"):
            version, got = ask(http, form, frame, pinned=reordered)
            assert version == reordered
            check(got, form, versions.proba(reordered, frame))
        # as the shadow: the primary answers, the shadow's log records are its own
        set_policy(server, shadow="canary")
        for _ in range(3):
            version, got = ask(http, form, frame)
            assert version == 1
            check(got, form, versions.proba(1, frame))
        answered = {
            r["request_id"]
            for r in read_predictions(server.log_dir, version=1).to_pylist()
            if r["route"] == "primary"
        }
    logged = shadow_records(server, reordered, answered)
    assert {r["request_id"] for r in logged} == answered
    expected = versions.proba(reordered, frame)
    for record in logged:
        assert math.isclose(record["output.proba_1"], expected[record["row"]], abs_tol=ATOL)
        assert record["input.amount"] == pytest.approx(float(frame["amount"].iloc[record["row"]]))
        assert record["input.city"] == frame["city"].iloc[record["row"]]


def test_a_numeric_matrix_tensor_is_read_in_the_published_order(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    """One ``[n, k]`` tensor is positional: the primary's order on the model path, the
    version's own order on its versioned path (as each metadata endpoint publishes)."""
    frame, _ = make_frame()
    order = ("x0", "x1", "x2", "x3")
    rng = np.random.default_rng(SEED)
    data = pd.DataFrame(rng.normal(size=(len(frame), 4)), columns=list(order))
    target = (data["x0"] * 3 - data["x1"] + 0.2 * data["x3"] > 0).astype(int)
    swapped = ("x3", "x2", "x1", "x0")
    models = {
        1: (LogisticRegression().fit(data[list(order)], target), order),
        2: (LogisticRegression(C=0.05).fit(data[list(swapped)], target), swapped),
    }
    for model, columns in models.values():
        project.registry.log_model(model, name="num", training_frame=data[list(columns)])
    project.registry.set_alias("num/1", "production")
    project.registry.set_alias("num/2", "canary")
    server = serve(project.settings, ["num"], environ={"MODELYARD_API_KEYS": f"{ADMIN}:admin"})
    rows = data.head(9)

    def matrix(columns: tuple[str, ...]) -> dict[str, Any]:
        values = rows[list(columns)].to_numpy()
        return {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(values.shape),
                    "datatype": "FP64",
                    "data": values.ravel().tolist(),
                }
            ]
        }

    def oracle(version: int) -> np.ndarray:
        model, columns = models[version]
        return np.asarray(model.predict_proba(rows[list(columns)])[:, 1])

    with server.client(headers=AUTH) as http:
        answer = http.put(
            "/admin/models/num/traffic", json={"canary": "canary", "canary_weight": 1.0}
        )
        assert answer.status_code == 200, answer.text
        meta = {v: http.get(f"/v2/models/num/versions/{v}").json() for v in (1, 2)}
        assert [i["name"] for i in http.get("/v2/models/num").json()["inputs"]] == list(order)
        assert [i["name"] for i in meta[2]["inputs"]] == list(swapped)
        assert [i["name"] for i in meta[1]["inputs"]] == list(order)
        for path, columns, version in (
            ("/v2/models/num/infer", order, 2),  # the canary answers the primary's order
            ("/v2/models/num/versions/2/infer", swapped, 2),
            ("/v2/models/num/versions/1/infer", order, 1),
        ):
            answer = http.post(path, json=matrix(columns))
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Model-Version"] == str(version)
            got = {o["name"]: o["data"] for o in answer.json()["outputs"]}["proba_1"]
            np.testing.assert_allclose(got, oracle(version), atol=ATOL)


_ORDERS = st.permutations(list(ORIGINAL)).map(tuple)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    order=_ORDERS,
    c=st.sampled_from([0.05, 0.3, 2.0]),
    route=st.sampled_from(["canary", "pinned", "shadow"]),
    form=st.sampled_from(FORMS),
    start=st.integers(0, 20),
    size=st.integers(1, 5),
)
def test_any_column_order_answers_as_its_native_model(
    project: Project,
    serve: ServeFactory,
    held_out: pd.DataFrame,
    order: tuple[str, ...],
    c: float,
    route: str,
    form: str,
    start: int,
    size: int,
) -> None:
    state = _STATE.setdefault(id(project), {})
    if "server" not in state:
        state["versions"] = Versions(project)
        state["server"] = serve(project.settings, environ={"MODELYARD_API_KEYS": f"{ADMIN}:admin"})
        state["logged"] = {}
    versions: Versions = state["versions"]
    server: LiveServer = state["server"]
    key = (order, c)
    if key not in state["logged"]:
        state["logged"][key] = versions.log(order, c)
    version = state["logged"][key]
    project.registry.set_alias(f"{NAME}/{version}", "candidate")
    frame = held_out.iloc[start : start + size]
    with server.client(headers=AUTH) as http:
        if route == "canary":
            set_policy(server, canary="candidate", canary_weight=1.0)
            answered, got = ask(http, form, frame)
            assert answered == version
            check(got, form, versions.proba(version, frame))
        elif route == "pinned":
            set_policy(server, canary="candidate", canary_weight=0.0)
            form = form if form.startswith("v2") else "v2-json"
            answered, got = ask(http, form, frame, pinned=version)
            assert answered == version
            check(got, form, versions.proba(version, frame))
        else:
            set_policy(server, shadow="candidate")
            before = time.time_ns() // 1000
            answered, got = ask(http, form, frame)
            assert answered == 1
            check(got, form, versions.proba(1, frame))
            ids = {
                r["request_id"]
                for r in read_predictions(server.log_dir, version=1, since_us=before).to_pylist()
            }
            assert len(ids) == 1
            logged = shadow_records(server, version, ids)
            expected = versions.proba(version, frame)
            assert len(logged) == len(frame)
            for record in logged:
                assert math.isclose(record["output.proba_1"], expected[record["row"]], abs_tol=ATOL)


#: the server and versions of the running hypothesis test, by project (one per test)
_STATE: dict[int, dict[str, Any]] = {}


def test_entity_requests_to_a_canary_and_a_shadow_in_another_order(
    entity_project: tuple[Settings, LogisticRegression, pd.DataFrame],  # noqa: F811
    serve: ServeFactory,
) -> None:
    """v1 ``entities``: each version looks its features up and orders them its own way."""
    settings, model, source = entity_project
    rng = np.random.default_rng(3)
    train = pd.DataFrame(
        {
            "visits": rng.integers(0, 30, 400),
            "spend": rng.normal(50, 20, 400),
            "age": rng.integers(18, 80, 400),
        }
    )
    labels = (train["visits"] / 5 - train["age"] / 30 + rng.normal(size=400) > 2).astype(int)
    other = LogisticRegression(max_iter=500).fit(train, labels)
    registry = ModelRegistry(settings)
    try:
        registry.log_model(other, name="scorer", training_frame=train, feature_service="scoring")
        registry.set_alias("scorer/2", "canary")
    finally:
        registry.close()
    server = serve(
        serving(settings, replay=True), ["scorer"], environ={"MODELYARD_API_KEYS": f"{ADMIN}:admin"}
    )
    users, ages = ["u3", "u17", "u0", "u9"], [25, 61, 44, 38]
    body = _entity_body(users, ages, as_of=(ENTITY_T0 + timedelta(minutes=100)).isoformat())
    frame = pd.concat([pd.DataFrame({"age": ages}), _latest(source, users)], axis=1)
    expected = {
        1: model.predict_proba(frame[ENTITY_COLUMNS])[:, 1],
        2: other.predict_proba(frame[["visits", "spend", "age"]])[:, 1],
    }
    assert not np.allclose(expected[1], expected[2], atol=0.01)
    with server.client(headers=AUTH) as http:
        for policy, version in (
            ({"canary": "canary", "canary_weight": 1.0}, 2),
            ({"shadow": "canary"}, 1),
        ):
            answer = http.put("/admin/models/scorer/traffic", json=policy)
            assert answer.status_code == 200, answer.text
            answer = http.post("/v1/models/scorer:predict", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Model-Version"] == str(version)
            got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
            np.testing.assert_allclose(got, expected[version], rtol=1e-6)
        shadow_id = answer.headers["X-Request-ID"]
    logged = shadow_records(server, 2, {shadow_id})
    assert len(logged) == len(users)
    for record in logged:
        assert math.isclose(record["output.proba_1"], expected[2][record["row"]], rel_tol=1e-6)
        assert record["input.user"] == users[record["row"]]
        assert record["input.spend"] == pytest.approx(frame["spend"].iloc[record["row"]])
