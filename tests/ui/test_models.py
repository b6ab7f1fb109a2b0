"""The models pages: the data they show, their actions, and the pages in Chromium.

The acceptance test of issue 14: an alias move made in the UI appears in ``modelyard
models history`` (the real CLI, another process) and in the page's timeline.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from playwright.sync_api import Page, expect
from sqlalchemy import event

from modelyard.config import Settings
from modelyard.gates.base import GateResult
from modelyard.gates.records import GateReport, list_evaluations, save_report
from modelyard.registry.client import ModelRegistry
from modelyard.serving.auth import ApiKeys
from modelyard.store.database import Database, open_database
from modelyard.ui.app import create_app
from modelyard.ui.model_data import evaluation_view, gate_items, model_detail, version_detail
from tests.ui.conftest import ADMIN_ENV, ADMIN_KEY, TestClient, UiServer
from tests.ui.model_project import gate_report, project_copy, shared_project

CLI = [sys.executable, "-m", "modelyard"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_project(tmp_path_factory)


@pytest.fixture
def own(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A copy of the project a test may change."""
    return project_copy(tmp_path_factory)


def _client(settings: Settings, *, read_only: bool = False) -> TestClient:
    keys = ApiKeys.from_settings((), ADMIN_ENV)
    return TestClient(create_app(settings, read_only=read_only, api_keys=keys))


def _headers(client: TestClient) -> dict[str, str]:
    client.get("/models")  # sets the CSRF cookie
    token = client.cookies.get("modelyard_csrf") or ""
    return {"X-CSRF-Token": token, "Authorization": f"Bearer {ADMIN_KEY}"}


def _cli_history(settings: Settings, name: str) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    done = subprocess.run(
        [*CLI, "--project", str(settings.project_dir), "models", "history", name, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


# -- data ------------------------------------------------------------------------------


def test_model_detail_merges_registry_gates_and_agent_newest_first(shared: Settings) -> None:
    with ModelRegistry(shared) as registry:
        detail = model_detail(registry, "toy")
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert detail["aliases"] == {"production": 1}
    kinds = [(i["kind"], i["action"]) for i in detail["timeline"]]
    assert ("gate", "gate") in kinds and ("agent", "agent retrain") in kinds
    assert ("registry", "alias") in kinds and kinds.count(("registry", "register")) == 2
    times = [i["at"] for i in detail["timeline"]]
    assert times == sorted(times, reverse=True)
    move = next(i for i in detail["timeline"] if i["action"] == "alias")
    assert (move["actor"], move["reason"], move["version_to"]) == ("tester", "first model", 1)


def test_version_detail_holds_evidence_profile_and_signature(shared: Settings) -> None:
    with ModelRegistry(shared) as registry:
        detail = version_detail(registry, "toy", 2)
    (evidence,) = detail["evidence"]
    assert evidence["alias"] == "production" and evidence["state"] == "passed"
    forest = {row["gate"]: row for row in evidence["evaluation"]["forest"]}
    assert set(forest) == {"metric:auc", "champion:auc"}  # the signature gate has no interval
    assert forest["champion:auc"] == {
        "gate": "champion:auc",
        "low": -0.01,
        "high": 0.034,
        "estimate": 0.012,
        "reference": 0.0,
        "passed": True,
    }
    assert forest["metric:auc"]["estimate"] == 0.812
    assert forest["metric:auc"]["reference"] == 0.7
    assert [c["name"] for c in detail["signature"]["columns"]] == ["x", "plan"]
    columns = {c["name"]: c for c in detail["profile"]["columns"]}
    assert columns["x"]["kind"] == "numeric" and sum(columns["x"]["y"]) == 50
    assert len(columns["x"]["x"]) == len(columns["x"]["y"])
    assert columns["plan"]["kind"] == "categorical" and sum(columns["plan"]["y"]) == 50
    assert detail["agent_actions"][0]["candidate_version"] == 2


finite = st.floats(-1e6, 1e6, allow_nan=False)
maybe = st.one_of(st.none(), finite, st.just(math.nan))


@hsettings(max_examples=100, deadline=None)
@given(
    low=maybe,
    high=maybe,
    numbers=st.dictionaries(
        st.sampled_from(["diff", "value", "min", "max", "rows", "other"]),
        st.one_of(st.none(), finite, st.text(max_size=3)),
        max_size=4,
    ),
)
def test_forest_rows_never_invent_a_point_or_an_interval(
    low: float | None, high: float | None, numbers: dict[str, object]
) -> None:
    ci = None if low is None or high is None else (low, high)
    result = GateResult("g", "metric", True, True, "s", numbers, ci)
    report = GateReport("m", 1, "production", None, "e", "c", (result,))
    (row,) = evaluation_view(report)["results"]
    forest = row["forest"]
    if ci is None or any(math.isnan(v) for v in ci):
        assert forest is None  # no interval, no row
        return
    assert (forest["low"], forest["high"]) == ci
    recorded = numbers.get("diff", numbers.get("value"))
    assert forest["estimate"] == (recorded if isinstance(recorded, int | float) else None)
    json.dumps(row, allow_nan=True)  # what the page embeds is JSON


@pytest.fixture(scope="module")
def memory_db() -> Iterator[Database]:
    db = open_database("sqlite://")
    yield db
    db.close()


@hsettings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=4), max_size=5))
def test_timeline_gate_items_match_the_evaluations_the_cli_reads(
    memory_db: Database, shapes: list[list[tuple[bool, bool]]]
) -> None:
    db = memory_db
    name, other = f"m{uuid.uuid4().hex[:8]}", f"o{uuid.uuid4().hex[:8]}"
    for i, results in enumerate(shapes):
        for model in (name, other):  # another model's evaluations stay out
            gates = tuple(
                GateResult(f"g{j}", "metric", passed, required, f"s{j} {i}", {}, None)
                for j, (passed, required) in enumerate(results)
            )
            save_report(db, GateReport(model, 1 + i % 2, "production", None, "e", "c", gates))
    items = gate_items(db, name)
    expected = list_evaluations(db, name)  # what `modelyard models history` shows
    assert [(i["evaluation_id"], i["passed"], i["reason"]) for i in items] == [
        (
            r.id,
            r.passed,
            "passed"
            if r.passed
            else "failed: " + "; ".join(f"{x.gate}: {x.summary}" for x in r.failed_required),
        )
        for r in expected
    ]


