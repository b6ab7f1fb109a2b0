"""The deployments pages: policy, traffic split, request rate and latency from the log.

The oracle is the list of requests the fixture wrote to the prediction log: bucketed
and summarised with NumPy (``percentile`` with linear interpolation is DuckDB's
``quantile_cont``), it must match every number the page computes.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Page

from modelyard.registry.client import ModelRegistry
from modelyard.store.predlog import PredictionLog, PredictionRecord
from modelyard.ui.app import create_app
from modelyard.ui.deployment_data import (
    BUCKET_WIDTHS_S,
    MAX_BUCKETS,
    bucket_width,
    deployment_detail,
)
from tests.ui.conftest import TestClient, UiServer
from tests.ui.ops_project import OpsProject, shared_ops_project


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> OpsProject:
    return shared_ops_project(tmp_path_factory)


@pytest.fixture(scope="module")
def http(ops: OpsProject) -> Iterator[TestClient]:
    with TestClient(create_app(ops.settings)) as client:
        yield client


def _detail(ops: OpsProject, last_s: int | None) -> dict:
    registry = ModelRegistry(ops.settings)
    try:
        model = {m.name: m for m in registry.list_models()}["churn"]
        detail = deployment_detail(ops.settings, "churn", model, last_s)
    finally:
        registry.close()
    assert detail is not None
    return detail


@pytest.mark.parametrize("last_s", [None, 86400, 3 * 3600])
def test_series_match_the_logged_requests(ops: OpsProject, last_s: int | None) -> None:
    detail = _detail(ops, last_s)
    newest = max(r[2] for r in ops.requests)
    first = min(r[2] for r in ops.requests)
    since = first if last_s is None else max(first, newest - last_s * 1_000_000)
    width = detail["bucket_s"]
    assert width == bucket_width((newest - since) / 1e6)
    width_us = width * 1_000_000
    origin = since - since % width_us
    expected: dict[tuple[int, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for version, route, us, latency, _rows in ops.requests:
        if us >= since:
            bucket = origin + (us - origin) // width_us * width_us
            expected[(version, route)][
                datetime.fromtimestamp(bucket / 1e6, UTC).isoformat()
            ].append(latency)
    got = {(s["version"], s["route"]): s for s in detail["series"]}
    assert set(got) == set(expected) == {(1, "primary"), (2, "canary")}
    for key, buckets in expected.items():
        series = got[key]
        assert series["time"] == sorted(buckets)
        assert series["requests"] == [len(buckets[t]) for t in series["time"]]
        assert series["rate"] == [len(buckets[t]) / width for t in series["time"]]
        for q, name in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms")):
            oracle = [float(np.percentile(buckets[t], q)) / 1000 for t in series["time"]]
            assert series[name] == pytest.approx(oracle, rel=1e-9)
    total = sum(len(b) for s in expected.values() for b in s.values())
    shares = {(s["version"], s["route"]): s["share"] for s in detail["split"]}
    for key, buckets in expected.items():
        assert shares[key] == pytest.approx(sum(len(b) for b in buckets.values()) / total)


def test_policy_resolves_aliases_to_versions(ops: OpsProject) -> None:
    policy = _detail(ops, None)["policy"]
    assert policy["configured"] and policy["registered"]
    assert policy["primary"] == {"alias": "production", "version": 1, "weight": 0.75}
    assert policy["canary"] == {"alias": "canary", "version": 2, "weight": 0.25}
    assert policy["shadow"] is None


def test_bucket_width_keeps_the_bucket_count_bounded() -> None:
    for span in [0, 1, 59, 3600, 86400 * 3, 86400 * 365, 86400 * 365 * 30]:
        width = bucket_width(span)
        assert width in BUCKET_WIDTHS_S
        smaller = [w for w in BUCKET_WIDTHS_S if w < width]
        assert span / width < MAX_BUCKETS or width == BUCKET_WIDTHS_S[-1]
        assert all(span / w >= MAX_BUCKETS for w in smaller)


def test_page_says_errors_are_not_persisted_and_invents_no_rate(http: TestClient) -> None:
    page = http.get("/deployments/churn")
    assert page.status_code == 200
    assert "Error rate: not available" in page.text and "/metrics" in page.text
    assert "error rate:" not in page.text.lower().replace("error rate: not available", "")
    index = http.get("/deployments")
    assert index.status_code == 200 and "Error rate: not available" in index.text
    assert 'href="/deployments/churn"' in index.text


def test_bad_range_is_shown_and_unknown_model_is_404(http: TestClient) -> None:
    bad = http.get("/deployments/churn", params={"last": "soon"})
    assert bad.status_code == 200 and 'id="range-problem"' in bad.text
    assert "Expected last as a number and a unit" in bad.text
    assert http.get("/deployments/nope").status_code == 404


def test_deployment_pages_in_a_browser(ops: OpsProject, ui_server: UiServer, page: Page) -> None:
    url = ui_server(ops.settings)
    page.goto(url + "/deployments")
    page.click("#deployments a:text('churn')")
    page.wait_for_url("**/deployments/churn")
    for chart in ("rate", "latency", "split"):
        page.wait_for_selector(f"#chart-{chart}[data-drawn='true']")
        assert page.locator(f"#chart-{chart} .main-svg").count() > 0
    assert page.locator("a:text('last day')").get_attribute("href") == "?last=24h"


_REQUEST = st.tuples(
    st.sampled_from([(1, "primary"), (2, "canary"), (2, "shadow"), (3, "primary")]),
    st.integers(0, 3 * 86400 * 1_000_000),  # time after T0, µs
    st.integers(1, 2_000_000),  # latency, µs
    st.integers(1, 4),  # rows: a request counts once whatever its rows
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(_REQUEST, min_size=1, max_size=30), last=st.sampled_from([None, 3600]))
def test_generated_logs_summarise_like_numpy(
    ops: OpsProject, requests: list[tuple[tuple[int, str], int, int, int]], last: int | None
) -> None:
    """Generated: any mix of versions, routes, times, latencies and row counts."""
    root = Path(tempfile.mkdtemp())
    local = msgspec.structs.replace(ops.settings, project_dir=root)
    t0 = 1_700_000_000_000_000
    with PredictionLog(root / local.serving.log_dir, durable=False) as log:
        for i, ((version, route), offset, latency, rows) in enumerate(requests):
            log.append_blocking(
                PredictionRecord(
                    request_id=f"r{i}", record_id=f"r{i}", time_us=t0 + offset, model="m",
                    version=version, rows=rows, inputs={"x": [1.0] * rows},
                    outputs={"y": [0.0] * rows}, latency_us=latency, route=route,
                )
            )  # fmt: skip
    detail = deployment_detail(local, "m", None, last)
    assert detail is not None
    newest = t0 + max(r[1] for r in requests)
    first = t0 + min(r[1] for r in requests)
    since = first if last is None else max(first, newest - last * 1_000_000)
    width_us = detail["bucket_s"] * 1_000_000
    origin = since - since % width_us
    expected: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for (version, route), offset, latency, _rows in requests:
        if t0 + offset >= since:
            bucket = origin + (t0 + offset - origin) // width_us * width_us
            expected[f"v{version} {route}"][bucket].append(latency)
    got = {s["label"]: s for s in detail["series"]}
    assert set(got) == set(expected)
    for label, buckets in expected.items():
        times = sorted(buckets)
        assert got[label]["requests"] == [len(buckets[t]) for t in times]
        assert got[label]["p99_ms"] == pytest.approx(
            [float(np.percentile(buckets[t], 99)) / 1000 for t in times], rel=1e-9
        )
    answered = {k: v for k, v in expected.items() if not k.endswith("shadow")}
    total = sum(len(b) for s in answered.values() for b in s.values())
    for row in detail["split"]:
        share = sum(len(b) for b in answered[row["label"]].values()) / total
        assert row["share"] == pytest.approx(share)
