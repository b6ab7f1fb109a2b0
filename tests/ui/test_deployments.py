"""The deployments pages: policy, traffic split, request rate and latency from the log.

The oracle is the list of requests the fixture wrote to the prediction log: bucketed
and summarised with NumPy (``percentile`` with linear interpolation is DuckDB's
``quantile_cont``), it must match every number the page computes. Error rates likewise:
from the error records the fixture wrote, ``errors / (answered + errors)`` per version,
route and bucket, the unversioned ones counted apart.
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
from modelyard.store.predlog import ErrorRecord, PredictionLog, PredictionRecord
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


Answered = tuple[int, str, int]  # version, route, time_us
Failed = tuple[int | None, str | None, int]


def _error_oracle(
    answered: list[Answered], failed: list[Failed], since: int, origin: int, width_us: int
) -> tuple[dict[str, dict[str, tuple[int, int]]], dict[str, int]]:
    """Per label and bucket (ISO time): (answered, errors); and the unversioned errors."""
    per: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    unversioned: dict[str, int] = defaultdict(int)

    def bucket(us: int) -> str:
        start = origin + (us - origin) // width_us * width_us
        return datetime.fromtimestamp(start / 1e6, UTC).isoformat()

    for version, route, us in answered:
        if us >= since and route != "shadow":
            per[f"v{version} {route}"][bucket(us)][0] += 1
    for maybe_version, maybe_route, us in failed:
        if us < since:
            continue
        if maybe_version is None:
            unversioned[bucket(us)] += 1
        else:
            per[f"v{maybe_version} {maybe_route}"][bucket(us)][1] += 1
    return (
        {k: {t: (a, e) for t, (a, e) in v.items()} for k, v in per.items()},
        dict(unversioned),
    )


def _check_errors(detail: dict, answered: list[Answered], failed: list[Failed]) -> None:
    times = [us for _, _, us in answered] + [us for _, _, us in failed]
    newest, first = max(times), min(times)
    last_s = detail["test_last_s"]
    since = first if last_s is None else max(first, newest - last_s * 1_000_000)
    width_us = detail["bucket_s"] * 1_000_000
    assert detail["bucket_s"] == bucket_width((newest - since) / 1e6)
    origin = since - since % width_us
    expected, unversioned = _error_oracle(answered, failed, since, origin, width_us)
    got = {s["label"]: s for s in detail["errors"]["series"]}
    assert set(got) == set(expected)
    for label, buckets in expected.items():
        series = got[label]
        assert series["time"] == sorted(buckets)
        assert series["answered"] == [buckets[t][0] for t in series["time"]]
        assert series["errors"] == [buckets[t][1] for t in series["time"]]
        assert series["rate"] == [buckets[t][1] / sum(buckets[t]) for t in series["time"]]
        total_answered = sum(a for a, _ in buckets.values())
        total_errors = sum(e for _, e in buckets.values())
        assert series["rate_total"] == total_errors / (total_answered + total_errors)
    shown = detail["errors"]["unversioned"]
    assert dict(zip(shown["time"], shown["errors"], strict=True)) == unversioned
    assert shown["total"] == sum(unversioned.values())


@pytest.mark.parametrize("last_s", [None, 86400])
def test_error_rates_match_a_recomputation_from_the_records(
    ops: OpsProject, http: TestClient, last_s: int | None
) -> None:
    assert any(v is None for v, _, _ in ops.errors) and any(v for v, _, _ in ops.errors)
    detail = _detail(ops, last_s)
    answered = [(v, r, us) for v, r, us, _, _ in ops.requests]
    _check_errors({**detail, "test_last_s": last_s}, answered, ops.errors)
    page = http.get("/deployments/churn", params={} if last_s is None else {"last": "24h"})
    assert page.status_code == 200
    assert "not available" not in page.text and 'id="chart-errors"' in page.text
    for series in detail["errors"]["series"]:
        row = page.text.split(f'data-label="{series["label"]}"')[1].split("</tr>")[0]
        assert f"{series['rate_total'] * 100:.2f}%" in row
        assert f">{series['errors_total']}<" in row and f">{series['answered_total']}<" in row
    total = detail["errors"]["unversioned"]["total"]
    assert f"<strong>{total}</strong> request(s) of churn" in page.text
    index = http.get("/deployments")
    assert index.status_code == 200 and 'href="/deployments/churn"' in index.text
    answered_all = sum(1 for _, r, _, _, _ in ops.requests if r != "shadow")
    rate = len(ops.errors) / (answered_all + len(ops.errors))
    row = index.text.split('data-model="churn"')[1].split("</tr>")[0]
    assert f">{len(ops.errors)} " in row and f"{rate * 100:.2f}%" in row


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
    for chart in ("rate", "latency", "split", "errors"):
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


_FAILED = st.tuples(
    st.sampled_from([(1, "primary"), (2, "canary"), (3, "primary"), (None, None)]),
    st.integers(0, 3 * 86400 * 1_000_000),  # time after T0, µs
    st.sampled_from([(422, "invalid_input"), (404, "not_found"), (500, "model")]),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(_REQUEST, max_size=20),
    failures=st.lists(_FAILED, min_size=1, max_size=20),
    last=st.sampled_from([None, 3600]),
)
def test_generated_error_logs_give_the_recomputed_error_rates(
    ops: OpsProject,
    requests: list[tuple[tuple[int, str], int, int, int]],
    failures: list[tuple[tuple[int | None, str | None], int, tuple[int, str]]],
    last: int | None,
) -> None:
    """Generated: errors of versions with and without answers, before any version, any time."""
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
        for i, ((version, route), offset, (status, kind)) in enumerate(failures):
            log.append_error_blocking(
                ErrorRecord(
                    record_id=f"e{i}", request_id=f"e{i}", time_us=t0 + offset, model="m",
                    protocol="v2", status=status, error=kind, latency_us=5,
                    version=version, route=route,
                )
            )  # fmt: skip
        log.append_error_blocking(  # another model's error counts nowhere here
            ErrorRecord(
                record_id="other", request_id="other", time_us=t0, model="other",
                protocol="v1", status=500, error="model", latency_us=1, version=1, route="primary",
            )
        )  # fmt: skip
    detail = deployment_detail(local, "m", None, last)
    assert detail is not None
    answered = [(v, r, t0 + offset) for (v, r), offset, _, _ in requests]
    failed = [(v, r, t0 + offset) for (v, r), offset, _ in failures]
    _check_errors({**detail, "test_last_s": last}, answered, failed)
    kinds = sum(k["errors"] for k in detail["error_kinds"])
    assert (
        kinds
        == sum(s["errors_total"] for s in detail["errors"]["series"])
        + detail["errors"]["unversioned"]["total"]
    )
