"""Feast's own virtual environment, kept out of the project's venv.

Created once under ``~/.cache/modelyard-bench/feast-venv`` (or ``$MODELYARD_BENCH_CACHE``)
and reused; ``python benchmarks/features/feast_env.py`` creates it and prints its python.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for anchor_venv
import anchor_venv

__all__ = ["QUIET_ENV", "ensure_feast_venv", "venv_dir"]

#: environment that keeps Feast quiet and offline
QUIET_ENV = {
    "FEAST_USAGE": "False",
    "FEAST_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}

#: pins: Feast 0.6x, and a pandas it imports with
_PACKAGES = ["feast[duckdb]>=0.60,<0.70", "pandas<3"]
_PROBE = "import feast, duckdb, ibis, pandas"


def venv_dir() -> Path:
    return anchor_venv.venv_dir("feast-venv")


def ensure_feast_venv() -> tuple[Path, float | None]:
    """The venv's python, and the seconds spent installing it (None when reused)."""
    return anchor_venv.ensure_venv(
        "feast-venv", _PACKAGES, probe=_PROBE, env=QUIET_ENV, size_note=""
    )


if __name__ == "__main__":
    python, seconds = ensure_feast_venv()
    took = "reused" if seconds is None else f"installed in {seconds:.1f} s"
    print(f"{python} ({took})")
