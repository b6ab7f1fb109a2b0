"""Hostile requests against a live server: never a 500, never a dropped keep-alive for a 4xx.

Each request goes over one raw keep-alive connection (h11 on a socket); after the answer
the same connection must still answer a health probe, unless the answer said
``Connection: close`` (a 408 for a body that never arrives does).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from modelyard.config import load_settings
from modelyard.errors import InvalidInputError
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.app import create_app
from modelyard.serving.codecs import decode_v2_infer

from .conftest import NAME, LiveServer, serving

INFER = f"/v2/models/{NAME}/infer"
PREDICT = f"/v1/models/{NAME}:predict"
_SETTINGS = hyp_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """One HTTP/1.1 keep-alive connection, raw: what the client sends is sent as is."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        wanted = {"host": "127.0.0.1", "content-length": str(len(body))}
        wanted.update(headers or {})
        event = h11.Request(method=method, target=path, headers=list(wanted.items()))
        data = self.h11.send(event) or b""
        data += self.h11.send(h11.Data(data=body)) if body else b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self.sock.sendall(data)
        return self.read()

    def read(self) -> Answer:
        status, headers, chunks = 0, {}, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection without an answer")

    def still_open(self) -> bool:
        """The connection answers a health probe after the previous answer."""
        self.h11.start_next_cycle()
        return self.request("GET", "/v2/health/live").status == 200


@pytest.fixture(scope="module")
def live(
    _base_project: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("hostile") / "project"
    shutil.copytree(_base_project[0], root)
    settings = serving(load_settings(root, environ={}), body_timeout_s=1.0)
    server = LiveServer(create_app(settings, [NAME], environ={}))
    server.start()
    yield server
    server.stop()


def _send(live: LiveServer, method: str, path: str, body: bytes, **headers: str) -> Answer:
    """One request; asserts no 5xx, the JSON error shape, and the keep-alive kept."""
    conn = Conn(live.port)
    try:
        answer = conn.request(method, path, body, {"content-type": "application/json", **headers})
        assert answer.status < 500, (path, body[:200], answer.status, answer.body[:300])
        if answer.status >= 400:
            parsed = answer.json()
            assert "error" in parsed, parsed
            if path.startswith("/v2"):
                assert isinstance(parsed["error"], str) and parsed["type"], parsed
            else:
                assert parsed["error"]["type"] and parsed["error"]["message"], parsed
            assert answer.headers.get("connection") != "close", answer.headers
            assert conn.still_open(), f"keep-alive dropped after {answer.status}"
        return answer
    finally:
        conn.close()


def _v2(data: list[Any], datatype: str = "FP64", name: str = "amount") -> dict[str, Any]:
    columns = {
        "amount": ("FP64", [0.5]),
        "age": ("INT64", [33]),
        "plan": ("BYTES", ["max"]),
        "city": ("BYTES", ["lyon"]),
    }
    inputs = []
    for column, natural in columns.items():
        dtype, values = (datatype, data) if column == name else natural
        inputs.append({"name": column, "shape": [len(values)], "datatype": dtype, "data": values})
    return {"inputs": inputs}


# -- bad UTF-8 and deep nesting ----------------------------------------------------------


_BAD_UTF8 = {
    INFER: json.dumps(_v2(["@@"], "BYTES", "plan")).encode(),
    PREDICT: b'{"instances": [{"amount": 1, "age": 3, "plan": "@@", "city": "oslo"}]}',
    "/invocations": b'{"dataframe_records": [{"amount": 1, "age": 3, "plan": "@@", "city": "x"}]}',
    "/v1/feedback": b'{"request_id": "@@", "label": 1}',
}


@pytest.mark.parametrize("path", list(_BAD_UTF8))
@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"a\x80b"])
@pytest.mark.parametrize("where", ["value", "key"])
def test_bad_utf8_inside_a_json_string_is_a_400(
    live: LiveServer, path: str, bad: bytes, where: str
) -> None:
    body = _BAD_UTF8[path]
    if where == "value":
        body = body.replace(b"@@", bad)
    else:
        body = body.replace(b"@@", b"max").replace(b"{", b'{"' + bad + b'": 1, ', 1)
    answer = _send(live, "POST", path, body)
    assert answer.status == 400, answer.body
    assert "UTF-8" in answer.body.decode(), answer.body


