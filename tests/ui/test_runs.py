"""The runs pages: table (filter, sort, columns, paging), compare, the run page, artifacts."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Page

from modelyard.config import Settings
from modelyard.errors import FilterSyntaxError
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.filters import parse_filter
from modelyard.ui.app import create_app
from tests.ui.conftest import TestClient, UiServer, make_project

ROW = re.compile(r'<tr data-run="([0-9a-f]+)">')


@pytest.fixture(scope="module")
def http(project: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(project)) as client:
        yield client


@pytest.fixture(scope="module")
def all_runs(project: Settings) -> list[Any]:
    """Every run of the project, read through the tracking client (the oracle)."""
    client = TrackingClient(project)
    try:
        return client.search_runs(max_results=1000)
    finally:
        client.close()


def _rows(html: str) -> list[str]:
    return ROW.findall(html)


def _by_name(all_runs: list[Any], name: str) -> Any:
    return next(r for r in all_runs if r.name == name)


# -- the table -------------------------------------------------------------------------


def test_a_filter_narrows_the_table_to_what_the_client_finds(
    http: TestClient, project: Settings
) -> None:
    client = TrackingClient(project)
    try:
        for text in ("params.lr = '0.1'", "metrics.auc > 0.72", "tags.team = 'risk'", ""):
            expected = {r.id for r in client.search_runs(filter=text, max_results=1000)}
            answer = http.get("/runs", params={"filter": text})
            assert answer.status_code == 200
            assert set(_rows(answer.text)) == expected, text
            assert f"of {len(expected)} runs" in answer.text
    finally:
        client.close()


def test_a_bad_filter_is_shown_at_its_token(http: TestClient) -> None:
    text = "metrics.auc >> 0.8 and params.model = 'hgb'"
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    answer = http.get("/runs", params={"filter": text})
    assert answer.status_code == 400
    marked = re.search(r"<mark>(.*?)</mark>", answer.text)
    assert marked is not None
    assert text[caught.value.position :].startswith(marked.group(1).replace("&gt;", ">"))
    before = answer.text[: marked.start()].rsplit("\n", 1)[1]
    assert len(before.replace("&gt;", ">")) == caught.value.position


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(
        alphabet=st.sampled_from(list("metrics.aucparms_lr<>=!'\"() 0123456789,-andorinlike`")),
        max_size=40,
    ),
    st.sampled_from(["", "metrics.auc DESC", "params.lr", "bogus order here", "name ASC"]),
)
def test_any_filter_or_order_is_a_page_or_a_400_never_a_500(
    http: TestClient, text: str, order: str
) -> None:
    for path in ("/runs", "/api/runs"):
        answer = http.get(path, params={"filter": text, "order": order})
        assert answer.status_code in (200, 400), (path, text, order, answer.text[:300])
        if path == "/api/runs" and answer.status_code == 400:
            assert answer.json()["error"]["type"] == "invalid_filter"


@pytest.mark.parametrize(
    ("column", "key"),
    [
        ("metrics.auc", lambda r: r.metrics.get("auc")),
        ("params.depth", lambda r: r.params.get("depth")),
        ("name", lambda r: r.name),
        ("start_time", lambda r: r.start_time),
    ],
)
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_sort_by_any_column(
    http: TestClient, all_runs: list[Any], column: str, key: Any, direction: str
) -> None:
    answer = http.get("/api/runs", params={"order": f"{column} {direction}"})
    got = [r["id"] for r in answer.json()["runs"]]
    having = [r for r in all_runs if key(r) is not None]
    ordered = sorted(having, key=key, reverse=direction == "DESC")
    # missing values sort last either way; ties keep the store's order, so compare keys
    assert [key(_by_id(all_runs, i)) for i in got[: len(ordered)]] == [key(r) for r in ordered]
    page = http.get("/runs", params={"order": f"{column} {direction}"})
    assert _rows(page.text) == got


def _by_id(all_runs: list[Any], run_id: str) -> Any:
    return next(r for r in all_runs if r.id == run_id)


def test_chosen_columns_are_the_ones_shown(http: TestClient) -> None:
    answer = http.get(
        "/runs", params={"experiment": "churn", "columns": ["tags.team", "params.lr"]}
    )
    header = answer.text.split("<thead>", 2)[1].split("</thead>")[0]
    assert "tags.team" in header and "params.lr" in header
    assert "metrics.auc" not in header and "params.depth" not in header
    default = http.get("/runs", params={"experiment": "churn"}).text
    assert "metrics.auc" in default.split("</thead>")[0]


def test_bad_columns_or_paging_values_are_422_not_500(http: TestClient) -> None:
    for params in ({"columns": "nope"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}):
        assert http.get("/runs", params=params).status_code == 422, params
    assert http.get("/runs", params={"experiment": "nope"}).status_code == 404


def test_pages_cover_every_run_once(http: TestClient, all_runs: list[Any]) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        answer = http.get("/api/runs", params={"limit": 2, "offset": offset}).json()
        assert answer["total"] == len(all_runs)
        if not answer["runs"]:
            break
        seen += [r["id"] for r in answer["runs"]]
        offset += 2
    assert sorted(seen) == sorted(r.id for r in all_runs)
    html = http.get("/runs", params={"limit": 2, "offset": 2}).text
    assert f"3\N{EN DASH}4 of {len(all_runs)} runs" in html
    assert "previous" in html and "next" in html


# -- compare ---------------------------------------------------------------------------


def test_compare_diffs_params_and_inputs(http: TestClient, all_runs: list[Any]) -> None:
    runs = [_by_name(all_runs, f"hgb-{i}") for i in range(3)]
    answer = http.get("/runs/compare", params={"run": [r.id for r in runs]})
    assert answer.status_code == 200
    diff = answer.text.split('id="param-diff"')[1].split("</table>")[0]
    rows = {key: cls for cls, key in re.findall(r'<tr class="(\w+)"><td>(\w+)</td>', diff)}
    assert rows == {"depth": "differs", "lr": "differs", "model": "same"}
    inputs = answer.text.split('id="input-diff"')[1].split("</table>")[0]
    assert "different data" in inputs  # hgb-2 trained on other data
    same = http.get("/runs/compare", params={"run": [runs[0].id, runs[1].id]}).text
    assert "same data" in same.split('id="input-diff"')[1]


def test_compare_charts_every_metric_from_its_history(
    http: TestClient, all_runs: list[Any], project: Settings
) -> None:
    runs = [_by_name(all_runs, f"hgb-{i}") for i in range(2)]
    answer = http.get("/runs/compare", params={"run": ",".join(r.id for r in runs)})
    block = answer.text.split('id="curves-spec">')[1].split("</script>")[0]
    spec = json.loads(block)
    assert spec["keys"] == ["auc", "loss"] and spec["runs"] == [r.id for r in runs]
    curves = http.get(spec["source"], params={"run": spec["runs"], "key": "loss"}).json()
    assert [c["run"] for c in curves["series"]] == [r.id for r in runs]
    client = TrackingClient(project)
    try:
        for run, series in zip(runs, curves["series"], strict=True):
            history = client.get_metric_history(run.id, "loss")
            assert series["value"] == [m.value for m in history]
            assert series["step"] == [m.step for m in history]
    finally:
        client.close()
    missing = http.get(spec["source"], params={"run": runs[0].id})
    assert missing.status_code == 422 and missing.json()["error"]["type"]
    unknown = http.get(spec["source"], params={"run": "0" * 32, "key": "loss"})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"


def test_compare_of_an_unknown_run_is_404(http: TestClient) -> None:
    assert http.get("/runs/compare", params={"run": "0" * 32}).status_code == 404
    assert http.get("/runs/compare").status_code == 422


# -- the run page ----------------------------------------------------------------------


def test_run_page_shows_params_inputs_previews_and_environment(
    http: TestClient, all_runs: list[Any]
) -> None:
    run = _by_name(all_runs, "hgb-0")
    html = http.get(f"/runs/{run.id}").text
    assert "trained on the march data" in html  # text
    assert "&#34;layers&#34;" in html or '"layers"' in html  # JSON
    assert "<th>a</th><th>b</th>" in html  # CSV and Parquet heads
    assert html.count("first 3 of 3 rows") == 2
    assert f'src="/runs/{run.id}/artifacts/plot.png"' in html
    assert '<iframe class="preview" sandbox' in html
    assert run.python_version in html and "train" in html


def test_run_page_shows_child_runs_logs_and_produced_versions(
    http: TestClient, all_runs: list[Any]
) -> None:
    parent = _by_name(all_runs, "pipeline")
    step = _by_name(all_runs, "train-step")
    html = http.get(f"/runs/{parent.id}").text
    assert f'href="/runs/{step.id}"' in html and f'href="/runs/{step.id}#logs"' in html
    assert 'href="/models/churn/1"' in html
    step_html = http.get(f"/runs/{step.id}").text
    assert "fitting...\ndone" in step_html
    assert 'href="/models/churn/1"' in step_html


def test_run_pages_read_artifacts_from_an_object_store(tmp_path: Path) -> None:
    # artifacts behind an fsspec URL (memory:// in this process, as s3:// would be):
    # previews, logs and raw artifacts come through the artifact store, not the disk
    url = f"memory://ui-artifacts-{uuid.uuid4().hex}/project"
    settings = make_project(tmp_path / "p", artifacts=url)
    assert not (tmp_path / "p" / ".modelyard" / "artifacts").exists()
    with TrackingClient(settings) as tracking:
        runs = {r.name: r for r in tracking.search_runs(None)}
    with TestClient(create_app(settings)) as client:
        html = client.get(f"/runs/{runs['hgb-0'].id}").text
        assert "trained on the march data" in html
        assert html.count("first 3 of 3 rows") == 2  # CSV and Parquet heads
        raw = client.get(f"/runs/{runs['hgb-0'].id}/artifacts/config.json")
        assert raw.status_code == 200 and raw.json() == {"lr": 0.1, "layers": [64, 32]}
        assert "fitting...\ndone" in client.get(f"/runs/{runs['train-step'].id}").text


def test_raw_artifacts_are_sandboxed(http: TestClient, all_runs: list[Any]) -> None:
    run = _by_name(all_runs, "hgb-0")
    answer = http.get(f"/runs/{run.id}/artifacts/report.html")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"].startswith("sandbox")
    assert http.get(f"/runs/{run.id}/artifacts/plot.png").headers["content-type"] == "image/png"
    for bad in ("nope.txt", "../../etc/passwd", "%2e%2e/x"):
        assert http.get(f"/runs/{run.id}/artifacts/{bad}").status_code == 404, bad


def test_unknown_run_is_a_404_page(http: TestClient) -> None:
    for run_id in ("0" * 32, "x'; drop table runs; --"):
        answer = http.get(f"/runs/{run_id}")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")


# -- in the browser --------------------------------------------------------------------


def test_runs_pages_load_filter_and_compare_in_a_browser(
    project: Settings, ui_server: UiServer, page: Page, all_runs: list[Any]
) -> None:
    url = ui_server(project)
    page.goto(url + "/experiments")
    page.click("text=churn")
    page.wait_for_selector("#runs")
    churn = [r for r in all_runs if r.experiment == "churn"]
    assert page.locator("#runs tbody tr").count() == len(churn)
    # a filter narrows the table
    page.fill("#filter", "params.lr = '0.1'")
    page.click("#filter-form button[type=submit]")
    page.wait_for_url(re.compile(r"filter="))
    assert page.locator("#runs tbody tr").count() == 2
    # select both and compare: both curves drawn
    page.check("#select-all")
    page.click("#compare-button")
    page.locator("#chart-loss").scroll_into_view_if_needed()
    page.wait_for_selector("#chart-loss .scatterlayer .trace")
    assert page.locator("#chart-loss .scatterlayer .trace").count() == 2
    page.select_option("#x-axis", "time")
    # all points were logged within milliseconds: by time the curves may have no width
    page.wait_for_selector("#chart-loss .scatterlayer .trace", state="attached")
    assert page.locator("#chart-loss .scatterlayer .trace").count() == 2
    # every run page renders, with its charts and previews
    for run in all_runs:
        page.goto(f"{url}/runs/{run.id}")
        page.wait_for_load_state("load")
    page.goto(f"{url}/runs/{_by_name(all_runs, 'hgb-0').id}")
    page.locator("#chart-loss").scroll_into_view_if_needed()
    page.wait_for_selector("#chart-loss .scatterlayer .trace")
    assert page.frame_locator("iframe.preview").locator("h1").inner_text() == "report"


def test_the_runs_pages_work_on_postgresql(pg_database: str, tmp_path: Any) -> None:
    settings = make_project(tmp_path / "pg", db_url=pg_database, model=False)
    client = TrackingClient(settings)
    try:
        expected = client.search_runs(
            filter="metrics.auc > 0.72", order_by=["metrics.auc DESC"], max_results=100
        )
        everything = client.search_runs(max_results=100)
    finally:
        client.close()
    with TestClient(create_app(settings)) as http:
        answer = http.get(
            "/runs", params={"filter": "metrics.auc > 0.72", "order": "metrics.auc DESC"}
        )
        assert answer.status_code == 200
        assert _rows(answer.text) == [r.id for r in expected]
        bad = http.get("/runs", params={"filter": "metrics.auc >> 1"})
        assert bad.status_code == 400 and "<mark>" in bad.text
        ids = [r.id for r in everything if r.name.startswith("hgb-")]
        assert http.get("/runs/compare", params={"run": ids}).status_code == 200
        for run in everything:
            assert http.get(f"/runs/{run.id}").status_code == 200, run.name
