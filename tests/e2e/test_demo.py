"""The demo end to end, as `make demo` runs it: a real CLI process on real data, and the
results of its loop: tracked candidates, the served model, and monitoring that finds the
later months' drift, opens incidents through a live webhook and a command, sees no
training/serving skew and the realised AUC falling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import pandas as pd
import pytest

from modelyard.config import load_settings
from modelyard.demo.flights import FEATURES, TARGET, flight_entities
from modelyard.features.store import FeatureStore
from modelyard.registry.client import ModelRegistry
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_frame
from modelyard.tracking.entities import RunStatus


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``modelyard demo --json`` run once for the module: the project and its summary."""
    project = tmp_path_factory.mktemp("e2e") / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.app", "demo", "--dir", str(project), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,  # minutes when idle; over 10 on a loaded 2-CPU machine
    )
    return project, json.loads(out.stdout)


def test_demo_tracks_every_candidate_and_its_data(demo: tuple[Path, dict[str, Any]]) -> None:
    project, summary = demo
    assert (project / "modelyard.yaml").is_file()

    with TrackingClient(load_settings(project, environ={})) as client:
        runs = client.search_runs("flights-delay")
        assert len(runs) == 4
        parent = client.get_run(summary["parent_run_id"])
        children = [r for r in runs if r.parent_run_id == parent.id]
        assert len(children) == 3
        assert all(r.status is RunStatus.FINISHED for r in runs)
        for child, reported in zip(
            sorted(children, key=lambda r: r.id),
            sorted(summary["candidates"], key=lambda r: r["run_id"]),
            strict=True,
        ):
            assert child.metrics["auc"] == reported["auc"]
            assert 0.55 < child.metrics["auc"] < 0.95  # better than chance, not leaking
            assert child.params["model"] in ("logreg", "hgb")
        best = max(children, key=lambda r: r.metrics["auc"])
        assert parent.tags["best_run"] == best.id
        assert parent.metrics["best_auc"] == best.metrics["auc"]

        # gradient boosting logs its loss per iteration as a metric history
        hgb = next(r for r in children if r.params["model"] == "hgb")
        history = client.get_metric_history(hgb.id, "train_loss")
        assert len(history) > 5
        assert [m.step for m in history] == list(range(len(history)))

        # the recorded training set is exactly the point-in-time training set the
        # feature store builds from the applied definitions
        inputs = {i.context + ":" + i.name: i for i in client.list_inputs(parent.id)}
        training = inputs["training:flights-2013-01-01..02-14"]
        with FeatureStore(load_settings(project, environ={})) as features:
            frame = features.get_historical_features(flight_entities((1, 2)), "delay_model")
            online = features.get_online_features(
                {"carrier": ["UA", "ZZ"], "origin": ["EWR", "EWR"]}, "delay_model"
            )
        train = frame[frame["event_timestamp"] < pd.Timestamp("2013-02-15", tz="UTC")]
        assert training.num_rows == len(train)
        assert training.digest == digest_frame(train).digest
        assert {c["name"] for c in training.schema} >= {*FEATURES, TARGET}
        assert "training:weather-2013" in inputs
        assert "training:arrivals-2013" in inputs
        assert summary["features"]["materialized"]["carrier_delays"] > 0
        # an unknown carrier is missing online, a known one has its recent delays (no ttl);
        # the 2013 weather is past its 3-hour ttl today, so it reads as stale, not as served
        assert online.status["carrier_delays:carrier_delay_mean_7d"].tolist() == [0, 2]
        assert online.status["weather:temp"].tolist() == [1, 1]

        report = json.loads(client.load_artifact_bytes(parent.id, "report.json"))
        assert report["best"]["run_id"] == best.id

    # the winner is packaged, registered, optimized and serves in its fastest verified runtime
    with ModelRegistry(load_settings(project, environ={})) as registry:
        version = registry.get_version("flights-delay@production")
        assert version.run_id == best.id
        manifest = registry.manifest("flights-delay@production")
        assert manifest.lineage.run_id == best.id
        assert manifest.metrics["auc"] == best.metrics["auc"]
        serving = next(r for r in manifest.runtimes if r.name == manifest.serving_runtime)
        assert serving.status == "ok"
        passed = [r for r in manifest.runtimes if r.status == "ok"]
        assert serving.latency_1_row_us == min(r.latency_1_row_us or 1e18 for r in passed)
        assert summary["model"]["serving_runtime"] == manifest.serving_runtime
        # the served model gives the native model's scores on the validation rows
        loaded = registry.load("flights-delay@production")
        valid = frame[frame["event_timestamp"] >= pd.Timestamp("2013-02-15", tz="UTC")]
        valid = valid[FEATURES].head(200)
        proba = loaded.scores(valid)
        assert proba.shape == (200, 2)
        assert ((proba >= 0) & (proba <= 1)).all()


def test_demo_monitoring_fires_alerts_sees_no_skew_and_the_auc_drop(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    project, summary = demo
    found = summary["monitoring"]
    assert found["windows"] >= 18  # weekly windows over March to July 2013
    assert found["prediction_drift_windows"] >= 2  # the prediction-drift rule needs 2 of 3
    assert found["top_causes"], "the latest window names features that drifted"

    # the AUC drop: the realised AUC of the last months is below that of the first months
    realised = [(w["start"], w["realised"]) for w in found["auc"] if w["realised"] is not None]
    first = [auc for start, auc in realised if start < "2013-05-01"]
    last = [auc for start, auc in realised if start >= "2013-06-01"]
    assert len(first) >= 4 and len(last) >= 4, realised
    assert mean(last) < mean(first) - 0.02, (first, last)
    assert min(last) < summary["best"]["auc"] - 0.05  # below the auc-drop rule's floor

    # alerts: both rules opened an incident, each posted to the live webhook and run
    # through the rule's command, and the incidents are in the metadata store, open
    opened = [a for a in found["alerts"] if a["change"] in ("opened", "reopened")]
    assert {a["rule"] for a in opened} == {"prediction-drift", "auc-drop"}, found["alerts"]
    assert found["webhook_received"] == len(opened)
    assert all(a["command"] == "exit 0" for a in opened), opened
    hooked = (project / ".modelyard" / "alerts.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["rule"] for line in hooked) == sorted(a["rule"] for a in opened)
    cli = [sys.executable, "-m", "modelyard.cli.app", "--project", str(project)]
    listed = subprocess.run(
        [*cli, "monitor", "alerts", "flights-delay", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    incidents = {(i["rule"], i["cause"]): i for i in json.loads(listed.stdout)}
    for alert in opened:
        incident = incidents[(alert["rule"], alert["cause"])]
        assert incident["state"] == "open" and incident["id"] == alert["incident"]["id"]

    # training/serving skew: every sampled served vector equals the offline join
    skew = found["skew"]
    assert skew["rows"] > 0 and skew["features"] and skew["ok"] is True
    assert all(f["checked"] > 0 and f["mismatches"] == 0 for f in skew["features"].values())
