"""A command line imports the module of the command it names, not every command's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import contextlib, io, json, sys
from modelyard.cli.app import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
mine = sorted(m for m in sys.modules if m.startswith(("modelyard", "scipy", "pandas")))
print(json.dumps({"code": code, "modules": mine}))
"""


def _modules(*args: str) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    return found["code"], set(found["modules"])


@pytest.mark.parametrize(
    ("args", "own"),
    [
        (["runs", "--help"], "modelyard.cli.runs"),
        (["--project", "x", "pipeline", "--help"], "modelyard.cli.pipeline"),
        (["lineage", "--help"], "modelyard.cli.lineage"),
    ],
)
def test_a_command_imports_its_own_module_only(args: list[str], own: str) -> None:
    code, modules = _modules(*args)
    assert code == 0
    assert own in modules
    assert "modelyard.cli.monitor" not in modules
    assert "scipy.stats" not in modules


def test_help_and_an_unknown_command_see_every_command() -> None:
    code, modules = _modules("--help")
    assert code == 0
    assert {"modelyard.cli.monitor", "modelyard.cli.pipeline", "modelyard.cli.tune"} <= modules
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "pipelin"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "pipeline" in result.stderr  # click's "did you mean" needs them all registered
