"""Feedback: labels checked against the model's target, unknown ids reported and kept apart.

The oracle for a label is the model itself: a classifier's ``classes_`` (as the log's
readers spell them), a regressor's numbers.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression

from modelyard.config import load_settings
from modelyard.registry import ModelRegistry
from modelyard.serving.app import create_app
from modelyard.serving.codecs.feedback import Target, check_label
from modelyard.serving.codecs.problems import ProblemList
from modelyard.store.predlog import connect, read_feedback, read_unmatched_feedback

from .conftest import NAME, SEED, LiveServer, Project, ServeFactory, make_frame, records

PREDICT = f"/v1/models/{NAME}:predict"
_ROWS = records(make_frame(seed=SEED + 5, rows=4)[0])


@pytest.fixture(scope="module")
def live(
    _base_project: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("feedback") / "project"
    shutil.copytree(_base_project[0], root)
    server = LiveServer(create_app(load_settings(root, environ={}), [NAME], environ={}))
    server.start()
    yield server
    server.stop()


def _classes(live: LiveServer) -> list[str]:
    served = live.state.deployments[NAME].primary
    assert served is not None and served.model.manifest.classes
    return list(served.model.manifest.classes)


def _post(live: LiveServer, path: str, body: Any) -> httpx.Response:
    with live.client() as http:
        return http.post(path, json=body)


def _record(live: LiveServer, rows: int) -> str:
    answer = _post(live, PREDICT, {"instances": _ROWS[:rows]})
    assert answer.status_code == 200
    return answer.headers["X-Record-ID"]


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        ({"label": 2}, "$.label"),
        ({"label": "yes"}, "$.label"),
        ({"label": None}, "$.label"),
        ({"label": {"nested": [1]}}, "$.label"),
        ({"label": 1.5}, "$.label"),
        ({"label": [0, 1]}, "$.label"),  # the request had 3 rows
        ({"label": [0, 1, 7]}, "$.label[2]"),
        ({"label": 1, "row": 3}, "$.row"),
        ({"label": [0, 1, 1], "row": 0}, "$.label"),
    ],
)
def test_a_label_the_classifier_cannot_predict_is_a_422(
    live: LiveServer, item: dict[str, Any], loc: str
) -> None:
    record_id = _record(live, 3)
    answer = _post(live, "/v1/feedback", {"request_id": record_id, **item})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_input"
    assert [p["loc"] for p in error["problems"]] == [loc]
    assert record_id not in read_feedback(live.log_dir)["record_id"].to_pylist()


@pytest.mark.parametrize("label", [0, 1, "0", "1", [0, "1", 1]])
def test_a_label_of_the_classifier_is_accepted(live: LiveServer, label: Any) -> None:
    assert sorted(_classes(live)) == ["0", "1"]
    record_id = _record(live, 3)
    answer = _post(live, "/v1/feedback", {"request_id": record_id, "label": label})
    assert answer.status_code == 200, answer.text
    assert answer.json()["records"] == 1


def test_unknown_ids_are_reported_and_kept_apart(live: LiveServer) -> None:
    """Before, unknown ids were accepted silently and mixed into the joined labels."""
    known = _record(live, 1)
    batch = {
        "feedback": [
            {"request_id": known, "label": 1},
            *({"request_id": f"ghost-{i}", "label": 1} for i in range(7)),
        ]
    }
    answer = _post(live, "/v1/feedback", batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 1 and body["records"] == 1
    assert body["unknown"]["count"] == 7
    assert body["unknown"]["request_ids"] == [f"ghost-{i}" for i in range(5)]
    joined = read_feedback(live.log_dir)["request_id"].to_pylist()
    apart = read_unmatched_feedback(live.log_dir)["request_id"].to_pylist()
    assert known in joined and not any(r.startswith("ghost-") for r in joined)
    assert {f"ghost-{i}" for i in range(7)} <= set(apart)
    con = connect(live.log_dir)
    try:
        ghosts = con.execute(
            "SELECT count(*) FROM feedback WHERE request_id LIKE 'ghost-%'"
        ).fetchone()
        kept = con.execute(
            "SELECT count(*) FROM unmatched_feedback WHERE request_id LIKE 'ghost-%'"
        ).fetchone()
    finally:
        con.close()
    assert ghosts == (0,) and kept is not None and kept[0] >= 7


def test_an_unknown_id_with_a_label_of_no_label_shape_is_a_422(live: LiveServer) -> None:
    answer = _post(live, "/v1/feedback", {"request_id": "ghost-x", "label": {"a": 1}})
    assert answer.status_code == 422
    assert answer.json()["error"]["problems"] == [] or "$.label" in answer.text


@given(
    items=st.lists(
        st.tuples(st.booleans(), st.sampled_from([0, 1, "0", "1", [1, 0]])),
        min_size=1,
        max_size=8,
    )
)
@hyp_settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_known_and_unknown_ids_in_one_batch(
    live: LiveServer, items: list[tuple[bool, Any]]
) -> None:
    feedback = []
    for i, (known, label) in enumerate(items):
        rid = _record(live, 2) if known else f"nobody-{i}-{id(items)}"
        feedback.append({"request_id": rid, "label": label})
    answer = _post(live, "/v1/feedback", {"feedback": feedback})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    unknown = [f["request_id"] for f, (known, _) in zip(feedback, items, strict=True) if not known]
    assert body["unknown"]["count"] == len(unknown)
    assert body["unknown"]["request_ids"] == unknown[:5]
    assert body["accepted"] == body["records"] == len(items) - len(unknown)


# -- a regressor -------------------------------------------------------------------------


def test_a_regressor_takes_finite_numbers_only(project: Project, serve: ServeFactory) -> None:
    frame, _ = make_frame()
    numeric = frame[["amount", "age"]].astype(float)
    model = LinearRegression().fit(numeric, frame["amount"] * 2)
    registry = ModelRegistry(project.settings)
    try:
        logged = registry.log_model(model, name="price", training_frame=numeric)
        registry.set_alias(f"price/{logged.version}", "production")
    finally:
        registry.close()
    server = serve(project.settings, ["price"])
    with server.client() as http:
        answer = http.post(
            "/v1/models/price:predict", json={"instances": [{"amount": 0.5, "age": 40.0}]}
        )
        assert answer.status_code == 200, answer.text
        rid = answer.headers["X-Record-ID"]
        for label in (3.25, -1, 0):
            ok = http.post("/v1/feedback", json={"request_id": rid, "label": label})
            assert ok.status_code == 200, ok.text
        for label in ("3.2", True, None, [1.0, 2.0]):
            bad = http.post("/v1/feedback", json={"request_id": rid, "label": label})
            assert bad.status_code == 422, (label, bad.text)
        big = http.post(
            "/v1/feedback", content=b'{"request_id": "' + rid.encode() + b'", "label": 1e400}'
        )
        assert big.status_code == 422


# -- check_label against its oracles ------------------------------------------------------

_LABELS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=3)


def _as_text(value: Any) -> str | None:
    """How DuckDB's json_extract_string spells a scalar label (the readers' join)."""
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else json.dumps(value)


@given(
    label=_LABELS | st.lists(_LABELS, max_size=4),
    rows=st.integers(1, 4),
    row=st.none() | st.integers(0, 5),
    task=st.sampled_from(["classification", "regression", "other"]),
)
@hyp_settings(max_examples=300, deadline=None)
def test_check_label_matches_the_oracle(label: Any, rows: int, row: int | None, task: str) -> None:
    classes = ("0", "1", "b") if task == "classification" else None
    found = ProblemList()
    check_label(label, row, rows, Target(task, classes), "$.label", found)

    def scalar_ok(value: Any) -> bool:
        if task == "classification":
            return _as_text(value) in classes  # type: ignore[operator]
        if task == "regression":
            return (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        return value is not None and not isinstance(value, dict | list)

    if row is not None and row >= rows:
        ok = False
    elif isinstance(label, list):
        ok = row is None and len(label) == rows and all(scalar_ok(v) for v in label)
    else:
        ok = scalar_ok(label)
    assert (not found) == ok, (label, rows, row, task, found.items)
