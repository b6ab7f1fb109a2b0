from __future__ import annotations

import math
import re
import time

import msgspec
import pytest
from sqlalchemy import select

from modelyard.config import Settings, TrackingSettings
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError, StorageError
from modelyard.store.schema import runs
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus


def test_run_records_environment_and_lifecycle(client: TrackingClient) -> None:
    with client.start_run("churn", name="baseline", tags={"team": "risk"}) as run:
        assert client.get_run(run.id).status is RunStatus.RUNNING
    stored = client.get_run(run.id)
    assert stored.status is RunStatus.FINISHED
    assert stored.name == "baseline"
    assert stored.experiment == "churn"
    assert stored.tags == {"team": "risk"}
    assert stored.end_time is not None and stored.end_time >= stored.start_time
    assert re.match(r"^\d+\.\d+\.\d+", stored.python_version)
    assert "numpy" in stored.packages
    assert stored.host and stored.user


def test_exception_in_run_marks_it_failed(client: TrackingClient) -> None:
    with pytest.raises(RuntimeError), client.start_run("churn") as run:
        raise RuntimeError("boom")
    assert client.get_run(run.id).status is RunStatus.FAILED


def test_nested_runs_record_parent(client: TrackingClient) -> None:
    with client.start_run("churn") as parent:
        with client.start_run("churn", parent_run_id=parent.id) as child:
            pass
    assert client.get_run(child.id).parent_run_id == parent.id
    with pytest.raises(NotFoundError, match="No run with id 'missing'"):
        client.start_run("churn", parent_run_id="missing")


def test_params_are_logged_once(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        run.log_params({"model": "hgb", "depth": 6})
        run.log_param("depth", 6)  # the same value again is fine
        with pytest.raises(ConflictError, match=r"Param 'depth' .* already '6'.*'7'"):
            run.log_param("depth", 7)
    assert client.get_run(run.id).params == {"depth": "6", "model": "hgb"}


def test_tags_can_change(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        run.set_tag("stage", "dev")
        run.set_tag("stage", "review")
    assert client.get_run(run.id).tags == {"stage": "review"}


def test_metric_history_and_latest(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1))
        run.log_metric("auc", 0.7, step=3)
        run.log_metric("auc", 0.6, step=1)  # an older step arriving late
    history = client.get_metric_history(run.id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    latest = client.get_run(run.id).metrics
    assert latest["loss"] == pytest.approx(0.2)
    assert latest["auc"] == pytest.approx(0.7)  # latest by step, not by arrival


def test_nan_and_inf_metrics_round_trip(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", float("inf"))
    metrics = client.get_run(run.id).metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] == math.inf


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("auc", "0.9", r"Expected a number for metric 'auc', got str '0.9' - at metrics.auc"),
        ("auc", None, r"Expected a number for metric 'auc', got NoneType None"),
        ("bad key!", 1.0, r"Expected a metric key .* got 'bad key!'"),
        ("", 1.0, r"Expected a metric key"),
    ],
)
def test_bad_metric_is_refused_with_field_name(
    client: TrackingClient, key: str, value: object, message: str
) -> None:
    with client.start_run("churn") as run, pytest.raises(InvalidInputError, match=message):
        run.log_metric(key, value)  # type: ignore[arg-type]


def test_bad_step_is_refused(client: TrackingClient) -> None:
    with client.start_run("churn") as run, pytest.raises(InvalidInputError, match="integer step"):
        run.log_metric("auc", 0.5, step="three")  # type: ignore[arg-type]


def test_unknown_run_is_not_found(client: TrackingClient) -> None:
    with pytest.raises(NotFoundError, match="No run with id 'f00'"):
        client.get_run("f00")
    with pytest.raises(NotFoundError, match="No run"):
        client.log_param("0" * 32, "a", 1)


def test_run_id_prefix(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        pass
    assert client.get_run(run.id[:8]).id == run.id


def test_bad_end_status(client: TrackingClient) -> None:
    run = client.start_run("churn")
    with pytest.raises(InvalidInputError, match=r"Expected a status .* got 'DONE'"):
        run.end("DONE")
    run.end("FAILED")
    assert client.get_run(run.id).status is RunStatus.FAILED


def test_closed_client_refuses_work_instead_of_losing_it(settings: Settings) -> None:
    client = TrackingClient(settings)
    with client.start_run("churn") as run:
        run.log_metric("x", 1.0)
    client.close()
    with pytest.raises(StorageError, match="TrackingClient is closed"):
        client.start_run("churn")
    with pytest.raises(StorageError, match="TrackingClient is closed"):
        client.log_metric(run.id, "x", 2.0)
    with pytest.raises(StorageError, match="TrackingClient is closed"):
        client.search_runs()
    with TrackingClient(settings) as reader:
        assert [m.value for m in reader.get_metric_history(run.id, "x")] == [1.0]


def test_flusher_wakes_for_heartbeats_even_with_a_long_flush_interval(
    settings: Settings,
) -> None:
    slow = msgspec.structs.replace(
        settings,
        tracking=TrackingSettings(flush_interval_ms=60_000, heartbeat_timeout_s=0.2),
    )
    with TrackingClient(slow) as client:
        run = client.start_run("churn")
        before = _heartbeat(client, run.id)
        deadline = time.monotonic() + 10
        while _heartbeat(client, run.id) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _heartbeat(client, run.id) > before
        run.end()


def _heartbeat(client: TrackingClient, run_id: str) -> int:
    with client._db.read() as conn:
        return int(
            conn.execute(select(runs.c.heartbeat_at).where(runs.c.id == run_id)).scalar_one()
        )
