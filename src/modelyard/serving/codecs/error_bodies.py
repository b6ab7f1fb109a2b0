"""Error answers in each protocol's shape.

v2 clients (tritonclient, KServe) read a string at ``"error"``, so the type and the
problems go beside it; v1 and MLflow answers use modelyard's one error shape.

>>> from modelyard.errors import InvalidInputError, Problem
>>> err = InvalidInputError("1 problem", problems=[Problem("$.inputs[0].data[1]", "number", '"x"')])
>>> v2 = msgspec.json.decode(error_body(err, protocol="v2", request_id="r1"))
>>> v2["error"], v2["type"], v2["problems"][0]["loc"], v2["id"]
('1 problem', 'invalid_input', '$.inputs[0].data[1]', 'r1')
>>> v1 = msgspec.json.decode(error_body(err, protocol="v1", request_id="r1"))
>>> v1["error"]["type"], v1["error"]["message"], v1["request_id"]
('invalid_input', '1 problem', 'r1')
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from modelyard.errors import ModelyardError

__all__ = ["error_body"]

_ENCODER = msgspec.json.Encoder()


def error_body(
    error: ModelyardError,
    *,
    protocol: Literal["v2", "v1", "mlflow"],
    request_id: str | None = None,
) -> bytes:
    """The JSON body of an error answer; the status is ``error.status``."""
    body: dict[str, Any]
    if protocol == "v2":
        body = {
            "error": error.message,
            "type": error.type,
            "problems": [p.to_dict() for p in error.problems],
        }
        if request_id is not None:
            body["id"] = request_id
    else:
        body = error.to_dict()
        if request_id is not None:
            body["request_id"] = request_id
    return _ENCODER.encode(body)