def test_model_page_reads_are_a_fixed_number_of_queries(own: Settings) -> None:
    """The model page's timeline reads the gate evaluations in two queries, not one per
    evaluation (a model gated a thousand times stays one page load)."""
    db = open_database(own.db_url)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    try:
        with ModelRegistry(own, db=db) as registry:
            for _ in range(5):
                save_report(db, gate_report())
            event.listen(db.engine, "before_cursor_execute", count)
            items = gate_items(db, "toy")
            event.remove(db.engine, "before_cursor_execute", count)
            assert len(items) == 6
            selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            assert len(selects) == 2
            assert len(model_detail(registry, "toy")["timeline"]) == 10
    finally:
        db.close()


def test_registry_records_the_actor_it_is_given(own: Settings) -> None:
    with ModelRegistry(own) as registry:
        registry.set_alias("toy/2", "staging", reason="try", actor="ui:someone")
        registry.set_alias("toy/1", "staging", reason="back")
        history = registry.history("toy")
    moves = [(e.alias, e.version_to, e.actor) for e in history if e.alias == "staging"]
    assert moves[0] == ("staging", 2, "ui:someone")
    assert moves[1][2] != "ui:someone"  # the default actor is unchanged


# -- actions ---------------------------------------------------------------------------


def test_actions_move_roll_back_and_archive_audited_with_the_key(own: Settings) -> None:
    with _client(own) as client:
        headers = _headers(client)
        moved = client.post(
            "/actions/models/toy/alias",
            json={"alias": "production", "version": "2", "reason": "better", "mode": "promote"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["previous"] == 1 and moved.json()["actor"] == "ui:env-1"
        archive = client.post("/actions/models/toy/2/archive", json={}, headers=headers)
        assert archive.status_code == 409  # it holds production
        assert "holds the alias" in archive.json()["error"]["message"]
        client.post(
            "/actions/models/toy/alias",
            json={"alias": "staging", "version": 1, "reason": "a"},
            headers=headers,
        )
        client.post(
            "/actions/models/toy/alias",
            json={"alias": "staging", "version": 2, "reason": "b"},
            headers=headers,
        )
        back = client.post(
            "/actions/models/toy/rollback", json={"alias": "staging"}, headers=headers
        )
        assert back.status_code == 200, back.text
        assert back.json()["version"] == 1
    with ModelRegistry(own) as registry:
        history = registry.history("toy")
        assert registry.get_version("toy@staging").version == 1
    ui_rows = [e for e in history if e.actor == "ui:env-1"]
    assert [(e.action, e.alias, e.version_from, e.version_to) for e in ui_rows] == [
        ("promote", "production", 1, 2),
        ("alias", "staging", None, 1),
        ("alias", "staging", 1, 2),
        ("rollback", "staging", 2, 1),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"alias": "production", "version": "x", "reason": "r"}, "version"),
        ({"alias": "production", "version": True, "reason": "r"}, "version"),
        ({"alias": "production", "version": 1}, "reason"),
        ({"alias": "", "version": 1, "reason": "r"}, "alias"),
        ({"alias": 3, "version": 1, "reason": "r"}, "alias"),
        ({"alias": "production", "version": 1, "reason": "r", "mode": "yolo"}, "mode"),
        ([1, 2], "body"),
    ],
)
def test_a_bad_action_body_is_a_422_naming_the_field(
    shared: Settings, body: object, field: str
) -> None:
    with _client(shared) as client:
        answer = client.post("/actions/models/toy/alias", json=body, headers=_headers(client))
    assert answer.status_code == 422, answer.text
    assert f"at {field}" in answer.json()["error"]["message"]


