"""``fresh_project_code``: a reused worker forgets the project's modules before each task.

Modules whose file is in the project (or reached through a symbolic link into it) are
forgotten, every time, so an edited file is imported as it is now; installed packages and
modules elsewhere stay imported. The second task sees the same (the resolved paths are
remembered between tasks).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.engine.worker import fresh_project_code


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "wf_steps.py").write_text("VALUE = 1\n")
    (elsewhere / "wf_other.py").write_text("VALUE = 'other'\n")
    (elsewhere / "wf_linked.py").symlink_to(project / "wf_steps.py")
    sys.path[:0] = [str(project), str(elsewhere)]
    yield project, elsewhere
    for path in (str(project), str(elsewhere)):
        while path in sys.path:
            sys.path.remove(path)
    for name in ("wf_steps", "wf_other", "wf_linked"):
        sys.modules.pop(name, None)


def test_project_modules_are_forgotten_at_every_task(folders: tuple[Path, Path]) -> None:
    project, _ = folders
    for task, value in enumerate((1, 2, 3)):
        steps = importlib.import_module("wf_steps")
        loaded = steps.VALUE
        assert loaded == value  # the file as it is now
        other = importlib.import_module("wf_other")
        importlib.import_module("wf_linked")
        fresh_project_code(str(project))
        assert "wf_steps" not in sys.modules, task
        assert "wf_linked" not in sys.modules, task  # a link into the project
        assert sys.modules.get("wf_other") is other, task  # elsewhere: kept
        # another size too: a bytecode cache written in the same second is not reused
        (project / "wf_steps.py").write_text(f"VALUE = {value + 1}  # {'x' * value}\n")
    assert "pytest" in sys.modules and "modelyard.engine.worker" in sys.modules
