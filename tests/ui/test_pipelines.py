"""The pipelines pages: runs with step counts, a run's step graph, a tuning study."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from playwright.sync_api import Page, expect

from modelyard.config import Settings, init_project, load_settings
from modelyard.serving.auth import ApiKeys
from modelyard.store.database import open_database
from modelyard.ui.app import create_app
from modelyard.ui.graph_layout import GraphNode, layout
from modelyard.ui.pipeline_data import (
    pipeline_run_detail,
    pipelines_index,
    study_detail,
    study_history,
)
from tests.ui.conftest import ADMIN_ENV, TestClient, UiServer
from tests.ui.model_project import STUDY, shared_project


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_project(tmp_path_factory)


def _runs(settings: Settings) -> list[dict[str, object]]:
    db = open_database(settings.db_url)
    try:
        runs: list[dict[str, object]] = pipelines_index(db, settings)["runs"]
    finally:
        db.close()
    return runs


# -- the layout ------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    n = draw(st.integers(1, 12))
    ids = [f"n{i}" for i in range(n)]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=20)) if pairs else []
    order = draw(st.permutations(ids))  # nodes handed over in any order
    return list(order), [(ids[a], ids[b]) for a, b in chosen]


@hsettings(max_examples=100, deadline=None)
@given(graph=dags())
def test_every_edge_points_to_a_later_layer_and_no_boxes_overlap(
    graph: tuple[list[str], list[tuple[str, str]]],
) -> None:
    ids, edges = graph
    laid = layout([GraphNode(i, i) for i in ids], edges)
    at = {n["id"]: n for n in laid["nodes"]}
    assert set(at) == set(ids)  # nothing lost
    for a, b in edges:
        assert at[a]["layer"] < at[b]["layer"]
        assert at[a]["x"] + at[a]["w"] < at[b]["x"]  # drawn left to right
    boxes = [(n["x"], n["y"]) for n in laid["nodes"]]
    assert len(set(boxes)) == len(boxes)
    for n in laid["nodes"]:
        assert n["x"] + n["w"] <= laid["width"] and n["y"] + n["h"] <= laid["height"]
    assert len(laid["edges"]) == len(set(edges))


def test_a_cycle_keeps_every_node() -> None:
    laid = layout([GraphNode("a", "a"), GraphNode("b", "b")], [("a", "b"), ("b", "a")])
    assert {n["id"] for n in laid["nodes"]} == {"a", "b"}


@pytest.mark.parametrize(
    ("direction", "best"),
    [("minimize", [3.0, 1.0, 1.0, 0.5]), ("maximize", [3.0, 3.0, 3.0, 3.0])],
)
def test_study_history_is_the_best_so_far(direction: str, best: list[float]) -> None:
    trials = [
        {"number": i, "state": "COMPLETE", "value": v} for i, v in enumerate([3.0, 1.0, 2.0, 0.5])
    ]
    trials.insert(2, {"number": 9, "state": "PRUNED", "value": None})
    history = study_history(trials, direction)
    assert history["numbers"] == [0, 1, 2, 3] and history["best"] == best


# -- data ------------------------------------------------------------------------------


def test_index_counts_ran_cached_failed_and_skipped_steps(shared: Settings) -> None:
    runs = _runs(shared)
    assert [r["status"] for r in runs] == ["failed", "completed", "completed"]
    assert [r["steps"] for r in runs] == [
        {"ran": 0, "cached": 2, "failed": 1, "skipped": 1, "total": 4},
        {"ran": 2, "cached": 2, "failed": 0, "skipped": 0, "total": 4},
        {"ran": 4, "cached": 0, "failed": 0, "skipped": 0, "total": 4},
    ]


def test_run_graph_follows_the_recorded_inputs(shared: Settings) -> None:
    failed = str(_runs(shared)[0]["run_id"])
    db = open_database(shared.db_url)
    try:
        detail = pipeline_run_detail(db, failed[:8])  # a prefix is enough
    finally:
        db.close()
    steps = {s["step"]: s for s in detail["steps"]}
    assert {k: s["status"] for k, s in steps.items()} == {
        "load": "cached",
        "split": "cached",
        "train": "failed",
        "evaluate": "skipped",
    }
    assert "c must be positive" in (steps["train"]["error"] or "")
    name = {s["run_id"]: s["step"] for s in detail["steps"]}
    edges = {(name[e["from"]], name[e["to"]], e["css"]) for e in detail["graph"]["edges"]}
    assert edges == {
        ("load", "split", ""),
        ("split", "train", ""),
        ("train", "evaluate", "waited"),  # never started: the failed step it waited for
    }
    layers = {name[n["id"]]: n["layer"] for n in detail["graph"]["nodes"]}
    assert layers == {"load": 0, "split": 1, "train": 2, "evaluate": 3}
    assert all(n["href"] == f"/runs/{n['id']}" for n in detail["graph"]["nodes"])


def test_study_detail_has_history_and_importances(shared: Settings) -> None:
    details = study_detail(shared, STUDY)
    assert details["complete"] == 6 and details["direction"] == "minimize"
    best = details["history"]["best"]
    assert best == sorted(best, reverse=True) and best[-1] == details["best_value"]
    assert set(details["importances"] or {}) == {"lr", "depth"}
    assert details["param_names"] == ["depth", "lr"]


def test_bad_ids_and_query_strings_are_pages_not_500s(shared: Settings) -> None:
    keys = ApiKeys.from_settings((), ADMIN_ENV)
    with TestClient(create_app(shared, api_keys=keys)) as client:
        assert client.get("/pipelines?limit=x").status_code == 422
        assert client.get("/pipelines?limit=0").status_code == 422
        assert client.get("/pipelines/runs/zz").status_code == 422
        assert client.get("/pipelines/runs/" + "0" * 32).status_code == 404
        missing = client.get("/pipelines/studies/toy-serch")
        assert missing.status_code == 404
        assert f"Did you mean &#39;{STUDY}&#39;?" in missing.text
        assert client.get("/pipelines?pipeline=nope").status_code == 200


def test_looking_at_a_project_that_never_tuned_writes_nothing(tmp_path: Path) -> None:
    # opening the study storage creates its SQLite file: a page (read-only above all)
    # must not write into the project just by being looked at
    init_project(tmp_path / "p", name="p")
    settings = load_settings(tmp_path / "p")
    before = sorted(q.name for q in (tmp_path / "p").rglob("*"))
    with TestClient(create_app(settings, read_only=True)) as client:
        assert client.get("/pipelines").status_code == 200
        assert client.get("/pipelines/studies/anything").status_code == 404
    after = sorted(q.name for q in (tmp_path / "p").rglob("*"))
    assert not [n for n in after if n.endswith(".optuna.db")]
    assert [n for n in after if n not in before and not n.startswith("modelyard.db")] == []


# -- in the browser --------------------------------------------------------------------


def test_pipelines_pages_render_graph_and_study_charts(
    shared: Settings, ui_server: UiServer, page: Page
) -> None:
    base = ui_server(shared)
    page.goto(f"{base}/pipelines")
    expect(page.locator("#pipeline-runs tbody tr")).to_have_count(3)
    expect(page.locator("#studies")).to_contain_text(STUDY)
    page.locator("#pipeline-runs tbody tr").first.locator("a").click()
    expect(page.locator("#step-graph .node")).to_have_count(4)
    expect(page.locator("#step-graph .node.step-failed")).to_contain_text("train")
    expect(page.locator("#step-graph .edge.waited")).to_have_count(1)
    expect(page.locator("#steps")).to_contain_text("c must be positive")
    page.goto(f"{base}/pipelines/studies/{STUDY}")
    expect(page.locator("#history-chart[data-drawn=true] .main-svg").first).to_be_visible()
    expect(page.locator("#importance-chart[data-drawn=true]")).to_have_count(1)
    expect(page.locator("#trials tbody tr")).to_have_count(6)
