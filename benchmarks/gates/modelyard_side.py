"""The modelyard half of the gates benchmark; run by ``run.py`` in the project's venv.

    python modelyard_side.py --data EVAL.parquet --models DIR --work WORK_DIR

A fresh project (SQLite) in WORK_DIR: the champion registered as flights-delay/1 and
aliased ``production``, the candidate as flights-delay/2 (untimed). Then the wall time
of one ``run_gates`` call with metric gates on AUC and log loss, the champion gate
(paired DeLong) and the slice gate over 5 origins: read the file, score both models,
every gate, store the evaluation. Accuracy, F1, precision and recall (which MLflow
reports too) are computed afterwards, untimed, by the gates' ``compute_metric``.
Prints one ``BENCH-RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import pandas as pd
from common import FEATURES, LABEL, ORIGINS, result_line

from modelyard.config import init_project, load_settings
from modelyard.gates import ChampionGate, MetricGate, SliceGate, run_gates
from modelyard.gates.metric import compute_metric
from modelyard.registry import ModelRegistry

NAME = "flights-delay"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    init_project(args.work)
    settings = load_settings(args.work, environ={})
    train = pd.read_parquet(args.data).head(2000)[FEATURES]
    with ModelRegistry(settings) as registry:
        for which in ("champion", "candidate"):
            model = pickle.loads((args.models / f"{which}.pkl").read_bytes())
            registry.log_model(model, name=NAME, training_frame=train)
        registry.set_alias(f"{NAME}/1", "production")
        gates = [
            MetricGate("auc", min=0.6),
            MetricGate("log_loss", max=0.7),
            ChampionGate("auc", margin=0.01, alpha=0.05),
            SliceGate(by=["origin"], metric="auc", min_rows=200, max_drop=0.05),
        ]
        start = time.perf_counter()
        report = run_gates(
            settings,
            f"{NAME}/2",
            against="production",
            eval=args.data,
            gates=gates,
            label=LABEL,
            registry=registry,
        )
        seconds = time.perf_counter() - start
        # the metrics MLflow computes that no gate above does, by the gates' own code on
        # the candidate's scores (untimed)
        frame = pd.read_parquet(args.data)
        scores = registry.load(f"{NAME}/2").scores(frame[FEATURES])[:, 1]
        y = frame[LABEL].to_numpy()
        extra = {m: compute_metric(m, y, scores) for m in ("accuracy", "f1", "precision", "recall")}
    metrics = {
        r.gate.removeprefix("metric:"): r.numbers["value"]
        for r in report.results
        if r.kind == "metric"
    }
    metrics.update(extra)
    champion = next(r for r in report.results if r.kind == "champion")
    slices = next(r for r in report.results if r.kind == "slices")
    assert len(slices.details) >= ORIGINS or slices.numbers, slices
    print(
        result_line(
            {
                "seconds": seconds,
                "metrics": metrics,
                "champion_auc": champion.numbers.get("champion"),
                "passed": report.passed,
                "gates": [
                    f"{r.gate}: {'pass' if r.passed else 'FAIL'} - {r.summary}"
                    + ("" if r.ci is None else f" CI [{r.ci[0]:.4f}, {r.ci[1]:.4f}]")
                    for r in report.results
                ],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
