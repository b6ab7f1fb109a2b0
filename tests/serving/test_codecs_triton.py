"""What tritonclient sends decodes, and what we answer tritonclient reads back."""

from __future__ import annotations

import numpy as np
import pytest

tritonhttp = pytest.importorskip("tritonclient.http")

from modelyard.models.manifest import OutputSpec  # noqa: E402
from modelyard.models.runtimes import build_inputs  # noqa: E402
from modelyard.models.signature import ColumnSpec, Signature  # noqa: E402
from modelyard.serving.codecs import (  # noqa: E402
    BINARY_HEADER,
    decode_v2_infer,
    encode_v2_response,
    outputs_from_scores,
)

from .test_codecs_roundtrip import assert_same  # noqa: E402

SEED = 7
SIG = Signature(
    columns=[
        ColumnSpec(name="amount", dtype="float"),
        ColumnSpec(name="age", dtype="int"),
        ColumnSpec(name="active", dtype="bool"),
        ColumnSpec(name="plan", dtype="string"),
    ]
)
CLASSES = ["no", "yes"]
SPECS = [
    OutputSpec(name="label", dtype="string", classes=CLASSES),
    OutputSpec(name="proba_no", dtype="float"),
    OutputSpec(name="proba_yes", dtype="float"),
]


def _arrays(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {
        "amount": rng.normal(size=(rows, 1)).astype(np.float32),
        "age": rng.integers(0, 100, size=(rows, 1)).astype(np.int32),
        "active": (rng.random((rows, 1)) < 0.5),
        "plan": np.array([["basic"], ["ünïcode ✓"], ["pro"]] * rows, dtype=object)[:rows],
    }


def _request(arrays: dict[str, np.ndarray], binary: bool, outputs: list[object] | None):
    types = {"amount": "FP32", "age": "INT32", "active": "BOOL", "plan": "BYTES"}
    inputs = []
    for name, values in arrays.items():
        tensor = tritonhttp.InferInput(name, list(values.shape), types[name])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return tritonhttp.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="req-1"
    )


def _oracle(arrays: dict[str, np.ndarray]):
    return build_inputs(SIG, {name: values.ravel() for name, values in arrays.items()})


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_requests_decode_like_build_inputs(binary: bool) -> None:
    arrays = _arrays(5)
    body, header_length = _request(arrays, binary, outputs=None)
    headers = {} if header_length is None else {BINARY_HEADER: str(header_length)}
    assert (header_length is not None) == binary
    decoded = decode_v2_infer(body, headers, SIG)
    assert decoded.request_id == "req-1"
    assert decoded.binary_outputs is True  # tritonclient asks for binary when it names none
    assert decoded.inputs is not None
    assert_same(decoded.inputs, _oracle(arrays))


def test_header_name_is_read_in_any_case() -> None:
    arrays = _arrays(2)
    body, header_length = _request(arrays, True, outputs=None)
    decoded = decode_v2_infer(body, {BINARY_HEADER.lower(): str(header_length)}, SIG)
    assert decoded.inputs is not None
    assert_same(decoded.inputs, _oracle(arrays))


@pytest.mark.parametrize("label_binary", [False, True])
@pytest.mark.parametrize("proba_binary", [False, True])
def test_responses_parse_in_tritonclient(label_binary: bool, proba_binary: bool) -> None:
    arrays = _arrays(4)
    requested = [
        tritonhttp.InferRequestedOutput("label", binary_data=label_binary),
        tritonhttp.InferRequestedOutput("proba_yes", binary_data=proba_binary),
    ]
    body, _header_length = _request(arrays, False, outputs=requested)
    decoded = decode_v2_infer(body, {}, SIG)
    assert decoded.requested_outputs == ["label", "proba_yes"]
    rng = np.random.default_rng(SEED)
    p = rng.random(4)
    scores = np.column_stack([1 - p, p])
    outputs = outputs_from_scores(SPECS, scores, task="classification", classes=CLASSES)
    answer, headers = encode_v2_response(
        model="churn",
        version="2",
        request_id=decoded.request_id,
        outputs=outputs,
        specs=SPECS,
        requested=decoded.requested_outputs,
        binary=decoded.binary_outputs,
    )
    length = headers.get(BINARY_HEADER)
    assert (length is not None) == (label_binary or proba_binary)
    result = tritonhttp.InferResult.from_response_body(answer, verbose=False, header_length=length)
    assert result.get_response()["id"] == "req-1"
    assert result.get_response()["model_name"] == "churn"
    labels = result.as_numpy("label")
    expected = np.where(p > 0.5, "yes", "no")
    assert [v.decode() if isinstance(v, bytes) else v for v in labels.tolist()] == expected.tolist()
    np.testing.assert_array_equal(result.as_numpy("proba_yes"), p)
    assert result.as_numpy("proba_no") is None  # not requested


def test_binary_data_output_sends_every_output_binary() -> None:
    arrays = _arrays(3)
    body, header_length = _request(arrays, True, outputs=None)
    decoded = decode_v2_infer(body, {BINARY_HEADER: str(header_length)}, SIG)
    scores = np.tile([[0.25, 0.75]], (3, 1))
    outputs = outputs_from_scores(SPECS, scores, task="classification", classes=CLASSES)
    answer, headers = encode_v2_response(
        model="m",
        version="1",
        request_id=None,
        outputs=outputs,
        specs=SPECS,
        requested=decoded.requested_outputs,
        binary=decoded.binary_outputs,
    )
    result = tritonhttp.InferResult.from_response_body(answer, header_length=headers[BINARY_HEADER])
    for spec in SPECS:
        assert "data" not in result.get_output(spec.name)
    np.testing.assert_array_equal(result.as_numpy("proba_no"), scores[:, 0])
    assert result.as_numpy("label").tolist() == [b"yes"] * 3
    assert "id" not in result.get_response()
