"""A separate OS process that tunes: ``python tune_worker.py PROJECT STUDY N_TRIALS SLEEP_S
[GATE_DIR PEERS]``.

With ``GATE_DIR``, the process writes a file there once imported and waits until
``PEERS`` processes did, so that peers start their trials together (on a loaded machine
one process's start-up could otherwise outlast the other's whole study).

The metadata store comes from the environment (``MODELYARD_DB_URL``), as for any user.
Prints ``DONE <complete> <pruned> <failed>`` when ``tune`` returns.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna

import modelyard


def objective(params: dict[str, Any]) -> float:
    time.sleep(SLEEP_S)
    return (params["x"] - 1.0) ** 2 + params["k"]


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    project, study, n_trials, SLEEP_S = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    if len(sys.argv) > 6:
        gate, peers = Path(sys.argv[5]), int(sys.argv[6])
        (gate / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(gate.glob("ready-*"))) < peers and time.monotonic() < deadline:
            time.sleep(0.02)
    result = modelyard.tune(
        objective,
        space={"x": (-3.0, 3.0), "k": [0, 1]},
        n_trials=n_trials,
        study=study,
        project=project,
    )
    print("DONE", result.n_complete, result.n_pruned, result.n_failed, flush=True)
