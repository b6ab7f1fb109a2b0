"""``modelyard lineage REF [--forward] [--json]`` over pipelines run by the CLI itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from modelyard.cli.app import main
from tests.pipelines.test_lineage import cli_flow_project

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)

    def run(root: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--project", str(root), *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def cli_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node["children"]:
        found.extend(cli_nodes(child))
    return found


def test_lineage_of_a_model_trained_in_a_pipeline_both_ways(
    cli: Any, tmp_path: Path, db_url: str
) -> None:
    root = cli_flow_project(tmp_path, db_url).project_dir
    ran = cli(root, "pipeline", "run", "flights", "-p", "c=0.5", "--json")
    assert ran.code == 0, ran.err
    run = ran.json()
    data_digest = hashlib.sha256((root / "flights.csv").read_bytes()).hexdigest()

    back = cli(root, "lineage", "toy@latest", "--json")
    assert back.code == 0, back.err
    tree = back.json()
    assert tree["direction"] == "backward" and tree["root"]["id"] == "toy/1"
    nodes = cli_nodes(tree["root"])
    train = next(n for n in nodes if n["kind"] == "step" and n["details"]["step"] == "train")
    assert train["id"] == run["steps"]["train"]["run_id"]
    assert train["details"]["params"] == {"c": "0.5"}
    assert train["details"]["source_hash"] and "git_commit" in train["details"]
    files = [n for n in nodes if n["kind"] == "data" and n["details"]["kind"] == "file"]
    assert [f["id"] for f in files] == [data_digest]

    text = cli(root, "lineage", "toy/1")
    assert text.code == 0, text.err
    assert "model toy/1" in text.out and "step train of flights" in text.out
    assert "params: c=0.5" in text.out
    assert f"path <- file flights.csv sha256:{data_digest[:12]}" in text.out
    assert re.search(r"code: git \S+.*, source [0-9a-f]{12}, pipelines:train", text.out)

    forward = cli(root, "lineage", data_digest[:10], "--forward", "--json")
    assert forward.code == 0, forward.err
    reached = cli_nodes(forward.json()["root"])
    assert forward.json()["root"]["id"] == data_digest
    assert {n["id"] for n in reached if n["kind"] == "model"} == {"toy/1"}
    forward_text = cli(root, "lineage", data_digest, "--forward")
    assert "model toy/1" in forward_text.out and "step load of flights" in forward_text.out


def test_lineage_of_unknown_or_malformed_refs_exits_2(
    cli: Any, tmp_path: Path, sqlite_url: str
) -> None:
    root = cli_flow_project(tmp_path, sqlite_url).project_dir
    assert cli(root, "pipeline", "run", "flights").code == 0
    for ref, words in (
        ("tyo@production", "No model named 'tyo'. Did you mean 'toy'?"),
        ("toy@production", "has no alias 'production'"),
        ("toy/7", "has no version 7"),
        ("0" * 64, "Nothing matches"),
        ("toy/x", "Nothing matches 'toy/x': expected a model ref"),
    ):
        bad = cli(root, "lineage", ref)
        assert bad.code == 2, (ref, bad.out, bad.err)
        assert words in bad.err and bad.err.count("\n") == 1
        assert "Traceback" not in bad.err


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"
