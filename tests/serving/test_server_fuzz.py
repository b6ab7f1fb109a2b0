"""Fuzzing a live server: schemathesis over its own OpenAPI document, Hypothesis bodies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from modelyard.config import load_settings
from modelyard.serving.app import create_app

from .conftest import NAME, LiveServer


@pytest.fixture(scope="module")
def live(
    _base_project: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(_base_project[0], root)
    server = LiveServer(create_app(load_settings(root, environ={}), [NAME], environ={}))
    server.start()
    yield server
    server.stop()


def test_no_operation_is_a_server_error(live: LiveServer) -> None:
    """Every operation of /openapi.json, 30 generated cases each.

    schemathesis' pytest loader (``from_fixture``) breaks on pytest 9, so the
    operations are walked here with each one's Hypothesis strategy.
    """
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {f"POST /v1/models/{NAME}:predict", f"POST /v2/models/{NAME}/infer"} <= labels
    for operation in operations:

        @given(case=operation.as_strategy())
        @hyp_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=live.url, checks=[not_a_server_error])

        check()


def test_the_document_lists_every_protocol(live: LiveServer) -> None:
    paths = httpx.get(f"{live.url}/openapi.json").json()["paths"]
    for path in (
        f"/v1/models/{NAME}:predict",
        f"/v2/models/{NAME}/infer",
        f"/v2/models/{NAME}/versions/{{version}}/infer",
        "/invocations",
        "/v1/feedback",
        "/admin/reload",
        f"/admin/models/{NAME}/traffic",
    ):
        assert path in paths
    body = paths[f"/v1/models/{NAME}:predict"]["post"]["requestBody"]
    shapes = body["content"]["application/json"]["schema"]["oneOf"]
    assert [s["required"] for s in shapes] == [["instances"], ["entities"]]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = st.sampled_from(["instances", "inputs", "entities", "id", "outputs", "parameters"])
_BODIES = (
    _JSON
    | st.dictionaries(_KEYS, _JSON, max_size=3)
    | st.dictionaries(
        _KEYS,
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["amount", "age", "plan", "city", "name", "shape", "datatype", "data"]
                ),
                _JSON,
                max_size=5,
            ),
            max_size=3,
        ),
        max_size=2,
    )
)


@given(body=_BODIES, v2=st.booleans())
@hyp_settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_bodies_never_get_a_5xx(live: LiveServer, body: Any, v2: bool) -> None:
    path = f"/v2/models/{NAME}/infer" if v2 else f"/v1/models/{NAME}:predict"
    answer = httpx.post(f"{live.url}{path}", content=json.dumps(body), timeout=30)
    assert answer.status_code < 500, (body, answer.text)
    parsed = answer.json()
    if answer.status_code != 200:
        assert "error" in parsed, parsed
        if v2:
            assert isinstance(parsed["error"], str)
