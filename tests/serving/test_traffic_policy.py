"""Traffic policies are checked when they are set, and again when a saved one is read.

A policy naming an alias no version holds, or routing to versions that cannot take the
same request (a missing or extra column, a changed type, a column that may no longer be
null, narrowed categories), is refused by the admin API with a 422 naming it; an alias
moved to an incompatible version later is not swapped in; a saved policy gone bad is
ignored at start-up with one log line. ``/metrics`` labels only name served models.
"""

from __future__ import annotations

import logging
import re
import string
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs.tables import inputs_from_table
from modelyard.serving.signatures import adapt, differences

from .conftest import NAME, Project, ServeFactory, make_frame, records, serving

ADMIN = "adm-policy-5512"
KEYS = {"MODELYARD_API_KEYS": f"{ADMIN}:admin"}
AUTH = {"Authorization": f"Bearer {ADMIN}"}
TRAFFIC = f"/admin/models/{NAME}/traffic"
PREDICT = f"/v1/models/{NAME}:predict"


def fit(frame: pd.DataFrame) -> Pipeline:
    """A classifier over whatever columns ``frame`` has (text one-hot, numbers as they are)."""
    labels = make_frame()[1][frame.index.to_numpy()]
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), text), remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame, labels)


def log(project: Project, frame: pd.DataFrame, alias: str) -> int:
    logged = project.registry.log_model(fit(frame), name=NAME, training_frame=frame)
    project.registry.set_alias(f"{NAME}/{logged.version}", alias)
    return logged.version


def _variants() -> dict[str, tuple[pd.DataFrame, str]]:
    """Training frames of versions that cannot take churn v1's requests, and what names it."""
    frame, _ = make_frame()
    narrowed = frame[frame["plan"] != "max"].copy()
    narrowed["plan"] = narrowed["plan"].cat.remove_unused_categories()
    return {
        "missing": (frame.drop(columns=["city"]), "column 'city' is missing"),
        "extra": (frame.assign(tenure=np.arange(len(frame))), "column 'tenure' (int) is new"),
        "type": (frame.assign(age=frame["age"].astype(float)), "column 'age' changed type"),
        "categories": (narrowed, "column 'plan' has narrowed categories: 'max'"),
    }


@pytest.mark.parametrize("variant", ["missing", "extra", "type", "categories"])
@pytest.mark.parametrize("part", ["canary", "shadow"])
def test_a_policy_with_versions_that_differ_is_refused_naming_the_difference(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame, variant: str, part: str
) -> None:
    frame, expected = _variants()[variant]
    version = log(project, frame, "challenger")
    server = serve(project.settings, environ=KEYS)
    with server.client(headers=AUTH) as http:
        policy = {part: "challenger", **({"canary_weight": 0.5} if part == "canary" else {})}
        answer = http.put(TRAFFIC, json=policy)
        assert answer.status_code == 422, answer.text
        message = answer.json()["error"]
        assert expected in message["message"], message
        assert f"{NAME}/{version}" in message["message"]
        assert http.get(TRAFFIC).json() == {
            "primary": "production",
            "canary": None,
            "canary_weight": 0.0,
            "sticky_key": None,
            "shadow": None,
        }
        assert not (project.settings.project_dir / ".modelyard" / "traffic.json").exists()
        got = http.post(PREDICT, json={"instances": records(held_out)})
        assert got.status_code == 200
        assert got.headers["X-Model-Version"] == "1"


@pytest.mark.parametrize("part", ["primary", "canary", "shadow"])
def test_a_policy_naming_an_alias_no_version_holds_is_refused(
    project: Project, serve: ServeFactory, part: str
) -> None:
    server = serve(project.settings, environ=KEYS)
    with server.client(headers=AUTH) as http:
        answer = http.put(TRAFFIC, json={part: "stagin"})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert "'stagin'" in error["message"] and part in error["message"]
        assert "production" in error["message"]  # the aliases it does have
        assert http.get(TRAFFIC).json()["primary"] == "production"


