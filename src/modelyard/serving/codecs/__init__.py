"""Wire codecs of the model server: request bodies to checked ``Inputs``, outputs to bodies.

No pandas on this path: JSON is decoded by msgspec, values are checked against the
model's signature (every problem with its JSON path, up to 20 in one 422) and turned into
numpy arrays in signature order.

=================  ================================  ======================================
protocol           decode                            encode
=================  ================================  ======================================
KServe v2 (OIP)    :func:`decode_v2_infer`           :func:`encode_v2_response`,
                                                     :func:`v2_model_metadata`
KServe v1          :func:`decode_v1_predict`         :func:`encode_v1_response`
MLflow             :func:`decode_invocations`        :func:`encode_invocations_response`
=================  ================================  ======================================

Errors: :class:`MalformedRequest` (400), :class:`UnsupportedMediaType` (415),
``InvalidInputError`` (422); :func:`error_body` spells any of them for a protocol.
"""

from __future__ import annotations

from modelyard.serving.codecs.checks import check_values
from modelyard.serving.codecs.error_bodies import error_body
from modelyard.serving.codecs.mlflow import decode_invocations, encode_invocations_response
from modelyard.serving.codecs.outputs import V2_DATATYPES, outputs_from_scores
from modelyard.serving.codecs.problems import (
    MAX_PROBLEMS,
    MalformedRequest,
    UnsupportedMediaType,
    short_repr,
)
from modelyard.serving.codecs.request import DecodedRequest
from modelyard.serving.codecs.v1 import decode_v1_predict, encode_v1_response
from modelyard.serving.codecs.v2 import decode_v2_infer
from modelyard.serving.codecs.v2_binary import HEADER as BINARY_HEADER
from modelyard.serving.codecs.v2_response import (
    check_requested_outputs,
    encode_v2_response,
    v2_model_metadata,
)

__all__ = [
    "BINARY_HEADER",
    "MAX_PROBLEMS",
    "V2_DATATYPES",
    "DecodedRequest",
    "MalformedRequest",
    "UnsupportedMediaType",
    "check_requested_outputs",
    "check_values",
    "decode_invocations",
    "decode_v1_predict",
    "decode_v2_infer",
    "encode_invocations_response",
    "encode_v1_response",
    "encode_v2_response",
    "error_body",
    "outputs_from_scores",
    "short_repr",
    "v2_model_metadata",
]
