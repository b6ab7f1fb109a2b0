from __future__ import annotations

import pickle
import re

import pytest

from modelyard.errors import (
    ArtifactIntegrityError,
    ConflictError,
    FilterSyntaxError,
    GateFailedError,
    InvalidInputError,
    MissingExtraError,
    ModelError,
    ModelyardError,
    NotFoundError,
    PipelineDefinitionError,
    Problem,
    StepFailedError,
    StorageError,
)

# (class, its base in the tree, HTTP status, wire type); each row checked against the class
TREE: list[tuple[type[ModelyardError], type[Exception], int, str]] = [
    (ModelyardError, Exception, 500, "internal"),
    (InvalidInputError, ModelyardError, 422, "invalid_input"),
    (FilterSyntaxError, InvalidInputError, 422, "invalid_filter"),
    (PipelineDefinitionError, InvalidInputError, 422, "invalid_pipeline"),
    (NotFoundError, ModelyardError, 404, "not_found"),
    (ConflictError, ModelyardError, 409, "conflict"),
    (GateFailedError, ConflictError, 409, "gate_failed"),
    (StepFailedError, ConflictError, 409, "step_failed"),
    (StorageError, ModelyardError, 503, "storage"),
    (ArtifactIntegrityError, StorageError, 503, "artifact_integrity"),
    (ModelError, ModelyardError, 500, "model"),
    (MissingExtraError, ModelyardError, 500, "missing_extra"),
]


def _instance(cls: type[ModelyardError]) -> ModelyardError:
    if cls is FilterSyntaxError:
        return FilterSyntaxError("Unexpected token", text="metrics.auc >> 0.8", position=12)
    if cls is StepFailedError:
        return StepFailedError("Step 'train' failed", run_id="r1", step="train", error="boom")
    if cls is MissingExtraError:
        return MissingExtraError("modelyard serve", "serve")
    return cls("something failed")


@pytest.mark.parametrize(("cls", "base", "status", "type_"), TREE, ids=str)
def test_error_tree_statuses_and_types(
    cls: type[ModelyardError], base: type[Exception], status: int, type_: str
) -> None:
    assert issubclass(cls, base)
    err = _instance(cls)
    assert err.status == status
    assert err.type == type_
    assert err.to_dict()["error"]["type"] == type_


def test_every_public_error_is_in_the_tree() -> None:
    from modelyard import errors

    exported = {
        getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    }
    assert exported == {row[0] for row in TREE}
    # and the docstring that draws the tree names each of them with its status
    doc = errors.__doc__ or ""
    for cls, _, status, _ in TREE:
        assert re.search(rf"{cls.__name__}\b.*\b{status}\b", doc), cls.__name__


def test_stdlib_bases_let_callers_catch_familiar_types() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise InvalidInputError("bad")
    with pytest.raises(ValueError, match="Unexpected"):
        raise FilterSyntaxError("Unexpected", text="x", position=0)
    with pytest.raises(LookupError, match="No run"):
        raise NotFoundError("No run with id 'x'")
    assert not issubclass(StorageError, ValueError)
    assert not issubclass(ConflictError, (ValueError, LookupError))


def test_to_dict_has_the_one_http_shape() -> None:
    problems = [
        Problem(loc="$.instances[2].age", expected="number", got='"abc"'),
        Problem(loc="$.instances[3].tenure", expected="number >= 0", got="-3"),
    ]
    err = InvalidInputError("2 instances are invalid", problems=problems)
    assert err.to_dict() == {
        "error": {
            "type": "invalid_input",
            "message": "2 instances are invalid",
            "problems": [
                {"loc": "$.instances[2].age", "expected": "number", "got": '"abc"'},
                {"loc": "$.instances[3].tenure", "expected": "number >= 0", "got": "-3"},
            ],
        }
    }
    assert NotFoundError("No model named 'chrun'").to_dict() == {
        "error": {"type": "not_found", "message": "No model named 'chrun'", "problems": []}
    }


def test_invalid_input_appends_the_location() -> None:
    err = InvalidInputError("Expected number >= 0, got -3", loc="$.instances[2].tenure")
    assert str(err) == "Expected number >= 0, got -3 - at $.instances[2].tenure"
    assert err.loc == "$.instances[2].tenure"
    assert err.to_dict()["error"]["message"] == str(err)
    plain = InvalidInputError("Expected a name")
    assert str(plain) == "Expected a name"
    assert plain.loc is None


@pytest.mark.parametrize(
    ("text", "position", "length"),
    [("metrics.auc >> 0.8", 12, 2), ("params.x = ", 11, 1), ("x", 0, 1), ("a and", 2, 0)],
)
def test_filter_syntax_error_caret_points_at_the_token(
    text: str, position: int, length: int
) -> None:
    err = FilterSyntaxError("Unexpected token", text=text, position=position, length=length)
    first, shown, caret = str(err).split("\n")
    assert first == f"Unexpected token (column {position + 1})"
    assert shown == f"  {text}"
    # the carets sit under the characters of the token, whatever its length
    start = caret.index("^")
    assert start - 2 == position
    assert caret[start:] == "^" * max(1, length)
    assert set(caret[:start]) == {" "}
    assert (err.text, err.position) == (text, position)


def test_gate_failed_error_carries_every_result() -> None:
    results = [{"gate": "auc", "passed": False}, {"gate": "latency", "passed": True}]
    err = GateFailedError(
        "Cannot promote churn v8 to 'production': 1 of 2 gates failed", results=results
    )
    assert err.results == tuple(results)
    assert isinstance(err, ConflictError)
    assert err.status == 409


def test_missing_extra_error_says_what_to_install() -> None:
    err = MissingExtraError("modelyard serve", "serve")
    assert str(err) == "modelyard serve needs the 'serve' extra: pip install 'modelyard[serve]'"
    assert err.to_dict()["error"]["message"] == str(err)


@pytest.mark.parametrize("cls", [row[0] for row in TREE], ids=lambda c: c.__name__)
def test_errors_survive_pickling(cls: type[ModelyardError]) -> None:
    # errors cross process boundaries (multiprocessing, worker pools) by pickle
    err = _instance(cls)
    err.problems = (Problem(loc="$.x", expected="int", got="str"),)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert str(copy) == str(err)
    assert copy.to_dict() == err.to_dict()
    assert vars(copy) == vars(err)
