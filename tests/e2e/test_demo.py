"""The demo end to end, as `make demo` runs it: a real CLI process on real data, and the
results of its loop: the training pipeline run three times (from scratch, all cached, and
with one parameter changed: only what it touches runs again), the model it registered
linked to its pipeline and data, the served model, and monitoring that finds the later
months' drift, opens incidents through a live webhook and a command, sees no
training/serving skew and the realised AUC falling; then the agent closes the loop: the
auc-drop alert's retrain, the gates, a canary on replayed days and its decision, and
the weekly table of realised vs counterfactual AUC (recomputed here from the raw log)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from statistics import mean
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from modelyard.agent.records import ActionStore
from modelyard.config import load_settings
from modelyard.demo.flights import FEATURES, TARGET, flight_entities
from modelyard.features.store import FeatureStore
from modelyard.pipelines import load_pipelines
from modelyard.pipelines.lineage import lineage_of
from modelyard.registry.client import ModelRegistry
from modelyard.store import predlog
from modelyard.store.database import open_database
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_frame, digest_path
from modelyard.tracking.entities import RunStatus

PIPELINES_SOURCE = resources.files("modelyard.demo") / "project_pipelines.py"


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


STEPS = ["flights", "training_set", "split", "tune", "fit", "evaluate", "register"]


def test_demo_runs_its_pipeline_then_all_cached_then_only_what_a_change_touches(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    project, summary = demo
    assert (project / "modelyard.yaml").is_file()
    assert (project / "pipelines.py").read_text() == PIPELINES_SOURCE.read_text()
    found = summary["pipeline"]
    first, second, third = found["runs"]
    assert [r["status"] for r in found["runs"]] == ["completed"] * 3
    assert list(first["steps"]) == STEPS
    assert {s["status"] for s in first["steps"].values()} == {"completed"}

    # run 2 changed nothing: every step is cached, reusing run 1's step runs and outputs
    for name, step in second["steps"].items():
        assert step["status"] == "cached", name
        assert step["cached_from"] == first["steps"][name]["run_id"]
        assert step["cache_key"] == first["steps"][name]["cache_key"]
        assert step["outputs"] == first["steps"][name]["outputs"]
    assert second["seconds"] < first["seconds"] / 2, (second["seconds"], first["seconds"])

    # run 3 changed n_trials: exactly the steps whose parameters changed or whose inputs'
    # contents changed ran again (the oracle: the pipeline's graph and the output digests)
    changed = {k for k in third["params"] if third["params"][k] != first["params"][k]}
    assert changed == set(found["changed"]) == {"n_trials"}
    flights = load_pipelines(load_settings(project, environ={}))["flights_delay"]
    before, after = flights.build(first["params"]), flights.build(third["params"])
    expected = set()
    for name in after.order():
        node = after.nodes[name]
        inputs_changed = any(
            third["steps"][ref.node]["outputs"][ref.output]
            != first["steps"][ref.node]["outputs"][ref.output]
            for ref in node.inputs.values()
        )
        if dict(node.params) != dict(before.nodes[name].params) or inputs_changed:
            expected.add(name)
    ran = {n for n, s in third["steps"].items() if s["status"] == "completed"}
    assert ran == expected == set(found["reran"])
    assert "tune" in ran and not ran & {"flights", "training_set", "split"}
    assert found["why"]["tune"] == ["params.n_trials"]
    for name, step in third["steps"].items():
        if name not in ran:
            assert step["status"] == "cached", name
            assert step["cached_from"] == first["steps"][name]["run_id"]

    settings = load_settings(project, environ={})
    with TrackingClient(settings) as client:
        runs = client.search_runs("flights_delay")
        assert runs and all(r.status is RunStatus.FINISHED for r in runs)
        # each tuning study ran its trials as child runs of its tune step's run
        for run, n_trials in ((first, 6), (third, 8)):
            tune = run["steps"]["tune"]
            trials = [r for r in runs if r.parent_run_id == tune["run_id"]]
            assert len(trials) == n_trials, (run["run_id"], len(trials))
            assert all(0.55 < t.metrics["value"] < 0.95 for t in trials)
        tune = third["steps"]["tune"]
        assert sorted(c["run_id"] for c in summary["candidates"]) == sorted(
            r.id for r in runs if r.parent_run_id == (tune["cached_from"] or tune["run_id"])
        )
        # the refit logs gradient boosting's loss per iteration as a metric history
        fit = third["steps"]["fit"]
        history = client.get_metric_history(fit["cached_from"] or fit["run_id"], "train_loss")
        assert len(history) > 5
        assert [m.step for m in history] == list(range(len(history)))


def test_demo_model_links_to_its_pipeline_and_its_point_in_time_data(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    project, summary = demo
    settings = load_settings(project, environ={})
    third = summary["pipeline"]["runs"][2]
    register = third["steps"]["register"]
    register_run = register["cached_from"] or register["run_id"]
    evaluate = third["steps"]["evaluate"]

    with TrackingClient(settings) as client:
        # the version's run is the register step's run, a child of a pipeline run
        step_run = client.get_run(register_run)
        assert step_run.parent_run_id in {r["run_id"] for r in summary["pipeline"]["runs"]}
        assert (
            client.get_run(evaluate["cached_from"] or evaluate["run_id"]).metrics["auc"]
            == (summary["best"]["auc"])
        )
        assert 0.6 < summary["best"]["auc"] < 0.95  # better than chance, not leaking
        # the recorded training set is exactly the point-in-time training set the
        # feature store builds from the applied definitions
        inputs = {i.context + ":" + i.name: i for i in client.list_inputs(register_run)}
        training = inputs["training:flights-2013-01-01..2013-02-14"]
        with FeatureStore(settings) as features:
            frame = features.get_historical_features(flight_entities((1, 2)), "delay_model")
            online = features.get_online_features(
                {"carrier": ["UA", "ZZ"], "origin": ["EWR", "EWR"]}, "delay_model"
            )
        cut = frame["event_timestamp"] >= pd.Timestamp("2013-02-15", tz="UTC")
        train = frame[~cut].reset_index(drop=True)
        assert training.num_rows == len(train)
        assert training.digest == digest_frame(train).digest
        assert {c["name"] for c in training.schema} >= {*FEATURES, TARGET}
        assert "validation:flights-2013-02-15..2013-03-01" in inputs
    assert summary["features"]["materialized"]["carrier_delays"] > 0
    # an unknown carrier is missing online, a known one has its recent delays (no ttl);
    # the 2013 weather is past its 3-hour ttl today, so it reads as stale, not as served
    assert online.status["carrier_delays:carrier_delay_mean_7d"].tolist() == [0, 2]
    assert online.status["weather:temp"].tolist() == [1, 1]

    # lineage, backward from the model the pipeline registered (production until the
    # closed loop's canary, which may promote a retrained version): its step run, the
    # pipeline's steps before it and the feature sources the training set read
    trained = summary["model"]["ref"]
    tree = lineage_of(settings, trained).root
    nodes = list(tree.walk())
    assert [c.id for c in tree.children if c.kind == "step"] == [register_run]
    assert {n.label.split()[1] for n in nodes if n.kind == "step"} == set(STEPS)
    files = {
        n.details.get("description"): n.id
        for n in nodes
        if n.kind == "data" and n.details.get("kind") == "file"
    }
    for source in ("weather", "arrivals"):
        path = project / "data" / f"{source}.parquet"
        assert files[str(path)] == digest_path(path).digest, files

    # the model is packaged, registered, optimized and serves in its fastest verified runtime
    with ModelRegistry(settings) as registry:
        version = registry.get_version(trained)
        assert version.run_id == register_run
        assert summary["best"]["run_id"] == register_run
        manifest = registry.manifest(trained)
        assert manifest.lineage.run_id == register_run
        assert manifest.metrics["auc"] == summary["best"]["auc"]
        serving = next(r for r in manifest.runtimes if r.name == manifest.serving_runtime)
        assert serving.status == "ok"
        passed = [r for r in manifest.runtimes if r.status == "ok"]
        assert serving.latency_1_row_us == min(r.latency_1_row_us or 1e18 for r in passed)
        assert summary["model"]["serving_runtime"] == manifest.serving_runtime
        assert summary["model"]["ref"] == f"flights-delay/{version.version}"
        # the served model gives the native model's scores on the validation rows
        loaded = registry.load(trained)
        valid = frame[cut][FEATURES].head(200)
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
        [*cli, "monitor", "alerts", summary["model"]["ref"], "--json"],
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


def _offline_weeks(settings: Any, original: int) -> dict[str, dict[str, Any]]:
    """The weekly table's oracle: the raw log and feedback joined here in pandas (not
    through monitoring's reader), the original version scored offline on those rows."""
    con = predlog.connect(settings.prediction_log_dir)
    try:
        rows = con.execute(
            "SELECT * FROM predictions WHERE model = 'flights-delay'"
            " AND route IN ('primary', 'canary')"
        ).df()
        feedback = con.execute('SELECT record_id, "row", label FROM feedback').df()
    finally:
        con.close()
    assert feedback["row"].isna().all()  # the replay labels whole requests
    assert not feedback["record_id"].duplicated().any()
    labels = dict(zip(feedback["record_id"], feedback["label"].map(json.loads), strict=True))
    rows = rows[rows["record_id"].isin(labels.keys())].reset_index(drop=True)
    rows["label"] = [int(labels[r][i]) for r, i in zip(rows["record_id"], rows["row"], strict=True)]
    frame = rows[[f"input.{n}" for n in FEATURES]].rename(columns=lambda c: c[6:])
    with ModelRegistry(settings) as registry:
        rows["offline"] = registry.load(f"flights-delay/{original}").scores(frame)[:, 1]
    stamp = rows["time"].dt.tz_convert("UTC")
    monday = (stamp - pd.to_timedelta(stamp.dt.day_of_week, unit="D")).dt.strftime("%Y-%m-%d")
    weeks = {}
    for week, group in rows.groupby(monday):
        both = group["label"].nunique() == 2
        weeks[week] = {
            "rows": len(group),
            "versions": {str(v): int(n) for v, n in group["version"].value_counts().items()},
            "realised": roc_auc_score(group["label"], group["output.proba_1"]) if both else None,
            "offline": roc_auc_score(group["label"], group["offline"]) if both else None,
        }
    return weeks