@pytest.mark.parametrize("path", [INFER, PREDICT, "/invocations", "/v1/feedback"])
@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_json_nested_very_deep_is_a_400(live: LiveServer, path: str, depth: int) -> None:
    body = b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"
    answer = _send(live, "POST", path, body)
    assert answer.status in (400, 422), answer.body


def test_deep_nesting_with_nan_is_a_4xx(live: LiveServer) -> None:
    """The slow path looking for NaN literals must not recurse past Python's limit."""
    body = b'{"instances": [' + b"[" * 3000 + b"NaN" + b"]" * 3000 + b"]}"
    answer = _send(live, "POST", PREDICT, body)
    assert answer.status in (400, 422)


# -- the body read timeout ---------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_a_408_and_closes(live: LiveServer) -> None:
    conn = Conn(live.port)
    try:
        head = (
            f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n"
        ).encode()
        conn.send_raw(head + b'{"instances": ')
        started = time.monotonic()
        answer = conn.read()
        waited = time.monotonic() - started
        assert answer.status == 408, answer.body
        assert answer.json()["error"]["type"] == "request_timeout"
        assert answer.headers.get("connection") == "close"
        assert 0.5 < waited < 10, waited
        conn.sock.settimeout(5)
        assert conn.sock.recv(10) == b""  # and the server closed it
    finally:
        conn.close()


def test_a_slow_but_complete_body_is_answered(live: LiveServer) -> None:
    body = json.dumps(_v2([0.5])).encode()
    conn = Conn(live.port)
    try:
        head = f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
        conn.send_raw(head.encode())
        for i in range(0, len(body), 40):
            time.sleep(0.05)
            conn.send_raw(body[i : i + 40])
        assert conn.read().status == 200
    finally:
        conn.close()


# -- router errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v2/models/churn/infer/extra", 404),
        ("GET", INFER, 405),
        ("DELETE", PREDICT, 405),
        ("PUT", "/v1/feedback", 405),
    ],
)
def test_router_errors_are_json(live: LiveServer, method: str, path: str, status: int) -> None:
    answer = _send(live, method, path, b"")
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    if status == 405:
        assert "POST" in answer.headers["allow"] or "GET" in answer.headers["allow"]


# -- v2 datatypes against numpy's ranges ------------------------------------------------

_INTS = ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
_FLOATS = ["FP16", "FP32", "FP64"]
_NUMPY = {
    "BOOL": np.bool_,
    **{t: np.dtype(t.lower().replace("fp", "float")).type for t in _INTS},
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def holds(datatype: str, value: Any) -> bool:
    """The oracle: ``value`` is exactly a value of the numpy dtype the v2 datatype names."""
    if value is None:
        return True  # a missing value; whether the column allows one is another check
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    kind = _NUMPY[datatype]
    if datatype in _INTS:
        if isinstance(value, float) and not value.is_integer():
            return False
        info = np.iinfo(kind)
        return int(info.min) <= int(value) <= int(info.max)
    try:
        with np.errstate(all="ignore"):
            return bool(np.isfinite(kind(value)))
    except OverflowError:
        return False


_VALUES = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-70000, max_value=70000)
    | st.sampled_from([1.5, 2.0, -0.5, 255, 256, -129, 65504.0, 65520.0, 1e39, 3.4028235e38])
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64 - 1, 2**64, 2**31, -(2**31) - 1])
    | st.booleans()
    | st.text(max_size=3)
)


@given(datatype=st.sampled_from(_INTS + _FLOATS), value=_VALUES)
@example(datatype="INT64", value=1.5)
@example(datatype="FP32", value=1e39)
@example(datatype="FP16", value=65520.0)
@example(datatype="UINT8", value=256)
@example(datatype="INT8", value=-129)
@_SETTINGS
def test_v2_values_must_fit_their_datatype(live: LiveServer, datatype: str, value: Any) -> None:
    """A numeric tensor of the float column ``amount``: the datatype's range, by numpy."""
    body = _v2([value], datatype, "amount")
    answer = _send(live, "POST", INFER, json.dumps(body).encode())
    if holds(datatype, value) and isinstance(value, int | float) and not isinstance(value, bool):
        finite = math.isfinite(float(value)) if abs(value) < 2**1000 else False
        assert answer.status == 200 or not finite, (datatype, value, answer.body)
    else:
        assert answer.status == 422, (datatype, value, answer.body)
        locs = [p["loc"] for p in answer.json()["problems"]]
        assert "$.inputs[0].data[0]" in locs, locs


