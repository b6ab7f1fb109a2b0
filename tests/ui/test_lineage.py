"""The lineage page: data and code through the pipeline run to a version, and after it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from modelyard.config import Settings
from modelyard.registry.client import ModelRegistry
from modelyard.serving.auth import ApiKeys
from modelyard.store.database import open_database
from modelyard.ui.app import create_app
from modelyard.ui.lineage_data import lineage_graph, version_after
from modelyard.ui.model_data import model_detail, version_detail
from modelyard.ui.pipeline_data import pipelines_index
from tests.ui.conftest import ADMIN_ENV, TestClient, UiServer
from tests.ui.model_project import add_records, log_two_versions, shared_project


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_project(tmp_path_factory)


def test_graph_runs_from_the_data_file_through_the_steps_to_the_version(
    shared: Settings,
) -> None:
    db = open_database(shared.db_url)
    try:
        data = lineage_graph(shared, db, "toy/2")
    finally:
        db.close()
    nodes = {n["id"]: n for n in data["graph"]["nodes"]}
    assert data["root"] == "model:toy/2"
    steps = [d for d in data["details"] if d["node"] == "step"]
    assert sorted(d["step"] for d in steps) == ["load", "split", "train"]  # not evaluate
    root = nodes["model:toy/2"]
    assert root["layer"] == max(n["layer"] for n in nodes.values())  # the version on the right
    for edge in data["graph"]["edges"]:  # every edge points downstream, left to right
        assert nodes[edge["from"]]["layer"] < nodes[edge["to"]]["layer"]
    files = [d for d in data["details"] if d["node"] == "data" and d.get("kind") == "file"]
    assert [d["as"] for d in files] == ["path"]  # the CSV file load read
    assert all(d["source_hash"] for d in steps)  # code version of every step
    train = next(d for d in steps if d["step"] == "train")
    assert train["params"] == {"c": "2.0"}
    assert len(nodes) == len(data["details"])  # a node reached twice is drawn once


def test_after_a_version_deployments_windows_incidents_and_the_retrain(
    shared: Settings,
) -> None:
    db = open_database(shared.db_url)
    try:
        with ModelRegistry(shared, db=db) as registry:
            first = version_after(registry, db, "toy", 1)
            second = version_after(registry, db, "toy", 2)
    finally:
        db.close()
    assert first["aliases"] == ["production"]
    assert [(m["alias"], m["version_to"]) for m in first["moves"]] == [("production", 1)]
    assert [(w["kind"], w["windows"], w["alarms"]) for w in first["windows"]] == [("drift", 1, 1)]
    assert [(i["rule"], i["cause"], i["state"]) for i in first["incidents"]] == [
        ("drift", "x", "open")
    ]
    assert [a["candidate_version"] for a in first["replaced_by"]] == [2]
    assert second["made_by"][0]["champion_version"] == 1 and not second["replaced_by"]
    assert second["windows"] == [] and second["incidents"] == [] and second["aliases"] == []


def _app(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, api_keys=ApiKeys.from_settings((), ADMIN_ENV)))


def test_refs_redirect_404_and_422(shared: Settings) -> None:
    with _app(shared) as client:
        moved = client.get("/lineage?ref=toy@production", follow_redirects=False)
        assert moved.status_code == 302 and moved.headers["location"] == "/lineage/toy/1"
        assert client.get("/lineage?ref=nothing-here").status_code == 404
        assert client.get("/lineage/toy/7").status_code == 404
        assert client.get("/lineage/toy/99999999999999999999999").status_code == 404
        assert client.get("/lineage/nope/1").status_code == 404
        assert client.get("/lineage?ref=abcdef").status_code == 404
        runs = client.get("/pipelines").text
        run_id = runs.split("/pipelines/runs/")[1][:32]
        by_run = client.get(f"/lineage?ref={run_id[:8]}")
        assert by_run.status_code == 200 and "pipeline flights" in by_run.text


def test_lineage_pages_render_with_no_errors(
    shared: Settings, ui_server: UiServer, page: Page
) -> None:
    base = ui_server(shared)
    page.goto(f"{base}/lineage")
    page.fill("input[name=ref]", "toy@production")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/lineage/toy/1")
    expect(page.locator("#lineage-graph .node.lin-model")).to_contain_text("toy/1")
    expect(page.locator("#lineage-graph .node.lin-step")).to_have_count(3)
    expect(page.locator("#incidents")).to_contain_text("open")
    expect(page.locator("#retrains")).to_contain_text("toy/2")
    page.locator("#retrains a", has_text="toy/2").click()
    expect(page).to_have_url(f"{base}/lineage/toy/2")
    expect(page.locator("#retrains")).to_contain_text("to replace")


def test_the_pages_data_on_both_metadata_stores(settings: Settings) -> None:
    """Every query of the three pages on SQLite and PostgreSQL (``settings`` runs on each)."""
    log_two_versions(settings)
    add_records(settings)
    with ModelRegistry(settings) as registry:
        db = registry.db
        detail = model_detail(registry, "toy")
        assert [i["what"] for i in detail["timeline"]][:3] == [
            "agent retrain (promoted)",
            "gates passed",
            "moved alias",
        ]
        version = version_detail(registry, "toy", 2)
        assert version["evidence"][0]["state"] == "passed" and version["evaluations"] == 1
        assert {c["name"] for c in version["profile"]["columns"]} == {"x", "plan"}
        after = version_after(registry, db, "toy", 1)
        assert [(w["kind"], w["windows"], w["alarms"]) for w in after["windows"]] == [
            ("drift", 1, 1)
        ]
        assert after["incidents"][0]["state"] == "open"
        assert after["replaced_by"][0]["candidate_version"] == 2
        graph = lineage_graph(settings, db, "toy@production")
        assert graph["root"] == "model:toy/1"
        index = pipelines_index(db, settings)
        assert index["runs"] == [] and index["pipelines"] == [] and index["studies"] == []
    with _app(settings) as client:
        for path in ("/models", "/models/toy", "/models/toy/2", "/lineage/toy/1", "/pipelines"):
            assert client.get(path).status_code == 200, path
