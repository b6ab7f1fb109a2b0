"""The HTTP app: KServe v2 and v1, MLflow ``/invocations``, feedback, metrics, admin.

A prediction request goes: body (bounded; 413 past ``max_body_bytes``) -> decode and
check against the signature (400/422 naming each problem) -> optional online feature
lookup (v1 ``entities``) -> route (primary, or canary by weight; shadow gets a copy) ->
model (inline when it is fast, else through the micro-batcher; 429 when overloaded) ->
encode -> the prediction log (durable: the answer leaves after its record is on disk).
A model exception is a 500 with the request id, logged with its traceback. No pandas.

``create_app(settings, targets)`` builds the app for one worker; ``app_from_env`` is the
factory ``modelyard serve`` hands to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.config import Settings, TrafficSettings, load_settings
from modelyard.errors import InvalidInputError, ModelError, ModelyardError, NotFoundError
from modelyard.features.online import FeatureStatus
from modelyard.models.runtimes import Inputs
from modelyard.serving.batching import LoopBatcher, Overloaded
from modelyard.serving.codecs import (
    DecodedRequest,
    check_values,
    decode_invocations,
    decode_v1_predict,
    decode_v2_infer,
    encode_invocations_response,
    encode_v1_response,
    encode_v2_response,
    error_body,
    v2_model_metadata,
)
from modelyard.serving.codecs.columns import allows_null
from modelyard.serving.codecs.feedback import (
    FeedbackItem,
    Target,
    check_label,
    decode_feedback,
    refuse_unknown_shape,
)
from modelyard.serving.codecs.jsonbody import decode_json
from modelyard.serving.codecs.problems import ProblemList, short_repr
from modelyard.serving.codecs.tables import inputs_from_table
from modelyard.serving.compactor import compact_periodically, ship_on_exit
from modelyard.serving.deployments import Deployment, Served, Slot
from modelyard.serving.metrics import CONTENT_TYPE_LATEST
from modelyard.serving.openapi import openapi_document
from modelyard.serving.signatures import adapt
from modelyard.serving.state import ServerState
from modelyard.store.predlog import (
    MAX_CLIENT_ID,
    ErrorRecord,
    FeedbackRecord,
    PredictionRecord,
    find_records,
)
from modelyard.store.predlog.shipping import shipped_log
from modelyard.version import __version__

__all__ = ["app_from_env", "create_app"]

logger = logging.getLogger("modelyard.serving")
Protocol = Literal["v2", "v1", "mlflow"]
JSON = "application/json"
_ENCODER = msgspec.json.Encoder()
SPEC_ENV = "MODELYARD_SERVE_SPEC"
#: unknown and ambiguous ids listed in a feedback answer (all are counted)
_SHOWN = 5
#: the ``model`` label of requests naming no served model (labels never come from a URL)
UNKNOWN_MODEL = "_unknown"


class PayloadTooLarge(ModelyardError):
    status: ClassVar[int] = 413
    type: ClassVar[str] = "payload_too_large"


class RequestTimeout(ModelyardError):
    """The body did not arrive within ``serving.body_timeout_s``: 408, connection closed."""

    status: ClassVar[int] = 408
    type: ClassVar[str] = "request_timeout"


class MethodNotAllowed(ModelyardError):
    status: ClassVar[int] = 405
    type: ClassVar[str] = "method_not_allowed"


def _client_id(value: str | None, loc: str) -> str | None:
    """A client's request id, refused (422 naming where it came from) when too long."""
    if value and len(value) > MAX_CLIENT_ID:
        raise InvalidInputError(
            f"Expected a request id of at most {MAX_CLIENT_ID} characters, got {len(value)}",
            loc=loc,
        )
    return value or None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(data), status_code=status, media_type=JSON, headers=headers)


def _if_match(header: str | None) -> int | None:
    """The policy version an ``If-Match`` header names (``"3"`` or ``3``); None without one."""
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidInputError(
            f"Expected If-Match to be a traffic policy version (a whole number >= 0, as "
            f"the ETag of GET), got {header[:40]!r}",
            loc="If-Match",
        )
    return int(text)


