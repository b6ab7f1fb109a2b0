"""The README's Quickstart runs as written: its shell lines and its Python, in order.

The section is read from README.md at test time, so an edit that breaks it fails here.
``pip install`` lines are skipped (the test environment has the extras), ``cd`` changes
the working folder, ``modelyard ...`` lines run through the real CLI entry, and the
placeholder ``RUN_ID`` is the id of the run the Python block logged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from modelyard.cli.app import main
from modelyard.tracking.fluent import get_client, set_client

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(section: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a section: (language, code)."""
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


def test_the_quickstart_has_shell_and_python_blocks() -> None:
    languages = [lang for lang, _ in _blocks(_section("Quickstart"))]
    assert languages == ["sh", "python", "sh"]


def test_the_quickstart_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")  # the Quickstart installs the sklearn extra first
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    set_client(None)  # the fluent API finds the Quickstart's project, not another test's
    namespace: dict[str, Any] = {"__name__": "quickstart"}
    try:
        for language, code in _blocks(_section("Quickstart")):
            if language == "python":
                exec(compile(code, "README.md#quickstart", "exec"), namespace)
                continue
            for line in code.splitlines():
                _run_shell_line(line, namespace)
    finally:
        with contextlib.suppress(Exception):  # the failure above is the one to report
            get_client().close()
        set_client(None)
    out = capsys.readouterr().out
    assert "churn/1" in out
    assert namespace["best"][0].name == "hgb-depth-3"
    assert len(namespace["model"].predict(namespace["train_df"][namespace["features"]])) == 400


def _run_shell_line(line: str, namespace: dict[str, Any]) -> None:
    command = line.split("#", 1)[0].strip()
    if not command or command.startswith("pip install"):
        return
    words = shlex.split(command)
    if words[0] == "cd":
        os.chdir(words[1])
        return
    assert words[0] == "modelyard", f"unexpected Quickstart line: {line}"
    if "RUN_ID" in words:
        words = [namespace["best"][0].id if w == "RUN_ID" else w for w in words]
    code = main(words[1:])
    assert code == 0, f"{command} exited {code}"
