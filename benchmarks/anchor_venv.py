"""One virtual environment per anchor tool (MLflow, Feast, ...), kept out of the project's venv.

Each lives under ``~/.cache/modelyard-bench/<name>`` (or ``$MODELYARD_BENCH_CACHE``), is
created once from the base interpreter and reused while its probe import still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ensure_venv", "venv_dir"]


def venv_dir(name: str) -> Path:
    base = os.environ.get("MODELYARD_BENCH_CACHE") or Path.home() / ".cache" / "modelyard-bench"
    return Path(base) / name


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ready(venv: Path, probe: str, env: Mapping[str, str]) -> bool:
    if not (venv / ".installed").is_file():
        return False
    check = subprocess.run(
        [str(_python(venv)), "-c", probe],
        capture_output=True,
        env={**os.environ, **env},
        check=False,
    )
    return check.returncode == 0


def ensure_venv(
    name: str,
    packages: Sequence[str],
    *,
    probe: str,
    env: Mapping[str, str],
    size_note: str = "",
) -> tuple[Path, float | None]:
    """The venv's python, and the seconds spent installing it (None when reused)."""
    venv = venv_dir(name)
    if _ready(venv, probe, env):
        return _python(venv), None
    print(f"Installing {' '.join(packages)} into {venv} (once{size_note})...", flush=True)
    start = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # the base interpreter, not the project venv's: the new venv must not see the project
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(_python(venv)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *packages], check=True)
    (venv / ".installed").write_text(" ".join(packages) + "\n")
    return _python(venv), time.perf_counter() - start
