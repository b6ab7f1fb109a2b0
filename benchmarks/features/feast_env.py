"""Feast's own virtual environment, kept out of the project's venv.

Created once under ``~/.cache/modelyard-bench/feast-venv`` (or ``$MODELYARD_BENCH_CACHE``)
and reused; ``python benchmarks/features/feast_env.py`` creates it and prints its python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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
    base = os.environ.get("MODELYARD_BENCH_CACHE") or Path.home() / ".cache" / "modelyard-bench"
    return Path(base) / "feast-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ready(venv: Path) -> bool:
    if not (venv / ".installed").is_file():
        return False
    probe = subprocess.run(
        [str(_python(venv)), "-c", _PROBE],
        capture_output=True,
        env={**os.environ, **QUIET_ENV},
        check=False,
    )
    return probe.returncode == 0


def ensure_feast_venv() -> tuple[Path, float | None]:
    """The venv's python, and the seconds spent installing it (None when reused)."""
    venv = venv_dir()
    if _ready(venv):
        return _python(venv), None
    print(f"Installing {' '.join(_PACKAGES)} into {venv} (once)...", flush=True)
    start = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # the base interpreter, not the project venv's: the new venv must not see the project
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(_python(venv)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *_PACKAGES], check=True)
    (venv / ".installed").write_text(" ".join(_PACKAGES) + "\n")
    return _python(venv), time.perf_counter() - start


if __name__ == "__main__":
    python, seconds = ensure_feast_venv()
    took = "reused" if seconds is None else f"installed in {seconds:.1f} s"
    print(f"{python} ({took})")
