"""What the prediction log holds: one record per prediction request, one per label,
one per failed request (``ErrorRecord``: what failed and how, never the request's body).

Records are checked and encoded to msgpack by the caller of ``append``, so the writer
thread only does I/O.

>>> record = PredictionRecord(
...     request_id="r1", time_us=0, model="churn", version=3, rows=2,
...     inputs={"age": [31, 45]}, outputs={"label": [0, 1]}, latency_us=850,
... )
>>> decode_prediction(encode_prediction(record)) == record
True
>>> encode_prediction(msgspec.structs.replace(record, rows=3))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected 3 values (one per row), got 2 - at $.inputs.age
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelyard.errors import InvalidInputError, Problem, StorageError

__all__ = [
    "MAX_CLIENT_ID",
    "MAX_NAME",
    "ROUTES",
    "ErrorRecord",
    "FeedbackRecord",
    "PredictionRecord",
    "decode_error",
    "decode_feedback",
    "decode_prediction",
    "encode_error",
    "encode_feedback",
    "encode_prediction",
]

#: ``batch``: rows scored by ``modelyard predict --log`` (not a served request)
ROUTES = ("primary", "canary", "shadow", "batch")
#: the longest client request id kept (v2 ``id``, ``X-Request-ID``); longer ones are refused
MAX_CLIENT_ID = 256
#: the longest model name, protocol or error type an error record keeps
MAX_NAME = 256


class PredictionRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One prediction request as served: who asked, what went in, what came out, how fast.

    ``record_id`` is made by the server and unique per prediction (a shadow's copy gets
    its own); ``request_id`` is the client's id (v2 ``id`` or ``X-Request-ID``, at most
    ``MAX_CLIENT_ID`` characters), or the record id when the client gave none. Clients
    may reuse their ids, so only ``record_id`` names one record. Records written before
    record ids existed have ``record_id == ""``: readers use their ``request_id``.

    ``inputs``, ``features`` and ``outputs`` map a column name to one JSON scalar per row
    (float, int, bool, str or None); ``features`` keys are ``"view:feature"``.
    """

    request_id: str
    time_us: int  # UTC microseconds since the epoch when the request arrived
    model: str
    version: int
    rows: int
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    latency_us: int
    features: dict[str, list[Any]] | None = None
    route: str = "primary"  # "primary" | "canary" | "shadow" | "batch"
    record_id: str = ""

    @property
    def key(self) -> str:
        """The id that names this record: ``record_id``, or ``request_id`` for old records."""
        return self.record_id or self.request_id


class FeedbackRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A label for an earlier prediction, arriving later.

    ``label`` is one label, or a list of labels (one per row of the request); ``row``
    names one row of the request, or is None for all rows or a single-row request.
    ``request_id`` is the id the client sent the label for (a client id or a record id);
    ``record_id`` the prediction record it labels, resolved by the server when the label
    arrived (one feedback record per matched prediction record). ``""`` in records
    written before record ids existed, and in labels for ids no record had (kept apart,
    see ``PredictionLog.append_unmatched_feedback``).
    """

    request_id: str
    label: Any
    time_us: int
    row: int | None = None
    record_id: str = ""


class ErrorRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One prediction request the server answered with a 4xx or 5xx status.

    ``version`` and ``route`` are None when the request failed before a version was
    chosen (unknown model, malformed body, ...). ``error`` is the answer's error type
    (``invalid_input``, ``payload_too_large``, ``model_error``...). ``record_id`` is the
    server's unique id of the request, ``request_id`` the client's (or the record id).
    Nothing of the request's body is kept: a failed request may hold anything.
    """

    record_id: str
    request_id: str
    time_us: int  # UTC microseconds since the epoch when the request arrived
    model: str
    protocol: str  # "v1" | "v2" | "mlflow"
    status: int  # the HTTP status answered, 400-599
    error: str
    latency_us: int
    version: int | None = None
    route: str | None = None  # "primary" | "canary", None before a version was chosen


