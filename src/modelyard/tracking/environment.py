"""What a run records about where it ran: git commit and dirty flag, Python, packages, host."""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["KEY_PACKAGES", "RunEnvironment", "capture_environment", "git_state"]

#: packages whose versions decide whether a result reproduces
KEY_PACKAGES = (
    "modelyard",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "xgboost",
    "lightgbm",
    "torch",
    "onnxruntime",
)


@dataclass(frozen=True)
class RunEnvironment:
    git_commit: str | None
    git_dirty: bool | None
    python_version: str
    packages: dict[str, str]
    host: str
    pid: int
    user: str
    source: str | None


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """The commit checked out at ``directory`` and whether the work tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None  # no git installed, or a hung repository: record nothing
    dirty = None if status.returncode != 0 else bool(status.stdout.strip())
    return commit.stdout.strip(), dirty


@cache
def _packages() -> tuple[tuple[str, str], ...]:
    found = []
    for name in KEY_PACKAGES:
        try:
            found.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found)


def capture_environment(git: tuple[str | None, bool | None]) -> RunEnvironment:
    """Snapshot of the environment a run starts in, given the ``git_state`` of its project."""
    commit, dirty = git
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    main = sys.modules.get("__main__")
    source = getattr(main, "__file__", None)
    return RunEnvironment(
        git_commit=commit,
        git_dirty=dirty,
        python_version=platform.python_version(),
        packages=dict(_packages()),
        host=socket.gethostname(),
        pid=os.getpid(),
        user=user,
        source=str(source) if source else None,
    )
