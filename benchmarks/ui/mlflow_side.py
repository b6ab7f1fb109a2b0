"""The MLflow half of the UI benchmark; run by ``run.py`` in MLflow's own venv.

    python mlflow_side.py --data DATA.json --db PATH

Creates the experiment ``bench`` through MLflow's client (so MLflow builds and migrates
its own schema), then writes the benchmark's runs, params, tags, latest metrics and
metric histories into MLflow's tables in one transaction: logging 10,000 runs through
the REST client would take longer than the rest of the benchmark, and what is measured
is reading them. Prints ``BENCH-RESULT {"experiment_id": ...}``. Never imports modelyard.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import warnings
from pathlib import Path

from mlflow import MlflowClient

warnings.filterwarnings("ignore")
for _name in ("mlflow", "alembic", "sqlalchemy"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, required=True)
    args = parser.parse_args()
    data = json.loads(args.data.read_text())
    client = MlflowClient(f"sqlite:///{args.db}")
    experiment_id = client.create_experiment("bench", artifact_location=args.artifacts.as_uri())
    con = sqlite3.connect(args.db)
    with con:
        con.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,"
            " user_id, status, start_time, end_time, source_version, lifecycle_stage,"
            " artifact_uri, experiment_id) VALUES (?, ?, 'LOCAL', '', '', 'bench',"
            " 'FINISHED', ?, ?, '', 'active', ?, ?)",
            [
                (
                    r["id"],
                    r["name"],
                    r["start"],
                    r["end"],
                    f"{args.artifacts.as_uri()}/{r['id']}/artifacts",
                    int(experiment_id),
                )
                for r in data["runs"]
            ],
        )
        con.executemany(
            "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
            [(k, v, r["id"]) for r in data["runs"] for k, v in r["params"].items()],
        )
        con.executemany(
            "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
            [
                (k, v, r["id"])
                for r in data["runs"]
                for k, v in {**r["tags"], "mlflow.runName": r["name"]}.items()
            ],
        )
        con.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
            " VALUES (?, ?, ?, ?, 0, ?)",
            [
                (k, v, r["end"], r["last_step"], r["id"])
                for r in data["runs"]
                for k, v in r["metrics"].items()
            ],
        )
        history = []
        for r in data["runs"]:
            curves = data["histories"].get(r["id"])
            for k, v in r["metrics"].items():
                if curves is None:
                    history.append((k, v, r["end"], r["id"], 0))
                else:
                    history.extend(
                        (k, value, r["start"] + step, r["id"], step)
                        for step, value in enumerate(curves[k])
                    )
        con.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            history,
        )
    con.close()
    print("BENCH-RESULT " + json.dumps({"experiment_id": experiment_id}), flush=True)


if __name__ == "__main__":
    main()
