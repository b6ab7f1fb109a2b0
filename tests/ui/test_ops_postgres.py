"""The features, deployments and monitoring pages on a PostgreSQL metadata store.

The same project as the SQLite tests (``ops_project``), built on a fresh PostgreSQL
database: every page renders, an incident is acknowledged, a candidate approved.
"""

from __future__ import annotations

from pathlib import Path

from modelyard.serving.auth import ApiKeys
from modelyard.store.database import open_database
from modelyard.store.monitor_results import MonitorResults
from modelyard.ui.app import create_app
from tests.ui.conftest import ADMIN_ENV, ADMIN_KEY, TestClient
from tests.ui.ops_project import make_ops_project

PAGES = [
    "/features",
    "/features/views/delays?skew=1&sample=20",
    "/deployments",
    "/deployments/churn?last=24h",
    "/monitoring",
    "/monitoring/churn/1",
]


def test_pages_and_actions_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    ops = make_ops_project(tmp_path / "project", db_url=pg_database)
    keys = ApiKeys.from_settings((), ADMIN_ENV)
    with TestClient(create_app(ops.settings, api_keys=keys)) as client:
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text[-500:])
        assert "no mismatch" in client.get(PAGES[1]).text
        assert ops.action_id in client.get("/monitoring/churn/1").text
        headers = {
            "X-CSRF-Token": client.cookies["modelyard_csrf"],
            "Authorization": f"Bearer {ADMIN_KEY}",
        }
        path = f"/actions/monitoring/incidents/{ops.open_incident}/acknowledge"
        assert client.post(path, json={"note": "pg"}, headers=headers).status_code == 200
        approve = {"model": "churn", "version": 2}
        answer = client.post("/actions/monitoring/approve", json=approve, headers=headers)
        assert answer.status_code == 200, answer.text
    db = open_database(pg_database)
    try:
        acked = MonitorResults(db).incident(ops.open_incident).acknowledged
    finally:
        db.close()
    assert acked is not None and acked["note"] == "pg" and acked["by"] == "ui:env-1"