def _error(exc: ModelyardError, protocol: Protocol, request_id: str | None) -> Response:
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body may still be on its way
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return Response(
        error_body(exc, protocol=protocol, request_id=request_id),
        status_code=exc.status,
        media_type=JSON,
        headers=headers,
    )


async def _body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body: 413 past ``limit`` bytes, 408 when it takes over ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Expected a body of at most {limit} bytes, got {declared}")
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Expected a body of at most {limit} bytes, got more")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"Expected the whole body ({declared or 'chunked'} bytes) within {timeout_s:g} s "
            f"(serving.body_timeout_s), got {size} bytes"
        ) from None
    return b"".join(chunks)


def _scalars(values: np.ndarray) -> list[Any]:
    if values.dtype.kind == "M":
        return [None if np.isnat(v) else str(v) for v in values]
    return values.tolist()  # type: ignore[no-any-return]


def _columns(inputs: Inputs) -> dict[str, list[Any]]:
    return {name: _scalars(col) for name, col in zip(inputs.names, inputs.columns, strict=True)}


class Server:
    """The route handlers over one worker's ``ServerState``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.limits = state.settings.serving
        self._targets: dict[tuple[str, int], Target] = {}
        #: prediction requests between arrival and answer (a lone one skips the batcher)
        self._in_flight = 0

    # -- helpers ---------------------------------------------------------------------

    def _deployment(self, name: str) -> Deployment:
        found = self.state.deployments.get(name)
        if found is None:
            known = ", ".join(sorted(self.state.deployments)) or "none"
            raise NotFoundError(f"No model named {name!r} is served here. Served: {known}.")
        return found

    def _served(self, name: str, version: str | None) -> tuple[Deployment, Served | None]:
        deployment = self._deployment(name)
        if version is None:
            return deployment, None
        if not (version.isascii() and version.isdigit()):  # "¹" is a digit to isdigit()
            raise InvalidInputError(
                f"Expected a version number, got {version[:40]!r}", loc="version"
            )
        served = deployment.by_version(int(version))
        if served is None:
            live = ", ".join(str(s.model.version) for _, s in deployment.slots()) or "none"
            raise NotFoundError(f"{name} v{version} is not served here. Served versions: {live}.")
        return deployment, served

    def _auth(self, request: Request, scope: str) -> None:
        self._auth_name(request, scope)

    def _auth_name(self, request: Request, scope: str) -> str | None:
        """The name of the request's key allowed ``scope`` (None: open); 401/403 else."""
        header = request.headers.get("authorization") or request.headers.get("x-api-key")
        return self.state.keys.check(header, scope)

    def _sticky(self, deployment: Deployment, request: Request, decoded: DecodedRequest) -> Any:
        key = deployment.policy.sticky_key
        if key is None:
            return None
        if key.startswith("header:"):
            return request.headers.get(key[7:])
        if decoded.entities is not None and key in decoded.entities:
            return str(decoded.entities[key][0])
        if decoded.inputs is not None and key in decoded.inputs.names:
            return str(decoded.inputs.columns[decoded.inputs.names.index(key)][0])
        return None

    def _as_of(self, decoded: DecodedRequest) -> datetime | None:
        """A replay request's ``parameters.as_of``: the time it is served at."""
        if "as_of" not in decoded.parameters:
            return None
        raw = decoded.parameters["as_of"]
        loc = "$.parameters.as_of"
        if not self.limits.replay:
            raise InvalidInputError(
                "as_of is only accepted when the server replays past traffic "
                "(serving.replay: true in modelyard.yaml)",
                loc=loc,
            )
        if decoded.entities is None:
            raise InvalidInputError("as_of applies to 'entities' requests only", loc=loc)
        if isinstance(raw, str):
            try:
                when = datetime.fromisoformat(raw)
            except ValueError:
                when = None
            if when is not None and when.tzinfo is not None:
                return when.astimezone(UTC)
        raise InvalidInputError(
            f"Expected an ISO-8601 time with a zone, like 2013-03-01T08:00:00Z, "
            f"got {short_repr(raw)}",
            loc=loc,
        )

    def _lookup(
        self, served: Served, entities: dict[str, list[Any]], as_of: datetime | None = None
    ) -> tuple[Inputs, dict[str, list[Any]]]:
        """Inputs for an entity request: request fields plus the model's looked-up features."""
        service = served.model.feature_service
        if service is None:
            raise InvalidInputError(
                f"{served.model.name} v{served.model.version} was not trained on a feature "
                "service, so it cannot look features up by entity key; send 'instances'",
                loc="$.entities",
            )
        found = self.state.features.lookup(service, entities, as_of)
        features = {ref: found.values[ref].to_pylist() for ref in found.refs}
        columns: dict[str, Any] = dict(entities)
        signature = served.model.signature
        specs = {spec.name: spec for spec in signature.columns}
        problems = ProblemList()
        for ref in found.refs:
            name = ref.partition(":")[2]
            if name in columns:
                continue  # the request's own field wins
            columns[name] = features[ref]
            spec = specs.get(name)
            if spec is None or allows_null(signature, spec):
                continue
            for row in np.flatnonzero(found.status[ref] != FeatureStatus.PRESENT)[:5]:
                status = FeatureStatus(int(found.status[ref][row])).name.lower()
                problems.add(
                    f"$.entities[{row}]",
                    f"a value of {ref} (the model's {name!r} may not be null)",
                    f"a {status} feature (see `modelyard features online`)",
                    raw=True,
                )
        problems.raise_if_any()
        wanted = {name: columns[name] for name in signature.names if name in columns}
        inputs = inputs_from_table(signature, wanted, "$.entities", max_rows=self.limits.max_rows)
        return inputs, features

    async def _predict(
        self, served: Served, inputs: Inputs
    ) -> tuple[dict[str, np.ndarray], float, float]:
        """Outputs, seconds queued and seconds predicting."""
        start = time.perf_counter()
        batcher = served.batcher
        try:
            if isinstance(batcher, LoopBatcher) and self._in_flight == 1:
                # alone: no other request is in this worker to share the call with
                outputs = batcher.call_now(inputs)
            elif batcher is not None:
                outputs, queued = await batcher.submit_timed(inputs)
                return outputs, queued, time.perf_counter() - start - queued
            else:
                outputs = served.model.predict(inputs)
        except ModelyardError:
            raise
        except Exception as exc:  # deliberate: any model failure is a 500, never a crash
            raise ModelError(
                f"{served.model.name} v{served.model.version} failed to predict: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return outputs, 0.0, time.perf_counter() - start

    def _shadow(
        self,
        deployment: Deployment,
        pinned: Served | None,
        decoded: DecodedRequest,
        as_of: datetime | None,
        request_id: str,
        arrived_us: int,
    ) -> None:
        """A copy of the request for the shadow, read with the shadow's own signature."""
        shadow = deployment.shadow
        if shadow is None or (pinned is not None and pinned is not deployment.primary):
            return

        async def mirror() -> None:
            start = time.perf_counter()
            try:
                features = None
                if decoded.inputs is None:
                    assert decoded.entities is not None  # the decoder gives one or the other
                    inputs, features = await asyncio.to_thread(
                        self._lookup, shadow, decoded.entities, as_of
                    )
                else:
                    inputs = adapt(decoded.inputs, shadow.model.signature)
                logged = _columns(inputs)
                for key, values in (decoded.entities or {}).items():
                    logged.setdefault(key, values)
                outputs = await asyncio.to_thread(shadow.model.predict, inputs)
                await self.state.log.append(
                    self._record(
                        shadow, "shadow", request_id, arrived_us, logged, features, outputs, start
                    )
                )
            except Exception:  # deliberate: a shadow never affects the answer
                logger.exception("Shadow %s v%s failed", deployment.name, shadow.model.version)

        task = asyncio.get_running_loop().create_task(mirror())
        self.state.background.add(task)
        task.add_done_callback(self.state.background.discard)

    def _record(
        self,
        served: Served,
        route: str,
        request_id: str,
        arrived_us: int,
        inputs: dict[str, list[Any]],
        features: dict[str, list[Any]] | None,
        outputs: dict[str, np.ndarray],
        start: float,
        record_id: str | None = None,
    ) -> PredictionRecord:
        """The log record; ``inputs`` holds the model's inputs and any entity keys.

        ``record_id`` is unique per prediction: a fresh one unless given (a shadow's copy
        gets its own; its ``request_id`` is the request's, so labels reach it too).
        """
        return PredictionRecord(
            record_id=record_id or uuid.uuid4().hex,
            request_id=request_id,
            time_us=arrived_us,
            model=served.model.name,
            version=served.model.version,
            rows=len(next(iter(inputs.values()), ())),
            inputs=inputs,
            outputs={k: _scalars(v) for k, v in outputs.items()},
            latency_us=int((time.perf_counter() - start) * 1e6),
            features=features,
            route=route,
        )

    async def _log_error(
        self,
        exc: ModelyardError | None,
        protocol: Protocol,
        model: str,
        served: tuple[int, str] | None,
        ids: tuple[str, str],
        arrived_us: int,
        start: float,
    ) -> None:
        """Log a request answered with an error status (``exc``; None: an unexpected one).

        ``served`` is the (version, route) chosen, None when the request failed before;
        ``ids`` the record id and the client's request id. Only what failed and how is
        kept, never the body. A failure to log never changes the answer: it is logged.
        """
        record = ErrorRecord(
            record_id=ids[0],
            request_id=ids[1],
            time_us=arrived_us,
            model=model,
            protocol=protocol,
            status=ModelError.status if exc is None else exc.status,
            error=ModelError.type if exc is None else exc.type,
            latency_us=int((time.perf_counter() - start) * 1e6),
            version=None if served is None else served[0],
            route=None if served is None else served[1],
        )
        try:
            await self.state.log.append_error(record)
        except Exception:  # deliberate: the error answer stands whatever the log does
            logger.warning("request %s: could not log its error answer", ids[1], exc_info=True)

    async def _serve(
        self,
        request: Request,
        protocol: Protocol,
        name: str,
        version: str | None,
        decode: Callable[[bytes, Request, Served], DecodedRequest],
        encode: Callable[[Served, str, DecodedRequest, dict[str, np.ndarray]], Response],
    ) -> Response:
        self._in_flight += 1
        try:
            return await self._answer(request, protocol, name, version, decode, encode)
        finally:
            self._in_flight -= 1

    async def _answer(
        self,
        request: Request,
        protocol: Protocol,
        name: str,
        version: str | None,
        decode: Callable[[bytes, Request, Served], DecodedRequest],
        encode: Callable[[Served, str, DecodedRequest, dict[str, np.ndarray]], Response],
    ) -> Response:
        start = time.perf_counter()
        arrived_us = time.time_ns() // 1000
        record_id = uuid.uuid4().hex  # the server's: unique, whatever id the client reuses
        request_id = record_id
        metrics = self.state.metrics
        model_label = name if name in self.state.deployments else UNKNOWN_MODEL
        version_label = ""
        chosen: tuple[int, str] | None = None  # (version, route) once a version is chosen
        try:
            request_id = (
                _client_id(request.headers.get("x-request-id"), "X-Request-ID") or record_id
            )
            self._auth(request, "predict")
            deployment, pinned = self._served(name, version)
            if pinned is not None:
                version_label = str(pinned.model.version)
                chosen = (pinned.model.version, "primary")
            body = await _body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
            t0 = time.perf_counter()
            # a pinned version reads the body with its own signature; otherwise the
            # primary's (the one GET /v2/models/NAME publishes), then by name below
            decoded = decode(body, request, pinned or deployment.require_primary())
            if protocol == "v2" and decoded.request_id:
                request_id = _client_id(decoded.request_id, "$.id") or request_id
            sticky = self._sticky(deployment, request, decoded)
            slot: Slot
            if pinned is not None:
                slot, served = "primary", pinned
            else:
                slot, served = deployment.choose(sticky)
            version_label = str(served.model.version)
            chosen = (served.model.version, slot)
            t1 = time.perf_counter()
            features = None
            as_of = self._as_of(decoded)
            if as_of is not None:
                arrived_us = int(as_of.timestamp() * 1_000_000)
            if decoded.inputs is None:
                assert decoded.entities is not None  # the decoder gives one or the other
                # the online store is I/O (Redis, SQLite): never on the event loop's thread
                inputs, features = await asyncio.to_thread(
                    self._lookup, served, decoded.entities, as_of
                )
            else:
                inputs = adapt(decoded.inputs, served.model.signature)
            t2 = time.perf_counter()
            problems = check_values(served.model.signature, inputs, mode=self.limits.value_checks)
            if problems and self.limits.value_checks == "warn":
                logger.warning(
                    "%s v%s request %s: %d value(s) outside the training data",
                    name,
                    served.model.version,
                    request_id,
                    len(problems),
                )
            t3 = time.perf_counter()
            outputs, queued, predicted = await self._predict(served, inputs)
            logged = _columns(inputs)
            if decoded.entities is not None:  # the keys too, for skew checks and joins
                for key, values in decoded.entities.items():
                    logged.setdefault(key, values)
            self._shadow(deployment, pinned, decoded, as_of, request_id, arrived_us)
            t4 = time.perf_counter()
            response = encode(served, request_id, decoded, outputs)
            t5 = time.perf_counter()
            await self.state.log.append(
                self._record(
                    served,
                    slot,
                    request_id,
                    arrived_us,
                    logged,
                    features,
                    outputs,
                    start,
                    record_id,
                )
            )
            t6 = time.perf_counter()
        except ModelyardError as exc:
            if exc.status >= 500:
                logger.error("request %s to %s failed: %s", request_id, name, exc, exc_info=exc)
            metrics.errors.labels(model_label, exc.type).inc()
            metrics.requests.labels(model_label, version_label, protocol, str(exc.status)).inc()
            ids = (record_id, request_id)
            await self._log_error(exc, protocol, model_label, chosen, ids, arrived_us, start)
            return _error(exc, protocol, request_id)
        except Exception:  # answered by ``_crash`` as a 500: logged here first, re-raised
            ids = (record_id, request_id)
            await self._log_error(None, protocol, model_label, chosen, ids, arrived_us, start)
            raise
        metrics.answered(model_label, version_label, protocol, slot).observe(
            (t1 - t0, t2 - t1, t3 - t2, queued, predicted, t5 - t4, t6 - t5), inputs.rows
        )
        response.headers["X-Request-ID"] = request_id
        response.headers["X-Record-ID"] = record_id
        response.headers["X-Model-Version"] = version_label
        return response

    # -- v2 --------------------------------------------------------------------------

    async def v2_infer(self, request: Request) -> Response:
        def decode(body: bytes, req: Request, served: Served) -> DecodedRequest:
            return decode_v2_infer(
                body, req.headers, served.model.signature, max_rows=self.limits.max_rows
            )

        def encode(
            served: Served, request_id: str, decoded: DecodedRequest, outputs: dict[str, Any]
        ) -> Response:
            body, headers = encode_v2_response(
                model=served.model.name,
                version=str(served.model.version),
                request_id=decoded.request_id,
                outputs=outputs,
                specs=served.model.specs,
                requested=decoded.requested_outputs,
                binary=decoded.binary_outputs,
            )
            media = headers.pop("content-type", JSON)
            return Response(body, media_type=media, headers=headers)

        params = request.path_params
        return await self._serve(
            request, "v2", params["name"], params.get("version"), decode, encode
        )

    async def v2_model(self, request: Request) -> Response:
        params = request.path_params
        try:
            deployment, pinned = self._served(params["name"], params.get("version"))
            served = pinned or deployment.require_primary()
            versions = [str(s.model.version) for _, s in deployment.slots()]
            body = v2_model_metadata(
                name=deployment.name,
                versions=versions,
                platform=f"modelyard-{served.model.manifest.flavor}",
                signature=served.model.signature,
                specs=served.model.specs,
            )
        except ModelyardError as exc:
            return _error(exc, "v2", None)
        return Response(body, media_type=JSON)

    async def v2_model_ready(self, request: Request) -> Response:
        params = request.path_params
        try:
            deployment, pinned = self._served(params["name"], params.get("version"))
        except ModelyardError as exc:
            return _error(exc, "v2", None)
        ready = pinned is not None or deployment.ready
        return _json({"name": deployment.name, "ready": ready}, 200 if ready else 503)

    async def live(self, _: Request) -> Response:
        return _json({"live": True})

    async def ready(self, _: Request) -> Response:
        deployments = self.state.deployments.values()
        ready = bool(deployments) and all(d.ready for d in deployments)
        if ready:
            return _json({"ready": True})
        waiting = [d.name for d in deployments if not d.ready]
        reason = (
            f"Not ready: waiting for {', '.join(waiting)}" if waiting else "Not ready: no models"
        )
        errors = [e for d in deployments for e in d.errors.values()]
        return _json({"error": reason, "ready": False, "load_errors": errors}, 503)

    async def server_metadata(self, _: Request) -> Response:
        return _json(
            {"name": "modelyard", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    # -- v1 and MLflow ---------------------------------------------------------------

    async def v1_predict(self, request: Request) -> Response:
        def decode(body: bytes, _: Request, served: Served) -> DecodedRequest:
            return decode_v1_predict(body, served.model.signature, max_rows=self.limits.max_rows)

        def encode(
            served: Served, request_id: str, _: DecodedRequest, outputs: dict[str, Any]
        ) -> Response:
            body = encode_v1_response(
                model=served.model.name,
                version=str(served.model.version),
                request_id=request_id,
                outputs=outputs,
                specs=served.model.specs,
                task=served.model.manifest.task,
            )
            return Response(body, media_type=JSON)

        name = request.path_params["name"]
        return await self._serve(request, "v1", name, None, decode, encode)

    async def v1_model(self, request: Request) -> Response:
        try:
            deployment = self._deployment(request.path_params["name"])
        except ModelyardError as exc:
            return _error(exc, "v1", None)
        primary = deployment.primary
        return _json(
            {
                "name": deployment.name,
                "ready": deployment.ready,
                "version": None if primary is None else primary.model.version,
            },
            200 if deployment.ready else 503,
        )

    async def invocations(self, request: Request) -> Response:
        name = request.query_params.get("model")
        if name is None:
            if len(self.state.deployments) != 1:
                known = ", ".join(sorted(self.state.deployments)) or "none"
                error = InvalidInputError(
                    f"Several models are served ({known}); say which with ?model=NAME",
                    loc="model",
                )
                record_id = uuid.uuid4().hex
                ids = (record_id, record_id)
                now_us, start = time.time_ns() // 1000, time.perf_counter()
                await self._log_error(error, "mlflow", UNKNOWN_MODEL, None, ids, now_us, start)
                return _error(error, "mlflow", None)
            name = next(iter(self.state.deployments))

        def decode(body: bytes, req: Request, served: Served) -> DecodedRequest:
            return decode_invocations(
                body,
                req.headers.get("content-type"),
                served.model.signature,
                max_rows=self.limits.max_rows,
            )

        def encode(served: Served, _: str, __: DecodedRequest, outputs: dict[str, Any]) -> Response:
            body = encode_invocations_response(
                outputs=outputs, specs=served.model.specs, task=served.model.manifest.task
            )
            return Response(body, media_type=JSON)

        return await self._serve(request, "mlflow", name, None, decode, encode)

    async def ping(self, request: Request) -> Response:
        ready = await self.ready(request)
        return Response(b"\n", status_code=ready.status_code)

    # -- feedback --------------------------------------------------------------------

    def _target(self, model: str, version: int) -> Target:
        """What ``model`` v``version`` predicts (runs off the event loop: may read the registry)."""
        key = (model, version)
        if key not in self._targets:
            deployment = self.state.deployments.get(model)
            served = None if deployment is None else deployment.by_version(version)
            try:
                manifest = (
                    served.model.manifest
                    if served is not None
                    else self.state.registry.manifest(f"{model}/{version}")
                )
            except NotFoundError:
                return Target(task="other")  # a version since deleted: any scalar label
            classes = None if manifest.classes is None else tuple(manifest.classes)
            self._targets[key] = Target(task=manifest.task, classes=classes)
        return self._targets[key]

    def _match_feedback(
        self, items: list[FeedbackItem], now: int, batch: bool
    ) -> tuple[list[FeedbackRecord], list[FeedbackRecord], list[str], list[str]]:
        """Labels per matched record, labels for unknown ids, unknown and ambiguous ids."""
        ids = {item.request_id for item in items}
        found = self.state.log.recent.complete(ids)  # record ids this worker made: no scan
        shipped = shipped_log(self.state.settings)  # other replicas' records too
        found |= find_records(self.state.log.root, ids - found.keys(), shipped)
        problems = ProblemList()
        matched: list[FeedbackRecord] = []
        unmatched: list[FeedbackRecord] = []
        unknown: list[str] = []
        ambiguous: list[str] = []
        for i, item in enumerate(items):
            loc = f"$.feedback[{i}].label" if batch else "$.label"
            refs = found[item.request_id]
            if not refs:
                refuse_unknown_shape(item.label, loc)
                unknown.append(item.request_id)
                unmatched.append(
                    FeedbackRecord(
                        request_id=item.request_id, label=item.label, time_us=now, row=item.row
                    )
                )
                continue
            if len({r.record_id for r in refs}) > 1:
                ambiguous.append(item.request_id)
            for ref in refs:
                target = self._target(ref.model, ref.version)
                check_label(item.label, item.row, ref.rows, target, loc, problems)
                matched.append(
                    FeedbackRecord(
                        request_id=item.request_id,
                        record_id=ref.record_id,
                        label=item.label,
                        time_us=now,
                        row=item.row,
                    )
                )
        problems.raise_if_any()
        return matched, unmatched, unknown, ambiguous

    async def feedback(self, request: Request) -> Response:
        """Labels for earlier predictions, by record id or the client's request id.

        Every record an id names is labelled (a reused client id labels each of its
        records, and is reported under ``ambiguous``); labels for ids no record has are
        kept apart and reported under ``unknown``, never joined.
        """
        try:
            self._auth(request, "predict")
            body = await _body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
            items, batch = decode_feedback(body)
            now = time.time_ns() // 1000
            matched, unmatched, unknown, ambiguous = await asyncio.to_thread(
                self._match_feedback, items, now, batch
            )
            # submitted together, so a batch of labels shares one group commit
            log = self.state.log
            await asyncio.gather(
                *(log.append_feedback(record) for record in matched),
                *(log.append_unmatched_feedback(record) for record in unmatched),
            )
        except ModelyardError as exc:
            return _error(exc, "v1", None)
        return _json(
            {
                "accepted": len(items) - len(unknown),
                "records": len(matched),
                "unknown": {"count": len(unknown), "request_ids": unknown[:_SHOWN]},
                "ambiguous": {"count": len(ambiguous), "request_ids": ambiguous[:_SHOWN]},
            }
        )

    # -- operations ------------------------------------------------------------------

    async def metrics(self, _: Request) -> Response:
        return Response(self.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, _: Request) -> Response:
        return _json(openapi_document(self.state))

    async def admin_reload(self, request: Request) -> Response:
        try:
            self._auth(request, "admin")
            changes = await self.state.refresh()
        except ModelyardError as exc:
            return _error(exc, "v1", None)
        return _json({"changes": changes})

    async def admin_traffic(self, request: Request) -> Response:
        """GET: the policy served now, its stored version in ``ETag``. PUT: store a new
        one for every replica (``If-Match: VERSION`` for compare-and-set, 409 when it
        moved; ``?reason=`` goes to the audit trail, the API key's name is the actor)."""
        try:
            key = self._auth_name(request, "admin")
            deployment = self._deployment(request.path_params["name"])
            if request.method == "GET":
                return _json(
                    msgspec.to_builtins(deployment.policy),
                    headers={"ETag": f'"{self.state.policy_version(deployment.name)}"'},
                )
            expected = _if_match(request.headers.get("if-match"))
            body = await _body(request, 64 * 1024, self.limits.body_timeout_s)
            raw = decode_json(body)
            try:
                policy = msgspec.convert(raw, type=TrafficSettings)
            except msgspec.ValidationError as exc:
                raise InvalidInputError(f"Bad traffic policy: {exc}") from exc
            stored = await asyncio.to_thread(
                functools.partial(
                    self.state.set_traffic,
                    deployment.name,
                    policy,
                    actor=f"api:{key}" if key else "api",
                    reason=request.query_params.get("reason"),
                    expected_version=expected,
                )
            )
            changes = await self.state.refresh()
        except ModelyardError as exc:
            return _error(exc, "v1", None)
        return _json(
            {
                "policy": msgspec.to_builtins(stored.policy),
                "version": stored.version,
                "changes": changes,
            },
            headers={"ETag": f'"{stored.version}"'},
        )


def create_app(
    settings: Settings,
    targets: Sequence[str] = (),
    *,
    trust: bool = False,
    environ: dict[str, str] | None = None,
    freeze_heap: bool = False,
) -> Starlette:
    """The server app for one worker: loads the targets (or every production model).

    ``freeze_heap`` (``modelyard serve``'s worker processes): see ``_freeze_heap``; an app
    run inside another program leaves that program's garbage collector alone.
    """
    state = ServerState.create(settings, targets, environ=environ, trust=trust)
    server = Server(state)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        _pin_threads()
        await state.start()
        if freeze_heap:
            _freeze_heap()
        interval = settings.serving.compact_interval_s
        compactor = (
            asyncio.get_running_loop().create_task(
                compact_periodically(state.log, interval, settings)
            )
            if interval > 0
            else None
        )
        try:
            yield
        finally:
            if compactor is not None:
                compactor.cancel()
            await state.stop()
            if interval > 0:
                try:
                    await ship_on_exit(state.log, settings)
                except Exception:  # deliberate: the records stay on disk for the next start
                    logger.exception("Shipping the prediction log on the way out failed")

    routes = [  # the prediction routes first: a request is matched against each in turn
        Route("/v1/models/{name}:predict", server.v1_predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", server.v2_infer, methods=["POST"]),
        Route("/invocations", server.invocations, methods=["POST"]),
        Route("/v2", server.server_metadata, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/v2/models/{name}", server.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", server.v2_infer, methods=["POST"]),
        Route("/v1/models/{name}", server.v1_model, methods=["GET"]),
        Route("/v1/feedback", server.feedback, methods=["POST"]),
        Route("/ping", server.ping, methods=["GET"]),
        Route("/health", server.ping, methods=["GET"]),
        Route("/metrics", server.metrics, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route("/admin/reload", server.admin_reload, methods=["POST"]),
        Route("/admin/models/{name}/traffic", server.admin_traffic, methods=["GET", "PUT"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, 500: _crash},
    )
    app.state.server = state
    return app


def _freeze_heap() -> None:
    """Move every object alive after start-up (the models, the libraries) out of the
    garbage collector's reach: a full collection then scans only what requests made.

    Without it each full collection walked the whole heap of scikit-learn, ONNX Runtime
    and pyarrow objects on the event loop's thread: a stall of about 200 ms every few
    seconds under load (the p99 at concurrency 32).
    """
    gc.collect()
    gc.freeze()


def _pin_threads() -> None:
    """One thread per native pool in this worker (see ``server.py`` for why)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return
    threadpool_limits(1)


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's 404 and 405 (and any other HTTPException) in the one error shape."""
    assert isinstance(exc, HTTPException)
    error: ModelyardError
    if exc.status_code == 404:
        error = NotFoundError(f"No endpoint at {request.url.path[:200]!r}; see /openapi.json")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"Expected one of {allowed or 'the listed methods'} at {request.url.path[:200]!r}, "
            f"got {request.method[:20]}"
        )
    else:
        error = ModelyardError(str(exc.detail)[:200])
    protocol: Protocol = "v2" if request.url.path.startswith("/v2") else "v1"
    response = _error(error, protocol, None)
    response.status_code = exc.status_code
    response.headers.update(exc.headers or {})
    return response


async def _crash(request: Request, exc: Exception) -> Response:
    """The last line: an unexpected error is a 500 in the one error shape, logged."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    logger.error("request %s failed", request_id, exc_info=exc)
    error = ModelError(f"Internal error ({type(exc).__name__}); request id {request_id}")
    protocol: Protocol = "v2" if request.url.path.startswith("/v2") else "v1"
    return _error(error, protocol, request_id)


def app_from_env() -> Starlette:
    """The uvicorn factory: settings and targets from ``MODELYARD_SERVE_SPEC`` (JSON)."""
    spec = json.loads(os.environ[SPEC_ENV])
    settings = load_settings(spec["project"])
    if spec.get("runtime"):  # ``serve --runtime`` (checked by the CLI) over the project's
        serving = msgspec.structs.replace(settings.serving, runtime=spec["runtime"])
        settings = msgspec.structs.replace(settings, serving=serving)
    return create_app(
        settings, spec.get("targets", []), trust=bool(spec.get("trust")), freeze_heap=True
    )


Handler = Callable[[Request], Awaitable[Response]]
