"""The features pages: views, services, sources, online freshness, history, skew now."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest
from playwright.sync_api import Page

from modelyard.features.definitions import Entity, Feature, FeatureView, FileSource
from modelyard.features.store import FeatureStore
from modelyard.store.database import open_database
from modelyard.store.schema import materializations
from modelyard.ui.app import create_app
from modelyard.ui.feature_data import features_index, freshness, materialization_history
from tests.ui.conftest import TestClient, UiServer
from tests.ui.ops_project import OpsProject, shared_ops_project


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> OpsProject:
    return shared_ops_project(tmp_path_factory)


@pytest.fixture(scope="module")
def http(ops: OpsProject) -> Iterator[TestClient]:
    with TestClient(create_app(ops.settings)) as client:
        yield client


def test_index_lists_views_services_sources_with_freshness(
    ops: OpsProject, http: TestClient
) -> None:
    page = http.get("/features")
    assert page.status_code == 200
    for text in ("delays", "delays:delay, delays:n", "data/flights.parquet", "carrier"):
        assert text in page.text
    # oracle: the store's own record of its last materialization
    with FeatureStore(ops.settings) as store:
        last = store.materializations("delays")[-1]
        db = open_database(ops.settings.db_url)
        try:
            data = features_index(store, db, time.time_ns() // 1_000_000)
        finally:
            db.close()
    (view,) = data["views"]
    assert view["freshness"]["end_ms"] == int(last.end.timestamp() * 1000)
    assert view["freshness"]["rows"] == last.rows > 0
    assert view["freshness"]["expired"] is False
    assert view["ttl_s"] == 86400
    assert [s["name"] for s in data["services"]] == ["model"]


def test_freshness_flags_values_older_than_the_ttl(ops: OpsProject) -> None:
    db = open_database(ops.settings.db_url)
    try:
        with FeatureStore(ops.settings, db=db) as store:
            views = store.list_views()
            end_ms = int(store.materializations("delays")[-1].end.timestamp() * 1000)
            day = 86_400_000
            assert freshness(db, views, end_ms + day - 1)["delays"]["expired"] is False
            late = freshness(db, views, end_ms + day + 1)["delays"]
            assert late["expired"] is True and late["behind_s"] == pytest.approx(86400.001)
    finally:
        db.close()


def test_online_store_credentials_are_masked(ops: OpsProject) -> None:
    secret = "redis://:hunter2@127.0.0.1:1/0"
    settings = msgspec.structs.replace(
        ops.settings,
        features=msgspec.structs.replace(ops.settings.features, online_store=secret),
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/features")
    assert page.status_code == 200 and "hunter2" not in page.text and "127.0.0.1:1" in page.text


def test_view_page_history_and_a_skew_check_run_now(ops: OpsProject, http: TestClient) -> None:
    page = http.get("/features/views/delays")
    assert page.status_code == 200
    assert 'id="history"' in page.text and 'id="skew"' not in page.text
    checked = http.get("/features/views/delays", params={"skew": "1", "sample": "50"})
    assert checked.status_code == 200 and 'id="skew"' in checked.text
    with FeatureStore(ops.settings) as store:
        (oracle,) = store.check_skew(["delays"], 50)
    # freshly materialized: no skew (an int feature past its ttl, online None and offline
    # <NA>, was reported as a mismatch)
    assert oracle.ok and oracle.entities > 0
    assert f"{oracle.entities} entities checked" in checked.text and "no mismatch" in checked.text


def test_bad_sample_is_shown_and_unknown_view_is_404(http: TestClient) -> None:
    bad = http.get("/features/views/delays", params={"skew": "1", "sample": "lots"})
    assert bad.status_code == 200
    assert "sample: expected a whole number from 1 to 10000, got &#39;lots&#39;" in bad.text
    missing = http.get("/features/views/nope")
    assert missing.status_code == 404 and "nope" in missing.text


def test_features_pages_in_a_browser(ops: OpsProject, ui_server: UiServer, page: Page) -> None:
    url = ui_server(ops.settings)
    page.goto(url + "/features")
    page.click("#views a:text('delays')")
    page.wait_for_url("**/features/views/delays")
    page.click("text=Check skew now")
    page.wait_for_selector("#skew")
    assert "no mismatch" in page.inner_text("#skew")


def test_freshness_reads_the_newest_run_of_each_view_on_every_backend(db_url: str) -> None:
    """One grouped query: the newest materialization per view, on SQLite and PostgreSQL."""
    db = open_database(db_url)
    try:
        runs = [("a", 1, 10, 5), ("b", 2, 20, 6), ("a", 3, 30, 7), ("a", 4, 25, 8)]
        with db.write() as conn:
            for view, at, end_ms, rows in runs:
                conn.execute(
                    materializations.insert().values(
                        view=view, start=None, end=end_ms * 1000, watermark=None, rows=rows, at=at
                    )
                )
        source = FileSource("x.parquet", timestamp_field="ts")
        entity = Entity("e", ["k"])
        views = [
            FeatureView(name, entities=[entity], source=source, features=[Feature("f")], ttl=ttl)
            for name, ttl in (("a", None), ("b", 1), ("c", None))
        ]
        found = freshness(db, views, now_ms=2020)
        # the newest run of "a" is the last one recorded, whose end is not the largest
        assert (found["a"]["end_ms"], found["a"]["rows"], found["a"]["expired"]) == (25, 8, False)
        assert found["b"]["behind_s"] == 2.0 and found["b"]["expired"] is True
        assert found["c"] is None
        history, total = materialization_history(db, "a", limit=2)
        assert total == 3 and [h["rows"] for h in history] == [8, 7]
    finally:
        db.close()
