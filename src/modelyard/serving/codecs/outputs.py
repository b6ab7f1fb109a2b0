"""The model's outputs from its scores, and their JSON and v2 spellings.

``outputs_from_scores`` lives in :mod:`modelyard.models.outputs` (batch scoring uses it
too) and is re-exported here.
"""

from __future__ import annotations

from modelyard.models.outputs import outputs_from_scores

__all__ = ["V2_DATATYPES", "outputs_from_scores"]

#: the v2 datatype each output (and input) type is sent as
V2_DATATYPES = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
    "category": "BYTES",
    "datetime": "BYTES",
}