def test_a_saved_policy_gone_bad_falls_back_to_the_command_line_at_restart(
    project: Project,
    serve: ServeFactory,
    held_out: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project.registry.set_alias(f"{NAME}/2", "staging")
    first = serve(project.settings, environ=KEYS)
    with first.client(headers=AUTH) as http:
        answer = http.put(TRAFFIC, json={"primary": "staging"})
        assert answer.status_code == 200, answer.text
        assert (
            http.post(PREDICT, json={"instances": records(held_out)}).headers["X-Model-Version"]
            == "2"
        )
    first.stop()
    project.registry.remove_alias(NAME, "staging")
    caplog.set_level(logging.INFO, logger="modelyard.serving")
    second = serve(project.settings, environ=KEYS)
    with second.client(headers=AUTH) as http:
        assert http.get("/v2/health/ready").status_code == 200
        answer = http.post(PREDICT, json={"instances": records(held_out)})
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == "1"
        got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(got, project.proba(1, held_out), atol=1e-6)
    lines = [r.getMessage() for r in caplog.records if "saved traffic policy" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "'staging'" in lines[0] and "primary production" in lines[0]


def test_an_alias_moved_to_an_incompatible_version_is_not_swapped_in(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "canary")
    server = serve(serving(project.settings, watch_interval_s=0.1), environ=KEYS)
    with server.client(headers=AUTH) as http:
        answer = http.put(TRAFFIC, json={"canary": "canary", "canary_weight": 1.0})
        assert answer.status_code == 200, answer.text
        frame, _ = _variants()["type"]
        moved = log(project, frame, "canary")  # the alias moves under the policy
        deployment = server.state.deployments[NAME]
        deadline = time.monotonic() + 10
        while "canary" not in deployment.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"{NAME} v{moved} cannot be the canary" in deployment.errors["canary"]
        assert "column 'age' changed type" in deployment.errors["canary"]
        for _ in range(5):  # the compatible canary still answers
            answer = http.post(PREDICT, json={"instances": records(held_out)})
            assert answer.status_code == 200
            assert answer.headers["X-Model-Version"] == "2"
            got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
            np.testing.assert_allclose(got, project.proba(2, held_out), atol=1e-6)
        metrics = http.get("/metrics").text
    assert 'modelyard_swaps_total{model="churn",outcome="refused"} 1.0' in metrics


# -- /metrics labels -------------------------------------------------------------------

_NAMES = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=40)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(names=st.lists(_NAMES, min_size=1, max_size=8), versions=st.lists(st.integers(3, 10**9)))
def test_metrics_labels_only_name_served_models_and_versions(
    project: Project, serve: ServeFactory, names: list[str], versions: list[int]
) -> None:
    state = _SERVERS.setdefault(id(project), {})
    if "server" not in state:
        state["server"] = serve(project.settings, environ=KEYS)
    server = state["server"]
    with server.client() as http:  # no key: 401s
        for name in names:
            http.post(f"/v1/models/{name}:predict", json={"instances": []})
            http.post(f"/v2/models/{name}/versions/7/infer", json={})
        for version in versions:
            answer = http.post(f"/v2/models/{NAME}/versions/{version}/infer", json={}, headers=AUTH)
            assert answer.status_code == 404
        text = http.get("/metrics").text
    labels = {
        (sample.labels.get("model"), sample.labels.get("version"))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "model" in sample.labels
    }
    assert {m for m, _ in labels} <= {NAME, "_unknown"}
    assert {v for _, v in labels} <= {None, "", "1", "2"}


_SERVERS: dict[int, dict[str, Any]] = {}


# -- differences and adapt over generated signatures -------------------------------------

_DTYPES = ("float", "int", "bool", "string", "category")


@st.composite
def _specs(draw: st.DrawFn) -> list[ColumnSpec]:
    names = draw(
        st.lists(
            st.text(string.ascii_lowercase, min_size=1, max_size=6),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    specs = []
    for name in names:
        dtype = draw(st.sampled_from(_DTYPES))
        categories = None
        if dtype in ("string", "category"):
            categories = sorted(draw(st.sets(st.sampled_from("abcdef"), min_size=2, max_size=6)))
        specs.append(
            ColumnSpec(name=name, dtype=dtype, nullable=draw(st.booleans()), categories=categories)
        )
    return specs


def _value(draw: st.DrawFn, spec: ColumnSpec) -> Any:
    if spec.dtype == "float":
        return draw(st.floats(-1e6, 1e6))
    if spec.dtype == "int":
        return draw(st.integers(-1000, 1000))
    if spec.dtype == "bool":
        return draw(st.booleans())
    assert spec.categories is not None
    return draw(st.sampled_from(spec.categories))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_compatible_version_reads_a_request_as_its_own_signature_would(
    data: st.DataObject,
) -> None:
    specs = data.draw(_specs())
    primary = Signature(columns=specs)
    other = Signature(columns=data.draw(st.permutations(specs)))
    assert differences(primary, other, strict_values=True) == []
    count = data.draw(st.integers(1, 5))
    rows = [{s.name: _value(data.draw, s) for s in specs} for _ in range(count)]
    form = data.draw(st.sampled_from(["records", "rows"]))
    table: Any = rows if form == "records" else [[r[n] for n in primary.names] for r in rows]
    decoded = inputs_from_table(primary, table, "$", max_rows=100)
    adapted = adapt(decoded, other)
    own = inputs_from_table(other, rows, "$", max_rows=100)  # by name, in its own order
    assert adapted.names == own.names == tuple(other.names)
    for got, want in zip(adapted.columns, own.columns, strict=True):
        assert got.dtype == want.dtype
        assert got.tolist() == want.tolist()
    if own.matrix is not None:
        assert adapted.matrix is not None
        np.testing.assert_array_equal(adapted.matrix, own.matrix)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_every_incompatible_change_is_named(data: st.DataObject) -> None:
    specs = data.draw(_specs())
    primary = Signature(columns=specs)
    index = data.draw(st.integers(0, len(specs) - 1))
    spec = specs[index]
    changes = ["drop", "add", "type", "null"]
    if spec.dtype == "category":
        changes.append("narrow")
    change = data.draw(st.sampled_from(changes))
    changed = list(specs)
    name = spec.name
    if change == "drop":
        del changed[index]
    elif change == "add":
        name = spec.name + "_new"
        changed.append(ColumnSpec(name=name, dtype="float"))
    elif change == "type":
        dtype = data.draw(st.sampled_from([d for d in _DTYPES if d != spec.dtype]))
        changed[index] = ColumnSpec(
            name=name, dtype=dtype, nullable=spec.nullable, categories=spec.categories
        )
    elif change == "null":
        changed[index] = ColumnSpec(
            name=name, dtype=spec.dtype, nullable=False, categories=spec.categories
        )
        primary = Signature(
            columns=[
                *specs[:index],
                ColumnSpec(name=name, dtype=spec.dtype, nullable=True, categories=spec.categories),
                *specs[index + 1 :],
            ]
        )
    else:
        assert spec.categories is not None
        changed[index] = ColumnSpec(
            name=name, dtype="category", nullable=spec.nullable, categories=spec.categories[1:]
        )
    other = Signature(columns=data.draw(st.permutations(changed)))
    found = differences(primary, other)
    assert len(found) == 1, found
    assert re.search(rf"column '{re.escape(name)}'", found[0])