def test_actions_need_the_admin_key_and_csrf_and_a_writable_ui(shared: Settings) -> None:
    body = {"alias": "production", "version": 2, "reason": "r"}
    with _client(shared) as client:
        headers = _headers(client)
        no_key = {"X-CSRF-Token": headers["X-CSRF-Token"]}
        assert (
            client.post("/actions/models/toy/alias", json=body, headers=no_key).status_code == 401
        )
        bad_csrf = {**headers, "X-CSRF-Token": "nope.nope"}
        assert (
            client.post("/actions/models/toy/alias", json=body, headers=bad_csrf).status_code == 403
        )
        predict_only = {**headers, "Authorization": "Bearer predict-only-key"}
        refused = client.post("/actions/models/toy/alias", json=body, headers=predict_only)
        assert refused.status_code == 403
    with _client(shared, read_only=True) as client:
        page = client.get("/models/toy")
        assert page.status_code == 200 and "data-action" not in page.text
        assert "data-action" not in client.get("/models/toy/2").text
        refused = client.post("/actions/models/toy/alias", json=body, headers=_headers(client))
        assert refused.status_code == 403
    with ModelRegistry(shared) as registry:
        assert registry.get_version("toy@production").version == 1  # nothing moved


def test_unknown_models_and_versions_are_404_pages(shared: Settings) -> None:
    with _client(shared) as client:
        assert client.get("/models/nope").status_code == 404
        assert "Did you mean &#39;toy&#39;?" in client.get("/models/tyo").text
        assert client.get("/models/toy/9").status_code == 404
        assert client.get("/actions/models/toy/alias").status_code == 405
        # too large for the store's INTEGER column: a 404 naming it, not an OverflowError 500
        huge = client.get("/models/toy/99999999999999999999999")
        assert huge.status_code == 404 and "No version of toy" in huge.text
        assert client.get(f"/models/toy/{2**31}").status_code == 404


# -- in the browser --------------------------------------------------------------------


def test_models_pages_render_with_charts_and_no_errors(
    shared: Settings, ui_server: UiServer, page: Page
) -> None:
    base = ui_server(shared)
    page.goto(f"{base}/models")
    expect(page.locator("#models-table")).to_contain_text("toy")
    page.click("text=toy")
    expect(page.locator("#timeline li")).to_have_count(5)
    expect(page.locator("#timeline")).to_contain_text("gates passed")
    expect(page.locator("#timeline")).to_contain_text("agent retrain")
    page.goto(f"{base}/models/toy/2")
    expect(page.locator(".chart.forest[data-drawn=true]")).to_have_count(1)
    expect(page.locator(".chart.forest .main-svg").first).to_be_visible()
    expect(page.locator(".profile-chart[data-group=columns][data-drawn=true]")).to_have_count(2)
    expect(page.locator("#signature-table")).to_contain_text("plan")


def test_an_alias_move_made_in_the_ui_appears_in_models_history(
    own: Settings, ui_server: UiServer, page: Page
) -> None:
    base = ui_server(own)
    page.goto(f"{base}/models/toy")
    form = page.locator("#move-form")
    form.locator("input[name=alias]").fill("production")
    form.locator("select[name=version]").select_option("2")
    form.locator("input[name=reason]").fill("moved in the browser")
    page.click("#move-alias")
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-form button[value=ok]")
    expect(page.locator("#flash")).to_contain_text("toy@production → 2 (was 1)")
    page.wait_for_load_state("load")  # the page reloads itself
    expect(page.locator("#timeline li").first).to_contain_text("moved in the browser")
    expect(page.locator("#timeline li").first).to_contain_text("ui:env-1")
    rows = _cli_history(own, "toy")
    moves = [r for r in rows if r["actor"] == "ui:env-1"]
    assert len(moves) == 1
    assert {
        k: moves[0][k] for k in ("action", "alias", "version_from", "version_to", "reason")
    } == {
        "action": "alias",
        "alias": "production",
        "version_from": 1,
        "version_to": 2,
        "reason": "moved in the browser",
    }
