"""The MLflow side's own virtual environment, kept out of the project's venv.

Created once under ``~/.cache/modelyard-bench/mlflow-venv`` (or ``$MODELYARD_BENCH_CACHE``)
and reused; ``python benchmarks/tracking/mlflow_env.py`` creates it and prints its python.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for anchor_venv
import anchor_venv

__all__ = ["QUIET_ENV", "ensure_mlflow_venv", "venv_dir"]

#: environment that keeps MLflow quiet and offline
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}

_PACKAGES = ["mlflow", "pandas"]


def venv_dir() -> Path:
    return anchor_venv.venv_dir("mlflow-venv")


def ensure_mlflow_venv() -> tuple[Path, float | None]:
    """The venv's python, and the seconds spent installing it (None when reused)."""
    return anchor_venv.ensure_venv(
        "mlflow-venv",
        _PACKAGES,
        probe="import mlflow, pandas",
        env=QUIET_ENV,
        size_note="; about 800 MB",
    )


if __name__ == "__main__":
    python, seconds = ensure_mlflow_venv()
    took = "reused" if seconds is None else f"installed in {seconds:.1f} s"
    print(f"{python} ({took})")