@given(datatype=st.sampled_from(_INTS + _FLOATS), value=_VALUES)
@example(datatype="INT64", value=33.5)
@example(datatype="FP64", value=33.0)
@_SETTINGS
def test_v2_int_column_values_must_fit_their_datatype(
    live: LiveServer, datatype: str, value: Any
) -> None:
    """The int column ``age``: the datatype's range, and an integer for the column."""
    body = _v2([value], datatype, "age")
    answer = _send(live, "POST", INFER, json.dumps(body).encode())
    whole = isinstance(value, int | float) and not isinstance(value, bool)
    whole = whole and float(value).is_integer() and -(2**63) <= value < 2**63
    if holds(datatype, value) and whole:
        assert answer.status == 200, (datatype, value, answer.body)
    else:
        assert answer.status == 422, (datatype, value, answer.body)
        locs = [p["loc"] for p in answer.json()["problems"]]
        assert "$.inputs[1].data[0]" in locs, locs


def test_bool_for_a_float_column_is_a_422(live: LiveServer) -> None:
    body = _v2([True], "BOOL", "amount")
    answer = _send(live, "POST", INFER, json.dumps(body).encode())
    assert answer.status == 422
    assert answer.json()["problems"][0]["loc"] == "$.inputs[0].datatype"


def test_a_bool_matrix_for_numeric_columns_is_a_422() -> None:
    """The one-matrix layout: a BOOL tensor for non-bool columns is refused too."""
    signature = Signature(
        columns=[ColumnSpec(name="x", dtype="float"), ColumnSpec(name="n", dtype="int")]
    )
    body = {"inputs": [{"name": "m", "shape": [1, 2], "datatype": "BOOL", "data": [True, False]}]}
    with pytest.raises(InvalidInputError) as caught:
        decode_v2_infer(json.dumps(body).encode(), {}, signature)
    assert caught.value.problems[0].loc == "$.inputs[0].datatype"
    flags = Signature(
        columns=[ColumnSpec(name="a", dtype="bool"), ColumnSpec(name="b", dtype="bool")]
    )
    decoded = decode_v2_infer(json.dumps(body).encode(), {}, flags)
    assert decoded.inputs is not None and decoded.inputs.columns[0].tolist() == [True]


# -- fuzz: random bytes, random JSON, deep nesting, bad UTF-8 -------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def _mangle(body: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["as is", "bad utf-8", "deep", "cut", "bytes"]))
    if kind == "bad utf-8":
        at = data.draw(st.integers(0, len(body)))
        return (
            body[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
        )
    if kind == "deep":
        depth = data.draw(st.integers(500, 20_000))
        return b"[" * depth + body + b"]" * depth
    if kind == "cut":
        return body[: data.draw(st.integers(0, len(body)))]
    if kind == "bytes":
        return data.draw(st.binary(max_size=200))
    return body


@given(
    body=_JSON
    | st.builds(
        _v2, st.lists(_JSON, max_size=2), st.sampled_from([*_INTS, *_FLOATS, "BOOL", "BYTES", "X"])
    ),
    path=st.sampled_from(
        [INFER, PREDICT, "/invocations", "/v1/feedback", f"/v2/models/{NAME}/versions/1/infer"]
    ),
    data=st.data(),
)
@_SETTINGS
def test_fuzzed_requests_never_get_a_5xx_nor_lose_the_connection(
    live: LiveServer, body: Any, path: str, data: st.DataObject
) -> None:
    raw = _mangle(json.dumps(body, allow_nan=True).encode(), data)
    _send(live, "POST", path, raw)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/nope:predict", b'{"instances": [1]}' * 1000, 404),  # body never read
        (PREDICT, b"x" * (9 * 2**20), 413),  # over max_body_bytes (8 MiB)
        (INFER, b'{"inputs": []}', 422),
    ],
)
def test_a_4xx_with_a_body_left_unread_keeps_the_connection(
    live: LiveServer, path: str, body: bytes, status: int
) -> None:
    assert _send(live, "POST", path, body).status == status
