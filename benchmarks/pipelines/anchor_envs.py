"""The anchors' own virtual environments (Metaflow, ZenML, Optuna + MLflow), kept out of
the project's venv.

Each is created once under ``~/.cache/modelyard-bench/<name>`` (or
``$MODELYARD_BENCH_CACHE``) and reused. The numeric stack (numpy, pandas, scikit-learn,
pyarrow) is pinned to the project venv's versions, so every tool fits the same model
and the metrics can be compared to 1e-9. ``python benchmarks/pipelines/anchor_envs.py``
creates all three and prints their pythons.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for anchor_venv
import anchor_venv

__all__ = ["ANCHORS", "QUIET_ENV", "ensure_anchor"]

#: environment that keeps the anchors quiet and offline (no telemetry, no analytics)
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "1",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "DO_NOT_TRACK": "1",
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_VERBOSITY": "WARN",
    "ZENML_DEBUG": "false",
    "METAFLOW_BANNER": "0",
    "GIT_PYTHON_REFRESH": "quiet",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}

METAFLOW = "2.19.39"
ZENML = "0.98.0"
#: 3.18.0 is listed but its mlflow-tracing 3.18.0 is not on the registry: the newest that installs
MLFLOW = "3.17.2"
OPTUNA = "5.0.0"


def _pinned(*names: str) -> list[str]:
    """``name==version`` as installed in the project venv (the same numbers everywhere)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def _numeric() -> list[str]:
    return _pinned("numpy", "pandas", "scikit-learn", "scipy", "pyarrow")


def _anchors() -> dict[str, tuple[list[str], str, str]]:
    """name -> (packages, probe import, size note)."""
    return {
        "metaflow": (
            [f"metaflow=={METAFLOW}", *_numeric()],
            "import metaflow, sklearn, pandas",
            "; about 250 MB",
        ),
        "zenml": (
            [f"zenml[local]=={ZENML}", *_numeric()],
            "import zenml, sklearn, pandas; from zenml.zen_stores import sql_zen_store",
            "; about 600 MB, several minutes",
        ),
        "optuna-mlflow": (
            [
                f"mlflow=={MLFLOW}",
                f"optuna=={OPTUNA}",
                f"optuna-integration=={OPTUNA}",
                *_pinned("numpy"),
            ],
            "import mlflow, optuna, optuna_integration.mlflow",
            "; about 850 MB",
        ),
    }


ANCHORS = ("metaflow", "zenml", "optuna-mlflow")


def ensure_anchor(name: str) -> tuple[Path, float | None]:
    """The anchor venv's python, and the seconds spent installing it (None when reused)."""
    packages, probe, note = _anchors()[name]
    return anchor_venv.ensure_venv(
        f"{name}-pipelines-venv", packages, probe=probe, env=QUIET_ENV, size_note=note
    )


if __name__ == "__main__":
    for anchor in sys.argv[1:] or ANCHORS:
        python, seconds = ensure_anchor(anchor)
        took = "reused" if seconds is None else f"installed in {seconds:.1f} s"
        print(f"{anchor}: {python} ({took})", flush=True)
