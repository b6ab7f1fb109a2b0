"""What a Ray task of modelyard does first on a worker that Ray may have used before."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

__all__ = ["fresh_project_code"]

#: the project folders this worker put on ``sys.path`` (only the current one stays)
_added_paths: list[str] = []


#: each module file's resolved path, by the path the module was imported from: resolving
#: every loaded module's file again for each task cost ~0.1 s a task (a trial of a
#: study on Ray took 0.3 s instead of 0.2); only symbolic links re-pointed while a worker
#: lives would change an answer
_RESOLVED: dict[str, Path | None] = {}


def _resolved(where: str) -> Path | None:
    if where not in _RESOLVED:
        try:
            _RESOLVED[where] = Path(where).resolve()
        except (OSError, RuntimeError):
            _RESOLVED[where] = None
    return _RESOLVED[where]


def fresh_project_code(project_dir: str, *also: str) -> None:
    """Make this (reused) worker import the project's code as it is now.

    Ray keeps worker processes between tasks, so a module imported for an earlier task
    would stay: an edited ``pipelines.py``, or another project's module of the same
    name. Every module whose file is in ``project_dir`` (or in a folder of ``also``:
    the folder of a step's module file) except modelyard's own is forgotten, to be
    imported again (as ``load_pipelines`` does); installed packages stay imported.
    ``project_dir`` is put first on ``sys.path``, the one of the previous task removed.
    Call it at the start of a task, before anything imports the project's modules.
    """
    roots = [Path(project_dir).resolve(), *(Path(folder).resolve() for folder in also)]
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if not where or name.partition(".")[0] == "modelyard":
            continue
        path = _resolved(where)
        if path is not None and any(path.is_relative_to(root) for root in roots):
            sys.modules.pop(name, None)
    importlib.invalidate_caches()  # a file written since the last task is seen
    while _added_paths:
        with contextlib.suppress(ValueError):
            sys.path.remove(_added_paths.pop())
    if project_dir in sys.path:
        sys.path.remove(project_dir)
    sys.path.insert(0, project_dir)
    _added_paths.append(project_dir)
