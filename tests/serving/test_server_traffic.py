"""Hot swap, canary, sticky routing, shadow and live traffic changes on a live server."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd

from modelyard.config import TrafficSettings
from modelyard.store.predlog import read_predictions

from .conftest import NAME, Project, ServeFactory, make_frame, records, serving

PREDICT = f"/v1/models/{NAME}:predict"


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def test_hot_swap_under_load_never_fails_a_request(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    server = serve(serving(project.settings, watch_interval_s=0.2))
    rows = records(held_out.head(4))
    oracle = {v: project.proba(v, held_out.head(4)) for v in (1, 2)}
    results: list[tuple[float, int, str, list[float], float]] = []
    stop = threading.Event()

    def client() -> None:
        with server.client() as http:
            while not stop.is_set():
                sent = time.monotonic()
                answer = http.post(PREDICT, json={"instances": rows})
                probs = []
                if answer.status_code == 200:
                    probs = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
                version = answer.headers.get("X-Model-Version", "?")
                results.append((sent, answer.status_code, version, probs, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(results) > 30, 10, "requests before the swap")
        moved_at = time.monotonic()
        project.registry.set_alias(f"{NAME}/2", "production")
        _wait(
            lambda: sum(1 for r in results if r[0] > moved_at and r[2] == "2") > 30,
            8,
            "answers from v2",
        )
        # once v2 answered, a request sent later never gets v1
        first_v2 = min(r[4] for r in results if r[2] == "2")
        switch_s = first_v2 - moved_at

        # a version that cannot load (no signature) keeps v2 serving
        frame, _ = make_frame()
        broken = project.registry.log_model(
            project.models[1], name=NAME, training_frame=frame, no_signature=True
        )
        project.registry.set_alias(f"{NAME}/{broken.version}", "production")
        deployment = server.state.deployments[NAME]
        _wait(lambda: "primary" in deployment.errors, 8, "the failed load to be reported")
        broken_at = time.monotonic()
        _wait(lambda: sum(1 for r in results if r[0] > broken_at) > 30, 8, "more answers")
        with server.client() as http:
            assert http.get("/v2/health/ready").status_code == 200
            assert http.get(f"/v2/models/{NAME}/ready").status_code == 200
            metrics = http.get("/metrics").text
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert switch_s < 5.0
    statuses = Counter(r[1] for r in results)
    assert statuses == Counter({200: len(results)}), statuses
    after = [r for r in results if r[0] >= first_v2]
    assert {r[2] for r in after} == {"2"}
    assert {r[2] for r in results} == {"1", "2"}
    for _, _, version, probs, _ in results:
        np.testing.assert_allclose(probs, oracle[int(version)], atol=1e-6)
    assert f"v{broken.version} (primary) failed to load" in deployment.errors["primary"]
    assert 'modelyard_swaps_total{model="churn",outcome="failed"}' in metrics
    assert 'modelyard_swaps_total{model="churn",outcome="swapped"} 1.0' in metrics


def test_canary_share_sticky_users_and_live_weight_changes(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "canary")
    weight = 0.3
    policy = TrafficSettings(
        primary="production", canary="canary", canary_weight=weight, sticky_key="header:X-User"
    )
    settings = serving(project.settings, traffic={NAME: policy})
    admin = "adm-key-7781"
    server = serve(settings, environ={"MODELYARD_API_KEYS": f"{admin}:admin"})
    auth = {"Authorization": f"Bearer {admin}"}
    rows = records(held_out.head(1))
    oracle = {v: project.proba(v, held_out.head(1))[0] for v in (1, 2)}
    n = 400
    with server.client(headers=auth) as http:
        versions = []
        for _ in range(n):
            answer = http.post(PREDICT, json={"instances": rows})
            assert answer.status_code == 200
            version = int(answer.headers["X-Model-Version"])
            prob = answer.json()["predictions"][0]["probabilities"]["1"]
            assert math.isclose(prob, oracle[version], abs_tol=1e-6)
            versions.append(version)
        share = versions.count(2) / n
        sigma = math.sqrt(weight * (1 - weight) / n)
        assert abs(share - weight) < 4 * sigma, f"canary share {share} (n={n})"

        by_user: dict[str, set[str]] = {}
        for i in range(40):
            user = f"user-{i % 20}"
            answer = http.post(PREDICT, json={"instances": rows}, headers={"X-User": user})
            by_user.setdefault(user, set()).add(answer.headers["X-Model-Version"])
        assert all(len(v) == 1 for v in by_user.values()), by_user
        assert {v for vs in by_user.values() for v in vs} == {"1", "2"}  # 20 users, both sides

        for new_weight, expected in ((0.0, {"1"}), (1.0, {"2"})):
            changed = http.put(
                f"/admin/models/{NAME}/traffic",
                json={"primary": "production", "canary": "canary", "canary_weight": new_weight},
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["policy"]["canary_weight"] == new_weight
            seen = {
                http.post(PREDICT, json={"instances": rows}).headers["X-Model-Version"]
                for _ in range(30)
            }
            assert seen == expected
        invalid = http.put(f"/admin/models/{NAME}/traffic", json={"canary_weight": 2})
        assert invalid.status_code == 422
        assert http.get(f"/admin/models/{NAME}/traffic").json()["canary_weight"] == 1.0


def test_shadow_gets_a_copy_and_never_answers(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "challenger")
    policy = TrafficSettings(shadow="challenger")
    server = serve(serving(project.settings, traffic={NAME: policy}))
    frame = held_out.head(3)
    answered = []
    with server.client() as http:
        for _ in range(10):
            answer = http.post(PREDICT, json={"instances": records(frame)})
            assert answer.status_code == 200
            assert answer.headers["X-Model-Version"] == "1"
            probs = [p["probabilities"]["1"] for p in answer.json()["predictions"]]
            np.testing.assert_allclose(probs, project.proba(1, frame), atol=1e-6)
            answered.append(answer.headers["X-Request-ID"])

    def shadows() -> list[dict[str, object]]:
        table = read_predictions(server.log_dir).to_pylist()
        return [r for r in table if r["route"] == "shadow"]

    # a version filter applies before the (request_id, row) de-duplication, so the
    # shadow's records are visible on their own
    _wait(lambda: read_predictions(server.log_dir, version=2).num_rows == 10 * 3, 10, "shadows")
    server.stop()
    shadow = read_predictions(server.log_dir, version=2).to_pylist()
    primary = read_predictions(server.log_dir, version=1).to_pylist()
    assert {r["route"] for r in shadow} == {"shadow"}
    assert {r["route"] for r in primary} == {"primary"}
    assert {r["request_id"] for r in shadow} == set(answered)
    assert {r["request_id"] for r in primary} == set(answered)
    expected = project.proba(2, frame)
    for record in shadow:
        assert math.isclose(record["output.proba_1"], expected[record["row"]], abs_tol=1e-6)


def test_an_unfiltered_read_holds_primary_and_shadow_records(
    project: Project, serve: ServeFactory, held_out: pd.DataFrame
) -> None:
    project.registry.set_alias(f"{NAME}/2", "challenger")
    server = serve(serving(project.settings, traffic={NAME: TrafficSettings(shadow="challenger")}))
    with server.client() as http:
        answer = http.post(PREDICT, json={"instances": records(held_out.head(2))})
        assert answer.status_code == 200
    _wait(lambda: read_predictions(server.log_dir, version=2).num_rows == 2, 10, "the shadow")
    server.stop()
    routes = Counter(r["route"] for r in read_predictions(server.log_dir).to_pylist())
    assert routes == Counter({"primary": 2, "shadow": 2})