def test_demo_closes_the_loop_the_agent_retrains_gates_runs_a_canary_and_decides(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    project, summary = demo
    loop = summary["closed_loop"]
    settings = load_settings(project, environ={})
    original, action = loop["original_version"], loop["action"]
    # the auc-drop incident's action went all the way to a terminal state
    assert action is not None, loop["passes"]
    assert action["rule"] == "auc-drop" and action["champion_version"] == original
    assert action["state"] in ("promoted", "rolled_back", "rejected"), action
    candidate = action["candidate_version"]
    assert candidate is not None and candidate != original

    db = open_database(settings.db_url)
    try:
        events = {e.kind: e for e in ActionStore(db).events(action["id"])}
    finally:
        db.close()
    # the retrain trained on the 90 days ending at the first pass, without moving production
    assert action["window_end_us"] - action["window_start_us"] == 90 * 86_400 * 1_000_000
    with TrackingClient(settings) as client:
        params = client.get_run(action["pipeline_run_id"]).params
    assert params["promote"] in ("False", "false"), params
    assert params["window_start"] and params["window_end"]
    gates = events["gates"].detail
    assert {r["gate"] for r in gates["results"]} == {"champion:auc", "signature"}
    assert all(r["summary"] for r in gates["results"])  # the numbers the demo shows
    if action["state"] != "rejected":
        assert "canary_started" in events and "look" in events and "decision" in events
        assert loop["replayed"]["days"], loop  # the canary was judged on replayed days

    cli = [sys.executable, "-m", "modelyard.cli.app", "--project", str(project)]
    shown = subprocess.run(
        [*cli, "models", "history", "flights-delay", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    history = json.loads(shown.stdout)
    moves = [
        h
        for h in history
        if h["action"] in ("alias", "promote")
        and h["alias"] == "production"
        and h["version_to"] == candidate
    ]
    with ModelRegistry(settings) as registry:
        production = registry.get_version("flights-delay@production").version
    assert production == loop["production_version"]
    if action["state"] == "promoted":
        assert production == candidate
        # why it went to production: the agent's action, named in the alias move
        assert len(moves) == 1 and action["id"][:12] in moves[0]["reason"], moves
    else:
        assert production == original and moves == []
    assert any(action["id"][:12] in str(h.get("reason")) for h in history)

    # the weekly table: realised from the log, the counterfactual recomputed offline
    weekly = loop["weekly"]
    assert weekly["original"] == original
    oracle = _offline_weeks(settings, original)
    assert [w["week"] for w in weekly["weeks"]] == sorted(oracle)
    for week in weekly["weeks"]:
        want = oracle[week["week"]]
        assert week["rows"] == want["rows"] and week["versions"] == want["versions"], week
        for key, other in (("realised_auc", "realised"), ("counterfactual_auc", "offline")):
            if want[other] is None:
                assert week[key] is None
            else:
                assert week[key] == pytest.approx(want[other], abs=1e-9), (week, key)
        if set(week["versions"]) == {str(original)}:  # the original served: the same AUC
            assert week["difference"] == pytest.approx(0.0, abs=2e-3)
    served = {v for w in weekly["weeks"] for v in w["versions"]}
    assert (str(candidate) in served) == (action["state"] != "rejected")
    verdict = weekly["summary"]["verdict"]
    assert ("gained" in verdict) == (weekly["summary"].get("difference", 0) > 0), verdict
