"""``modelyard serve --workers 2`` as users start it: both workers answer, /metrics adds
up every worker's counts (Prometheus multiprocess mode), every prediction is logged;
and MLflow's CSV format on /invocations."""

from __future__ import annotations

import http.client
import io

import msgspec
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from modelyard.demo.replay import ServerProcess
from modelyard.store.predlog import read_predictions
from tests.serving.conftest import NAME, Project, records


def _post(port: int, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:  # a new connection each time, so the kernel spreads them over the workers
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _requests_total(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelyard_requests_total"
        and sample.labels.get("model") == NAME
        and sample.labels.get("status") == "200"
    )


def test_two_workers_answer_log_and_count_together(
    project: Project, held_out: pd.DataFrame
) -> None:
    oracle = project.proba(1, held_out)
    body = msgspec.json.encode({"instances": records(held_out)})
    root = project.settings.project_dir
    with ServerProcess(root, refs=[NAME], workers=2, ready_timeout_s=90) as server:
        for _ in range(40):
            status, answer = _post(
                server.port, f"/v1/models/{NAME}:predict", body, "application/json"
            )
            assert status == 200, answer
            got = [p["probabilities"]["1"] for p in msgspec.json.decode(answer)["predictions"]]
            np.testing.assert_allclose(got, oracle, atol=1e-6)
        assert _requests_total(server.port) == 40  # whichever worker answers /metrics
    logged = read_predictions(root / ".modelyard" / "predictions")
    assert logged.num_rows == 40 * len(held_out)
    assert len(set(logged.column("request_id").to_pylist())) == 40


def test_invocations_take_csv(project: Project, held_out: pd.DataFrame) -> None:
    labels = [str(int(p > 0.5)) for p in project.proba(1, held_out)]
    csv = io.StringIO()
    held_out[["city", "plan", "age", "amount"]].to_csv(csv, index=False)  # columns reordered
    with ServerProcess(project.settings.project_dir, refs=[NAME]) as server:
        status, answer = _post(server.port, "/invocations", csv.getvalue().encode(), "text/csv")
        assert status == 200, answer
        assert msgspec.json.decode(answer)["predictions"] == labels
        status, answer = _post(server.port, "/invocations", b"city,nope\nlyon,1\n", "text/csv")
        assert status == 422 and b"nope" in answer
