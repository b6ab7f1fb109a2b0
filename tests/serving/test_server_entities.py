"""v1 ``entities`` requests end to end: online lookups through a live server, and replays.

A model trained on a feature service is served; a request that sends entity keys gets
the features from the online store (materialized from a Parquet source). The oracle is
the native model applied to the request fields plus the source's latest values as of
the lookup time. ``parameters.as_of`` (``serving.replay: true`` only) moves the time
that freshness is checked against and that the prediction is logged at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings, init_project, load_settings
from modelyard.features.store import FeatureStore
from modelyard.registry import ModelRegistry
from modelyard.store.predlog import read_predictions
from tests.serving.conftest import ServeFactory, serving

T0 = datetime(2020, 1, 1, tzinfo=UTC)
USERS = [f"u{i}" for i in range(20)]
FEATURES_PY = """
from datetime import timedelta
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

user = Entity("user", join_keys=["user"])
activity = FeatureView(
    "activity",
    entities=[user],
    source=FileSource("data/activity.parquet", timestamp_field="event_timestamp"),
    features=[Feature("spend", "float"), Feature("visits", "int")],
    ttl=timedelta(hours=2),
)
scoring = FeatureService("scoring", features=["activity:spend", "activity:visits"])
"""
COLUMNS = ["age", "spend", "visits"]


def _source() -> pd.DataFrame:
    """Two rows per user: at T0 and, with other values, at T0 + 1 h."""
    rng = np.random.default_rng(11)
    n = len(USERS)
    return pd.DataFrame(
        {
            "user": USERS * 2,
            "event_timestamp": [T0] * n + [T0 + timedelta(hours=1)] * n,
            "spend": rng.normal(50, 20, 2 * n).round(2),
            "visits": rng.integers(0, 30, 2 * n),
        }
    )


@pytest.fixture
def project(tmp_path: Path) -> tuple[Settings, LogisticRegression, pd.DataFrame]:
    return make_project(tmp_path, environ={})


def make_project(
    tmp_path: Path, environ: dict[str, str]
) -> tuple[Settings, LogisticRegression, pd.DataFrame]:
    """A project with the feature service materialized and ``scorer`` in production."""
    root = tmp_path / "project"
    init_project(root)
    (root / "data").mkdir()
    source = _source()
    source.to_parquet(root / "data" / "activity.parquet", index=False)
    (root / "features.py").write_text(FEATURES_PY)
    settings = load_settings(root, environ=environ)
    rng = np.random.default_rng(5)
    train = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 400),
            "spend": rng.normal(50, 20, 400),
            "visits": rng.integers(0, 30, 400),
        }
    )
    labels = (train["spend"] / 20 + train["visits"] / 10 + rng.normal(size=400) > 5).astype(int)
    model = LogisticRegression(max_iter=500).fit(train[COLUMNS], labels)
    features = FeatureStore(settings)
    try:
        features.apply()
        features.materialize(None, T0 + timedelta(minutes=90))
    finally:
        features.close()
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name="scorer", training_frame=train, feature_service="scoring")
        registry.set_alias("scorer/1", "production")
    return settings, model, source


def _latest(source: pd.DataFrame, users: list[str]) -> pd.DataFrame:
    last = source[source["event_timestamp"] == T0 + timedelta(hours=1)].set_index("user")
    return last.loc[users, ["spend", "visits"]].reset_index(drop=True)


def _body(users: list[str], ages: list[int], **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "entities": [{"user": u, "age": a} for u, a in zip(users, ages, strict=True)]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def test_entity_lookup_as_of_matches_the_native_model_and_is_logged_at_that_time(
    project: tuple[Settings, LogisticRegression, pd.DataFrame], serve: ServeFactory
) -> None:
    settings, model, source = project
    server = serve(serving(settings, replay=True), ["scorer"])
    users, ages = ["u3", "u17", "u0"], [25, 61, 44]
    as_of = T0 + timedelta(minutes=100)
    with server.client() as client:
        answer = client.post(
            "/v1/models/scorer:predict", json=_body(users, ages, as_of=as_of.isoformat())
        )
    assert answer.status_code == 200, answer.text
    expected_frame = pd.concat([pd.DataFrame({"age": ages}), _latest(source, users)], axis=1)
    expected = model.predict_proba(expected_frame[COLUMNS])[:, 1]
    got = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    logged = read_predictions(server.log_dir).to_pandas().sort_values("row")
    assert (logged["request_id"] == answer.headers["x-request-id"]).all()
    assert list(logged["time"]) == [pd.Timestamp(as_of)] * 3
    assert logged["feature.activity:spend"].tolist() == expected_frame["spend"].tolist()
    assert logged["input.user"].tolist() == users


def test_as_of_is_refused_unless_the_server_replays(
    project: tuple[Settings, LogisticRegression, pd.DataFrame], serve: ServeFactory
) -> None:
    settings, _, _ = project
    server = serve(settings, ["scorer"])
    with server.client() as client:
        answer = client.post(
            "/v1/models/scorer:predict", json=_body(["u1"], [30], as_of=T0.isoformat())
        )
    assert answer.status_code == 422
    assert "$.parameters.as_of" in answer.text and "serving.replay" in answer.text


@pytest.mark.parametrize("as_of", ["yesterday", "2020-01-01T01:00:00", 1577836800, None])
def test_bad_as_of_names_the_field(
    project: tuple[Settings, LogisticRegression, pd.DataFrame],
    serve: ServeFactory,
    as_of: Any,
) -> None:
    settings, _, _ = project
    server = serve(serving(settings, replay=True), ["scorer"])
    with server.client() as client:
        answer = client.post("/v1/models/scorer:predict", json=_body(["u1"], [30], as_of=as_of))
    assert answer.status_code == 422
    assert "$.parameters.as_of" in answer.text and "ISO-8601" in answer.text


def test_without_as_of_freshness_is_checked_against_the_clock(
    project: tuple[Settings, LogisticRegression, pd.DataFrame], serve: ServeFactory
) -> None:
    """The 2020 values are far past the 2 h ttl now: they read as missing, and say so."""
    settings, _, _ = project
    server = serve(serving(settings, replay=True), ["scorer"])
    with server.client() as client:
        stale = client.post("/v1/models/scorer:predict", json=_body(["u1"], [30]))
        fresh = client.post(
            "/v1/models/scorer:predict",
            json=_body(["u1"], [30], as_of=(T0 + timedelta(hours=2)).isoformat()),
        )
        too_late = client.post(
            "/v1/models/scorer:predict",
            json=_body(["u1"], [30], as_of=(T0 + timedelta(hours=3, seconds=1)).isoformat()),
        )
    assert fresh.status_code == 200, fresh.text
    for answer in (stale, too_late):
        assert answer.status_code == 422, answer.text
        problems = answer.json()["error"]["problems"]
        assert problems[0]["loc"] == "$.entities[0]"
        assert "activity:spend" in problems[0]["expected"] and "stale" in problems[0]["got"]


def test_unknown_entity_and_model_without_a_feature_service(
    project: tuple[Settings, LogisticRegression, pd.DataFrame], serve: ServeFactory
) -> None:
    settings, model, _ = project
    train = pd.DataFrame({"age": [20, 30], "spend": [1.0, 2.0], "visits": [1, 2]})
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name="plain", training_frame=train)
        registry.set_alias("plain/1", "production")
    server = serve(serving(settings, replay=True), ["scorer", "plain"])
    as_of = (T0 + timedelta(minutes=90)).isoformat()
    with server.client() as client:
        unknown = client.post(
            "/v1/models/scorer:predict", json=_body(["nobody"], [30], as_of=as_of)
        )
        plain = client.post("/v1/models/plain:predict", json=_body(["u1"], [30]))
    assert unknown.status_code == 422
    assert "activity:spend" in unknown.text and "missing feature" in unknown.text
    assert plain.status_code == 422
    assert "$.entities" in plain.text and "feature service" in plain.text


def test_monitor_skew_recomputes_the_logged_lookups(
    project: tuple[Settings, LogisticRegression, pd.DataFrame], serve: ServeFactory
) -> None:
    """Served at T0+100 min: the offline join agrees. Served "at T0+30 min" from a store
    already holding the T0+1 h values: the check finds exactly those rows' features."""
    from modelyard.monitoring.monitor import Monitor

    settings, _, _ = project
    server = serve(serving(settings, replay=True), ["scorer"])
    users = ["u1", "u2", "u3", "u4"]
    with server.client() as client:
        good = client.post(
            "/v1/models/scorer:predict",
            json=_body(users, [30] * 4, as_of=(T0 + timedelta(minutes=100)).isoformat()),
        )
    assert good.status_code == 200, good.text
    with Monitor(settings, log_dir=server.log_dir) as monitor:
        model = monitor.model("scorer")
        clean = monitor.skew(model)
        assert clean.rows == 4 and clean.ok, clean.to_dict()
        with server.client() as client:
            early = client.post(
                "/v1/models/scorer:predict",
                json=_body(users[:3], [30] * 3, as_of=(T0 + timedelta(minutes=30)).isoformat()),
            )
        assert early.status_code == 200, early.text
        found = monitor.skew(model)
    assert found.rows == 7 and not found.ok
    assert found.features["activity:spend"]["mismatches"] == 3
    assert found.features["activity:visits"]["checked"] == 7
