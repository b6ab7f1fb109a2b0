"""The monitoring pages: drift heatmap, prediction drift, performance, incidents, actions.

The windows are the real ones ``Monitor.run`` stored over the fixture's prediction log
(``tenure`` shifted on the last day); the heatmap's cells are checked against the stored
windows read back through ``MonitorResults``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Page

from modelyard.agent.records import ActionStore
from modelyard.registry.client import ModelRegistry
from modelyard.serving.auth import ApiKeys
from modelyard.store.database import open_database
from modelyard.store.monitor_results import MonitorResults, WindowResult
from modelyard.ui.app import create_app
from modelyard.ui.monitoring_data import RATIO_CAP, heatmap_figure, ratio, version_detail
from modelyard.ui.pages.monitoring import REPORT_POLICY
from tests.ui.conftest import ADMIN_ENV, ADMIN_KEY, TestClient, UiServer
from tests.ui.ops_project import DAYS, OpsProject, shared_ops_project


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> OpsProject:
    return shared_ops_project(tmp_path_factory)


@pytest.fixture(scope="module")
def http(ops: OpsProject) -> Iterator[TestClient]:
    keys = ApiKeys.from_settings(ops.settings.serving.api_keys, ADMIN_ENV)
    with TestClient(create_app(ops.settings, api_keys=keys)) as client:
        yield client


@pytest.fixture(scope="module")
def results(ops: OpsProject) -> Iterator[MonitorResults]:
    db = open_database(ops.settings.db_url)
    yield MonitorResults(db)
    db.close()


def _csrf(client: TestClient) -> dict[str, str]:
    client.get("/monitoring")
    return {"X-CSRF-Token": client.cookies["modelyard_csrf"]}


def test_heatmap_cells_are_the_stored_effect_over_threshold(
    ops: OpsProject, results: MonitorResults
) -> None:
    detail = version_detail(results, ActionStore(results.db), "churn", 1)
    windows = results.windows("churn", 1, "drift")
    assert detail["length_s"] == 86400 and detail["drift_windows"] == len(windows) == DAYS
    (heatmap,) = detail["figures"]["heatmap"]["data"]
    assert set(heatmap["y"]) == {"tenure", "spend"}
    for row, name in zip(heatmap["z"], heatmap["y"], strict=True):
        for cell, window in zip(row, windows, strict=True):
            column = window.summary["columns"][name]
            assert cell == pytest.approx(column["effect"] / column["threshold"])
    assert heatmap["zmax"] == RATIO_CAP
    # the shifted last day: tenure drifted there, and is the first row (ranked cause)
    assert heatmap["y"][0] == "tenure" and heatmap["text"][0][-1] == "✕"
    assert windows[-1].summary["columns"]["tenure"]["drifted"] is True
    assert heatmap["text"][0][:-1] == [
        "✕" if w.summary["columns"]["tenure"]["drifted"] else "" for w in windows[:-1]
    ]
    assert "prediction" in detail["figures"]
    assert ratio({"effect": 1.0, "threshold": 0.0}) is None


def test_performance_has_realised_interval_and_cbpe(results: MonitorResults) -> None:
    detail = version_detail(results, ActionStore(results.db), "churn", 1)
    windows = results.windows("churn", 1, "performance")
    assert detail["metrics"] and detail["performance_windows"] == len(windows) == DAYS
    metric = detail["metrics"][0]
    high, low, realised, estimated = detail["figures"]["perf-0"]["data"]
    for i, window in enumerate(windows):
        stored = (
            window.summary.get("metrics", {}).get(metric) if window.summary.get("matured") else None
        )
        assert realised["y"][i] == (None if not stored else stored.get("value"))
        assert low["y"][i] == (None if not stored else stored.get("low"))
        assert high["y"][i] == (None if not stored else stored.get("high"))
        assert estimated["y"][i] == window.summary.get("estimated", {}).get(metric)
    assert any(v is not None for v in estimated["y"])


def test_incidents_open_resolved_and_the_agent_actions(ops: OpsProject, http: TestClient) -> None:
    page = http.get("/monitoring/churn/1")
    assert page.status_code == 200
    assert 'id="open-incidents"' in page.text and 'id="resolved-incidents"' in page.text
    assert ops.action_id in page.text and "pipeline train failed" in page.text
    assert f'data-incident="{ops.open_incident}"' in page.text
    assert f"/actions/monitoring/incidents/{ops.open_incident}/acknowledge" in page.text
    # the index and the model redirect
    index = http.get("/monitoring")
    assert index.status_code == 200 and 'href="/monitoring/churn/1"' in index.text
    moved = http.get("/monitoring/churn", follow_redirects=False)
    assert moved.status_code == 302 and moved.headers["location"] == "/monitoring/churn/1"


def test_acknowledge_needs_the_admin_key_and_csrf(
    ops: OpsProject, http: TestClient, results: MonitorResults
) -> None:
    path = f"/actions/monitoring/incidents/{ops.resolved_incident}/acknowledge"
    headers = _csrf(http)
    body = {"note": "seen"}
    refused = http.post(path, json=body, headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
    weak = http.post(
        path, json=body, headers={**headers, "Authorization": "Bearer predict-only-key"}
    )
    assert weak.status_code == 403
    no_csrf = http.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert no_csrf.status_code == 403 and no_csrf.json()["error"]["type"] == "csrf"
    assert results.incident(ops.resolved_incident).acknowledgements == []
    done = http.post(path, json=body, headers={**headers, "Authorization": f"Bearer {ADMIN_KEY}"})
    assert done.status_code == 200, done.text
    (ack,) = results.incident(ops.resolved_incident).acknowledgements
    assert ack["by"].startswith("ui:") and ack["note"] == "seen"
    bad = http.post(
        path, content=b"[1]", headers={**headers, "Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_input"
    gone = http.post(
        "/actions/monitoring/incidents/999999/acknowledge",
        json=body,
        headers={**headers, "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"


def test_read_only_renders_no_action_and_refuses_them(ops: OpsProject) -> None:
    with TestClient(create_app(ops.settings, read_only=True)) as client:
        page = client.get("/monitoring/churn/1")
        assert page.status_code == 200 and "data-action" not in page.text
        answer = client.post(
            f"/actions/monitoring/incidents/{ops.open_incident}/acknowledge",
            json={},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert answer.status_code == 403


def test_approve_canary_calls_the_agent(ops: OpsProject, http: TestClient) -> None:
    page = http.get("/monitoring/churn/1")
    assert "Approve canary" in page.text and ops.awaiting_id in page.text
    headers = {**_csrf(http), "Authorization": f"Bearer {ADMIN_KEY}"}
    bad = http.post("/actions/monitoring/approve", json={"model": "churn"}, headers=headers)
    assert bad.status_code == 422 and "version" in bad.json()["error"]["message"]
    done = http.post(
        "/actions/monitoring/approve", json={"model": "churn", "version": 2}, headers=headers
    )
    assert done.status_code == 200, done.text
    db = open_database(ops.settings.db_url)
    try:
        action = ActionStore(db).get(ops.awaiting_id)
        approved = [e for e in ActionStore(db).events(action.id) if e.kind == "approved"]
        aliases = {m.name: m for m in ModelRegistry(ops.settings, db=db).list_models()}
    finally:
        db.close()
    assert action.state == "canary" and approved[0].detail["who"].startswith("ui:")
    assert aliases["churn"].aliases["canary"] == 2
    again = http.post(
        "/actions/monitoring/approve", json={"model": "churn", "version": 2}, headers=headers
    )
    assert again.status_code == 409


def test_bad_window_is_shown_and_unknown_version_is_404(http: TestClient) -> None:
    bad = http.get("/monitoring/churn/1", params={"window": "weekly"})
    assert bad.status_code == 200 and 'id="window-problem"' in bad.text
    assert http.get("/monitoring/churn/9").status_code == 404
    assert http.get("/monitoring/nobody").status_code == 404
    # beyond what the store's integer columns hold: nothing, not an overflow's 500
    huge = "9" * 25
    assert http.get(f"/monitoring/churn/{huge}").status_code == 404
    assert http.get(f"/monitoring/churn/{2**31}/report").status_code == 404
    headers = {**_csrf(http), "Authorization": f"Bearer {ADMIN_KEY}"}
    answer = http.post(
        f"/actions/monitoring/incidents/{huge}/acknowledge", json={}, headers=headers
    )
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"
    answer = http.post(
        "/actions/monitoring/approve", json={"model": "churn", "version": 2**31}, headers=headers
    )
    assert answer.status_code == 422


def test_full_report_is_written_into_the_state_dir(ops: OpsProject, http: TestClient) -> None:
    answer = http.get("/monitoring/churn/1/report", params={"domain": "0"})
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == REPORT_POLICY
    assert "Monitoring report: churn v1" in answer.text
    written = ops.settings.project_dir / ".modelyard" / "reports" / "churn-v1.html"
    assert written.read_text(encoding="utf-8") == answer.text


def test_monitoring_pages_in_a_browser(ops: OpsProject, ui_server: UiServer, page: Page) -> None:
    url = ui_server(ops.settings)
    page.goto(url + "/monitoring")
    page.click("#monitored a:text('v1')")
    page.wait_for_url("**/monitoring/churn/1")
    for chart in ("heatmap", "prediction", "perf-0", "coverage"):
        page.wait_for_selector(f"#chart-{chart}[data-drawn='true']")
    assert page.locator("#chart-heatmap .heatmaplayer, #chart-heatmap .hm").count() > 0
    # acknowledge the open incident from the page: the key is asked for once
    row = page.locator(f"tr[data-incident='{ops.open_incident}']")
    row.locator("input[name=note]").fill("on it")
    row.locator("button:text('Acknowledge')").click()
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-form button[value=ok]")
    page.wait_for_selector("#flash.ok")
    page.wait_for_load_state("load")
    page.wait_for_selector(f"tr[data-incident='{ops.open_incident}'] .ok:text('by ui:')")
    assert "on it" in page.inner_text(f"tr[data-incident='{ops.open_incident}']")


def test_full_report_in_a_browser(ops: OpsProject, ui_server: UiServer, page: Page) -> None:
    url = ui_server(ops.settings)
    # one self-contained 5 MB page (plotly.js inline): slow to parse on a busy machine
    page.goto(url + "/monitoring/churn/1/report?domain=0", timeout=60_000)
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
    assert "Monitoring report: churn v1" in page.title()


_NUMBER = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=3),
)
_COLUMN = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"effect": _NUMBER, "threshold": _NUMBER, "drifted": st.booleans()},
        optional={"p_adjusted": _NUMBER},
    ),
)
_SUMMARY = st.fixed_dictionaries(
    {},
    optional={
        "columns": st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _COLUMN, max_size=4),
            st.lists(st.integers(), max_size=2),
        ),
        "ranked": st.one_of(st.lists(st.sampled_from(["a", "c", "zz"]), max_size=3), st.none()),
        "outputs": st.dictionaries(st.sampled_from(["proba_1"]), _COLUMN, max_size=1),
    },
)


@settings(max_examples=60, deadline=None)
@given(summaries=st.lists(_SUMMARY, min_size=1, max_size=5))
@example(  # a CI run found it: the ratio overflowed to Infinity in the figure's JSON
    summaries=[{"columns": {"a": {"effect": 1.3e202, "threshold": 7.2e-107, "drifted": False}}}]
)
def test_any_stored_summary_gives_a_finite_heatmap(summaries: list[dict]) -> None:
    """Generated: summaries of any shape (older versions, missing or odd values) draw a
    heatmap whose cells are effect / threshold or empty, and whose JSON has no NaN."""
    windows = [
        WindowResult("m", 1, "drift", i * 10, i * 10 + 10, 5, False, s)
        for i, s in enumerate(summaries)
    ]
    figure = heatmap_figure(windows)
    names = {n for s in summaries if isinstance(s.get("columns"), dict) for n in s["columns"]}
    if not names:
        assert figure is None
        return
    assert figure is not None
    (trace,) = figure["data"]
    assert set(trace["y"]) == names and len(trace["z"]) == len(trace["y"])
    for row, name in zip(trace["z"], trace["y"], strict=True):
        assert len(row) == len(windows)
        for cell, summary in zip(row, summaries, strict=True):
            columns = summary.get("columns")
            column = columns.get(name) if isinstance(columns, dict) else None
            effect = column.get("effect") if isinstance(column, dict) else None
            threshold = column.get("threshold") if isinstance(column, dict) else None
            numbers = all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in (effect, threshold)
            )
            if numbers and threshold > 0:
                largest = sys.float_info.max  # never Infinity: the browser refuses it
                expected = max(-largest, min(largest, effect / threshold))
                assert cell == pytest.approx(expected, nan_ok=False)
            else:
                assert cell is None
    json.loads(json.dumps(figure), parse_constant=_refuse)


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} in the figure's JSON: the browser's JSON.parse refuses it")