def _numpy_scalar(value: Any) -> Any:
    # numpy scalars (np.float64, np.int64, np.bool_) carry .item(); anything else is refused
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise NotImplementedError(f"cannot log a {type(value).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_numpy_scalar)
_prediction_decoder = msgspec.msgpack.Decoder(PredictionRecord)
_feedback_decoder = msgspec.msgpack.Decoder(FeedbackRecord)
_error_decoder = msgspec.msgpack.Decoder(ErrorRecord)


def _check_columns(
    field: str, columns: dict[str, list[Any]] | None, rows: int, problems: list[Problem]
) -> None:
    for name, values in (columns or {}).items():
        if len(values) != rows:
            problems.append(
                Problem(f"$.{field}.{name}", f"{rows} values (one per row)", str(len(values)))
            )


def _refuse(problems: list[Problem]) -> None:
    first = problems[0]
    raise InvalidInputError(
        f"Expected {first.expected}, got {first.got}", loc=first.loc, problems=problems
    )


def check_prediction(record: PredictionRecord) -> None:
    """Raise InvalidInputError naming the field when ``record`` cannot be logged."""
    problems: list[Problem] = []
    if not record.request_id:
        problems.append(Problem("$.request_id", "a non-empty string", "''"))
    elif len(record.request_id) > MAX_CLIENT_ID:
        wanted = f"at most {MAX_CLIENT_ID} characters"
        problems.append(Problem("$.request_id", wanted, f"{len(record.request_id)} characters"))
    if record.rows < 1:
        problems.append(Problem("$.rows", "an integer >= 1", str(record.rows)))
    if record.route not in ROUTES:
        problems.append(Problem("$.route", " or ".join(ROUTES), repr(record.route)))
    if record.latency_us < 0:
        problems.append(Problem("$.latency_us", "an integer >= 0", str(record.latency_us)))
    if record.version < 0:
        problems.append(Problem("$.version", "an integer >= 0", str(record.version)))
    for field in ("inputs", "features", "outputs"):
        _check_columns(field, getattr(record, field), record.rows, problems)
    if problems:
        _refuse(problems)


def _encode(record: msgspec.Struct) -> bytes:
    try:
        return _encoder.encode(record)
    except (TypeError, NotImplementedError, OverflowError) as exc:
        raise InvalidInputError(
            f"Expected JSON scalars (float, int, bool, str, None), got {exc}",
            loc=f"$ (request {getattr(record, 'request_id', '?')!r})",
        ) from exc


def encode_prediction(record: PredictionRecord) -> bytes:
    """``record`` checked and encoded as msgpack."""
    check_prediction(record)
    return _encode(record)


def encode_feedback(record: FeedbackRecord) -> bytes:
    """``record`` checked and encoded as msgpack."""
    if not record.request_id:
        _refuse([Problem("$.request_id", "a non-empty string", "''")])
    if record.row is not None and record.row < 0:
        _refuse([Problem("$.row", "an integer >= 0 or null", str(record.row))])
    return _encode(record)


def check_error(record: ErrorRecord) -> None:
    """Raise InvalidInputError naming the field when ``record`` cannot be logged."""
    problems: list[Problem] = []
    for field, limit in (("record_id", MAX_CLIENT_ID), ("request_id", MAX_CLIENT_ID)):
        value = getattr(record, field)
        if not value or len(value) > limit:
            wanted = f"a string of 1 to {limit} characters"
            problems.append(Problem(f"$.{field}", wanted, f"{len(value)} characters"))
    for field in ("model", "protocol", "error"):
        value = getattr(record, field)
        if not value or len(value) > MAX_NAME:
            wanted = f"a string of 1 to {MAX_NAME} characters"
            problems.append(Problem(f"$.{field}", wanted, f"{len(value)} characters"))
    if not 400 <= record.status <= 599:
        problems.append(Problem("$.status", "an HTTP error status 400-599", str(record.status)))
    for field in ("time_us", "latency_us", "version"):
        number = getattr(record, field)
        if number is not None and not 0 <= number < 2**63:
            problems.append(Problem(f"$.{field}", "an integer from 0 to 2**63 - 1", str(number)))
    if record.route is not None and record.route not in ROUTES:
        problems.append(Problem("$.route", " or ".join(ROUTES) + " or null", repr(record.route)))
    if problems:
        _refuse(problems)


def encode_error(record: ErrorRecord) -> bytes:
    """``record`` checked and encoded as msgpack."""
    check_error(record)
    return _encode(record)


def _decode(decoder: msgspec.msgpack.Decoder[Any], payload: bytes, where: str) -> Any:
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError as exc:
        # the frame's crc matched, so these bytes were written like this: not a torn tail
        raise StorageError(
            f"Prediction log segment {where} holds an unreadable record: {exc}"
        ) from exc


def decode_prediction(payload: bytes, where: str = "?") -> PredictionRecord:
    """The PredictionRecord in one frame's payload."""
    record: PredictionRecord = _decode(_prediction_decoder, payload, where)
    return record


def decode_feedback(payload: bytes, where: str = "?") -> FeedbackRecord:
    """The FeedbackRecord in one frame's payload."""
    record: FeedbackRecord = _decode(_feedback_decoder, payload, where)
    return record


def decode_error(payload: bytes, where: str = "?") -> ErrorRecord:
    """The ErrorRecord in one frame's payload."""
    record: ErrorRecord = _decode(_error_decoder, payload, where)
    return record
