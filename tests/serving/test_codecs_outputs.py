"""Outputs from scores, response bodies, value checks, error bodies, metadata."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from modelyard.errors import InvalidInputError, ModelError, NotFoundError, Problem
from modelyard.models.manifest import OutputSpec
from modelyard.models.runtimes import build_inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs import (
    MalformedRequest,
    check_requested_outputs,
    check_values,
    encode_invocations_response,
    encode_v1_response,
    encode_v2_response,
    error_body,
    outputs_from_scores,
    v2_model_metadata,
)

SEED = 3
CLASSES = ["churned", "stayed", "upgraded"]
CLASSIFIER = [
    OutputSpec(name="label", dtype="string", classes=CLASSES),
    *(OutputSpec(name=f"proba_{c}", dtype="float") for c in CLASSES),
]
REGRESSOR = [OutputSpec(name="prediction", dtype="float")]


def _probabilities(rows: int) -> np.ndarray:
    raw = np.random.default_rng(SEED).random((rows, len(CLASSES)))
    return raw / raw.sum(axis=1, keepdims=True)


def test_classifier_outputs_are_argmax_labels_and_probability_columns() -> None:
    scores = _probabilities(6)
    out = outputs_from_scores(CLASSIFIER, scores, task="classification", classes=CLASSES)
    assert out["label"].tolist() == [CLASSES[i] for i in scores.argmax(axis=1)]
    for i, c in enumerate(CLASSES):
        np.testing.assert_array_equal(out[f"proba_{c}"], scores[:, i])
    with pytest.raises(ModelError, match="2 score columns for 3 classes"):
        outputs_from_scores(CLASSIFIER, scores[:, :2], task="classification", classes=CLASSES)


def test_regressor_outputs() -> None:
    scores = np.random.default_rng(SEED).normal(size=(4, 1))
    out = outputs_from_scores(REGRESSOR, scores, task="regression", classes=None)
    np.testing.assert_array_equal(out["prediction"], scores[:, 0])
    wide = [OutputSpec(name=f"output_{i}", dtype="float") for i in range(2)]
    out = outputs_from_scores(wide, np.ones((3, 2)), task="regression", classes=None)
    assert sorted(out) == ["output_0", "output_1"]


def test_v1_and_mlflow_response_shapes() -> None:
    scores = _probabilities(3)
    out = outputs_from_scores(CLASSIFIER, scores, task="classification", classes=CLASSES)
    v1 = msgspec.json.decode(
        encode_v1_response(
            model="m",
            version="4",
            request_id="r",
            outputs=out,
            specs=CLASSIFIER,
            task="classification",
        )
    )
    assert (v1["model_name"], v1["model_version"], v1["request_id"]) == ("m", "4", "r")
    first = v1["predictions"][0]
    assert first["label"] == out["label"][0]
    assert first["probabilities"] == {c: scores[0, i] for i, c in enumerate(CLASSES)}
    mlflow = msgspec.json.decode(
        encode_invocations_response(outputs=out, specs=CLASSIFIER, task="classification")
    )
    assert mlflow == {"predictions": out["label"].tolist()}
    values = np.array([1.5, np.nan])
    reg = encode_invocations_response(
        outputs={"prediction": values}, specs=REGRESSOR, task="regression"
    )
    assert msgspec.json.decode(reg) == {"predictions": [1.5, None]}


def test_v2_response_and_unknown_requested_outputs() -> None:
    out = {"prediction": np.array([0.5, 2.0])}
    body, headers = encode_v2_response(
        model="m",
        version="1",
        request_id=None,
        outputs=out,
        specs=REGRESSOR,
        requested=None,
        binary=frozenset(),
    )
    assert headers == {"content-type": "application/json"}
    tensor = msgspec.json.decode(body)["outputs"][0]
    assert tensor == {"name": "prediction", "datatype": "FP64", "shape": [2], "data": [0.5, 2.0]}
    with pytest.raises(InvalidInputError) as info:
        check_requested_outputs(["prediction", "nope"], REGRESSOR)
    assert info.value.problems[0].loc == "$.outputs[1].name"


def test_v2_metadata_from_signature_and_outputs() -> None:
    sig = Signature(
        columns=[ColumnSpec(name="a", dtype="float"), ColumnSpec(name="b", dtype="category")]
    )
    meta = msgspec.json.decode(
        v2_model_metadata(
            name="m",
            versions=["1", "2"],
            platform="modelyard-sklearn",
            signature=sig,
            specs=CLASSIFIER,
        )
    )
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "b", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [o["name"] for o in meta["outputs"]] == [s.name for s in CLASSIFIER]
    assert meta["outputs"][0]["datatype"] == "BYTES"


SIG = Signature(
    columns=[
        ColumnSpec(name="age", dtype="int", nullable=True, min=18, max=90),
        ColumnSpec(name="plan", dtype="string", categories=["basic", "pro"]),
        ColumnSpec(name="score", dtype="float", min=0.0),
    ]
)


def test_check_values_modes() -> None:
    rng = np.random.default_rng(SEED)
    ages = rng.integers(0, 120, 50).astype(float)
    ages[3] = np.nan
    plans = rng.choice(["basic", "pro", "gold"], 50).tolist()
    plans[0] = None
    inputs = build_inputs(SIG, {"age": ages, "plan": plans, "score": rng.random(50)})
    low_or_high = np.flatnonzero((ages < 18) | (ages > 90))
    unseen = [i for i, p in enumerate(plans) if p == "gold"]
    for mode in ("warn", "log"):
        problems = check_values(SIG, inputs, mode=mode)  # type: ignore[arg-type]
        assert [p.loc for p in problems] == [f"age[{low_or_high[0]}]", f"plan[{unseen[0]}]"]
        assert problems[0].got.endswith(f"(and {len(low_or_high) - 1} more rows)")
        assert problems[1].got.startswith('"gold"')
    with pytest.raises(InvalidInputError, match="2 values outside what the model was trained on"):
        check_values(SIG, inputs)
    fine = build_inputs(SIG, {"age": [30.0], "plan": ["pro"], "score": [0.5]})
    assert check_values(SIG, fine) == []


def test_error_bodies_per_protocol() -> None:
    problem = Problem("$.instances[0].age", "integer", "2.5")
    err = InvalidInputError("1 problem with the input", problems=[problem])
    v2 = msgspec.json.decode(error_body(err, protocol="v2", request_id="r9"))
    assert isinstance(v2["error"], str) and v2["error"] == err.message
    assert v2["type"] == "invalid_input" and v2["problems"] == [problem.to_dict()]
    assert v2["id"] == "r9"
    for protocol in ("v1", "mlflow"):
        body = msgspec.json.decode(error_body(err, protocol=protocol, request_id="r9"))  # type: ignore[arg-type]
        assert body == {**err.to_dict(), "request_id": "r9"}
    malformed = msgspec.json.decode(error_body(MalformedRequest("bad"), protocol="v1"))
    assert malformed["error"]["type"] == "malformed_request"
    assert "request_id" not in malformed
    missing = msgspec.json.decode(error_body(NotFoundError("no model"), protocol="v2"))
    assert missing == {"error": "no model", "type": "not_found", "problems": []}
