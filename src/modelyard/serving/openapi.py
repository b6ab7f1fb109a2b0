"""The server's OpenAPI 3.1 document, with request schemas from each model's signature.

Each served model gets concrete paths (``/v1/models/churn:predict``, ...) whose request
bodies describe its columns: types, nullability, and known categories, so clients (and
schemathesis) see exactly what the server accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelyard.models.signature import ColumnSpec, Signature
from modelyard.version import __version__

if TYPE_CHECKING:
    from modelyard.serving.state import ServerState

__all__ = ["openapi_document"]

_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "datetime": "string"}
_ERROR = {
    "type": "object",
    "properties": {"error": {}},
    "required": ["error"],
}


def _column(spec: ColumnSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _TYPES.get(spec.dtype, "string")}
    if spec.dtype == "category" and spec.categories:
        schema["enum"] = list(spec.categories)
    if spec.dtype == "datetime":
        schema["format"] = "date-time"
    if spec.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _record(signature: Signature) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {c.name: _column(c) for c in signature.columns},
        "required": signature.names,
        "additionalProperties": signature.extra_columns == "ignore",
    }


def _responses(ok: str) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ERROR}}}
    return {
        "200": {"description": ok, "content": {"application/json": {"schema": {}}}},
        "400": {"description": "Malformed body", **error},
        "401": {"description": "Missing or unknown API key", **error},
        "403": {"description": "The key lacks the scope", **error},
        "404": {"description": "No such model or version", **error},
        "413": {"description": "Body too large", **error},
        "422": {"description": "The input does not match the signature", **error},
        "429": {"description": "Overloaded: retry after Retry-After seconds", **error},
        "500": {"description": "The model failed; the body names the request id", **error},
    }


_FEEDBACK = {
    "type": "object",
    "properties": {
        # a record id (X-Record-ID) or the client's request id
        "request_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "label": {},
        "row": {"type": "integer", "minimum": 0},
    },
    "required": ["request_id", "label"],
    "additionalProperties": False,
}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_TRAFFIC = {
    "type": "object",
    "properties": {
        "primary": {"type": "string"},
        "canary": {"type": ["string", "null"]},
        "canary_weight": {"type": "number", "minimum": 0, "maximum": 1},
        "sticky_key": {"type": ["string", "null"]},
        "shadow": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}


def _invocations(signature: Signature, record: dict[str, Any]) -> dict[str, Any]:
    """``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``."""
    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": signature.names}},
            "data": {"type": "array", "items": {"type": "array"}},
        },
        "required": ["columns", "data"],
    }
    records = {"type": "array", "minItems": 1, "items": record}
    return {
        "oneOf": [
            {"type": "object", "properties": {key: schema}, "required": [key]}
            for key, schema in (
                ("dataframe_split", split),
                ("dataframe_records", records),
                ("instances", records),
                ("inputs", records),
            )
        ]
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def openapi_document(state: ServerState) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": _responses("Live")}},
        "/v2/health/ready": {
            "get": {"summary": "Every model loaded and warmed", "responses": _responses("Ready")}
        },
        "/v1/feedback": {
            "post": {
                "summary": "Labels for earlier predictions, by record id or request id "
                "(one or a batch); unknown ids are reported and kept apart",
                "requestBody": _json_body(
                    {
                        "oneOf": [
                            _FEEDBACK,
                            {
                                "type": "object",
                                "properties": {
                                    "feedback": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": _FEEDBACK,
                                    }
                                },
                                "required": ["feedback"],
                                "additionalProperties": False,
                            },
                        ]
                    }
                ),
                "responses": _responses("Accepted"),
            }
        },
        "/admin/reload": {
            "post": {
                "summary": "Re-resolve every alias now; load, warm and swap what moved "
                "(scope admin)",
                "security": [{"bearer": []}],
                "responses": _responses("The swaps made"),
            }
        },
    }
    for name, deployment in sorted(state.deployments.items()):
        primary = deployment.primary
        if primary is None:
            continue
        signature = primary.model.signature
        record = _record(signature)
        row = {
            "type": "array",
            "prefixItems": [_column(c) for c in signature.columns],
            "minItems": len(signature.columns),
            "maxItems": len(signature.columns),
        }
        instances = {"type": "array", "minItems": 1, "items": {"anyOf": [record, row]}}
        entity = {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": ["string", "number", "integer", "boolean", "null"]},
        }
        v1_body: dict[str, Any] = {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"instances": instances},
                    "required": ["instances"],
                },
                {
                    "type": "object",
                    "description": "Entity keys and request fields; the server looks the "
                    "model's feature service up in the online store",
                    "properties": {
                        "entities": {"type": "array", "minItems": 1, "items": entity},
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "as_of": {
                                    "type": "string",
                                    "format": "date-time",
                                    "description": "serving.replay only: the time to serve at",
                                }
                            },
                        },
                    },
                    "required": ["entities"],
                },
            ]
        }
        tensor = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": signature.names},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string"},
                "data": {"type": "array"},
            },
            "required": ["name", "shape", "datatype", "data"],
        }
        v2_body = {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": tensor},
            },
            "required": ["inputs"],
        }
        paths[f"/v1/models/{name}:predict"] = {
            "post": {
                "summary": f"Predict with {name} (KServe v1)",
                "requestBody": _json_body(v1_body),
                "responses": _responses("Predictions"),
            }
        }
        paths[f"/v2/models/{name}/infer"] = {
            "post": {
                "summary": f"Infer with {name} (Open Inference Protocol v2)",
                "requestBody": _json_body(v2_body),
                "responses": _responses("Outputs"),
            }
        }
        paths[f"/v2/models/{name}/versions/{{version}}/infer"] = {
            "post": {
                "summary": f"Infer with one version of {name}, whatever the traffic policy",
                "parameters": [_VERSION],
                "requestBody": _json_body(v2_body),
                "responses": _responses("Outputs"),
            }
        }
        paths[f"/v2/models/{name}"] = {
            "get": {"summary": f"Metadata of {name}", "responses": _responses("Metadata")}
        }
        paths[f"/v2/models/{name}/versions/{{version}}"] = {
            "get": {
                "summary": f"Metadata of one version of {name}",
                "parameters": [_VERSION],
                "responses": _responses("Metadata"),
            }
        }
        paths[f"/admin/models/{name}/traffic"] = {
            "get": {
                "summary": f"The traffic policy of {name} (scope admin)",
                "security": [{"bearer": []}],
                "responses": _responses("Policy"),
            },
            "put": {
                "summary": f"Change the traffic policy of {name} (scope admin)",
                "security": [{"bearer": []}],
                "requestBody": _json_body(_TRAFFIC),
                "responses": _responses("Policy and the swaps it caused"),
            },
        }
        if len(state.deployments) == 1:
            paths["/invocations"] = {
                "post": {
                    "summary": f"Predict with {name} (MLflow scoring protocol)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _invocations(signature, record)},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": _responses("Predictions"),
                }
            }
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelyard model server", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
