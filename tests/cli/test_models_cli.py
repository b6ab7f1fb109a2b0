"""``modelyard models ...`` run as a user runs it.

Most cases call ``modelyard.cli.app.main(argv)`` in-process and read what it printed;
one runs the real program in a subprocess. The CLI finds the test store through
``MODELYARD_DB_URL`` and the project through the working folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.cli.app import main
from modelyard.config import Settings
from modelyard.registry import ModelRegistry
from modelyard.tracking.client import TrackingClient

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
SEED = 11


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the CLI is a thin layer over the registry, which every backend tests."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test project as the working folder, its store chosen by MODELYARD_DB_URL."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    monkeypatch.setenv("MODELYARD_ACTOR", "cli-user")
    monkeypatch.chdir(settings.project_dir)
    return settings.project_dir


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli("models", "list")``: run the CLI in-process; its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _model(c: float) -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame({"tenure": rng.normal(size=60), "plan": rng.choice(["a", "b"], 60)})
    labels = (frame["tenure"] > 0).astype(int).to_numpy()
    features = frame[["tenure"]]
    return LogisticRegression(C=c).fit(features, labels), features


@pytest.fixture
def logged(project: Path, settings: Settings) -> dict[str, str]:
    """Two runs that each logged a model (not registered yet); their ids and packages."""
    ids: dict[str, str] = {}
    with TrackingClient(settings) as tracking, ModelRegistry(settings) as registry:
        for name, c in (("first", 0.1), ("second", 10.0)):
            with tracking.start_run("churn", name=name) as run:
                run.log_metric("auc", c / 100)
                tracking.flush()  # the registry reads the run's metrics from the store
                model, frame = _model(c)
                package = registry.log_model(model, training_frame=frame, run_id=run.id)
            ids[name] = run.id
            ids[f"{name}_package"] = package.package_id
        with tracking.start_run("churn", name="empty") as run:
            ids["empty"] = run.id
    return ids


@pytest.fixture
def registered(cli: Any, logged: dict[str, str]) -> dict[str, str]:
    """churn/1 (first run), churn/2 (second run), churn@production -> 2 (was 1)."""
    for run in ("first", "second"):
        assert cli("models", "register", logged[run], "--name", "churn").code == 0
    assert cli("models", "alias", "churn/1", "production").code == 0
    assert cli("models", "alias", "churn/2", "production").code == 0
    return logged


# -- list -----------------------------------------------------------------------------------


def test_list_without_models_says_how_to_log_one(cli: Any) -> None:
    result = cli("models", "list")
    assert result.code == 0, result.err
    assert "No registered models" in result.out
    assert "modelyard.log_model(model, name=...)" in result.out
    assert cli("models", "list", "--json").json() == []


def test_list_shows_latest_and_aliases(cli: Any, registered: dict[str, str]) -> None:
    table = cli("models", "list")
    assert table.code == 0, table.err
    assert "1 model(s)" in table.out
    assert "churn" in table.out
    assert "production→2" in table.out
    [model] = cli("models", "list", "--json").json()
    assert model["name"] == "churn"
    assert (model["latest_version"], model["aliases"]) == (2, {"production": 2})
    assert model["tags"] == {}


# -- register -------------------------------------------------------------------------------


def test_register_a_runs_model(cli: Any, logged: dict[str, str]) -> None:
    result = cli("models", "register", logged["first"], "--name", "churn")
    assert result.code == 0, result.err
    assert f"Registered churn/1 (package {logged['first_package'][:12]})" in result.out
    as_json = cli(
        "models",
        "register",
        logged["second"][:8],
        "-n",
        "churn",
        "--description",
        "tuned",
        "--json",
    )
    assert as_json.code == 0, as_json.err
    version = as_json.json()
    assert version["ref"] == "churn/2"
    assert version["package_id"] == logged["second_package"]
    assert version["run_id"] == logged["second"]
    assert (version["description"], version["status"]) == ("tuned", "active")
    assert (version["created_by"], version["aliases"]) == ("cli-user", [])
    by_package = cli("models", "register", logged["first_package"], "-n", "other", "--json")
    assert by_package.json()["run_id"] == logged["first"]


def test_register_refusals(cli: Any, logged: dict[str, str]) -> None:
    empty = cli("models", "register", logged["empty"], "--name", "churn")
    assert empty.code == 2
    assert f"error: Run {logged['empty']} logged no model" in empty.err
    unknown = cli("models", "register", "nothing-here", "--name", "churn")
    assert unknown.code == 2
    assert "No run or package with id 'nothing-here'" in unknown.err
    bad_name = cli("models", "register", logged["first"], "--name", "bad name")
    assert bad_name.code == 2
    assert bad_name.err.strip().endswith("- at name")
    missing = cli("models", "register", logged["first"])
    assert missing.code == 2  # a usage error: --name is required
    assert "--name" in missing.err
    assert cli("models", "list", "--json").json() == []


# -- show -----------------------------------------------------------------------------------


def test_show_prints_a_version_and_its_manifest(cli: Any, registered: dict[str, str]) -> None:
    result = cli("models", "show", "churn@production")
    assert result.code == 0, result.err
    for text in (
        "churn/2",
        "production",
        "sklearn",
        "classification",
        registered["second"],
        "by cli-user",
        "signature",
        "tenure",
        "metrics",
        "auc",
    ):
        assert text in result.out, text


def test_show_json(cli: Any, registered: dict[str, str]) -> None:
    shown = cli("models", "show", "churn/1", "--json")
    assert shown.code == 0, shown.err
    data = shown.json()
    assert data["version"]["ref"] == "churn/1"
    assert data["version"]["package_id"] == registered["first_package"]
    assert data["version"]["aliases"] == []
    manifest = data["manifest"]
    assert manifest["flavor"] == "sklearn"
    assert manifest["lineage"]["run_id"] == registered["first"]
    assert manifest["lineage"]["experiment"] == "churn"
    assert manifest["metrics"] == {"auc": 0.001}
    assert [c["name"] for c in manifest["signature"]["columns"]] == ["tenure"]
    latest = cli("models", "show", "churn", "--json").json()  # a bare name is @latest
    assert latest["version"]["ref"] == "churn/2"
    assert latest["version"]["aliases"] == ["production"]


# -- alias, unalias, rollback, archive -----------------------------------------------------


def test_alias_moves_and_reports_the_previous_holder(cli: Any, logged: dict[str, str]) -> None:
    for run in ("first", "second"):
        cli("models", "register", logged[run], "--name", "churn")
    first = cli("models", "alias", "churn/1", "production", "--json")
    assert first.code == 0, first.err
    assert first.json() == {"name": "churn", "alias": "production", "version": 1, "previous": None}
    moved = cli("models", "alias", "churn/2", "production", "-m", "better auc")
    assert moved.code == 0, moved.err
    assert "churn@production → 2 (was 1)" in moved.out
    by_alias = cli("models", "alias", "churn@production", "staging", "--json")
    assert by_alias.json() == {"name": "churn", "alias": "staging", "version": 2, "previous": None}
    latest = cli("models", "alias", "churn/1", "latest")
    assert latest.code == 2
    assert "'latest' always means the newest active version" in latest.err


def test_unalias(cli: Any, registered: dict[str, str]) -> None:
    removed = cli("models", "unalias", "churn", "production", "--json")
    assert removed.code == 0, removed.err
    assert removed.json() == {"name": "churn", "alias": "production", "previous": 2}
    again = cli("models", "unalias", "churn", "production")
    assert again.code == 2
    assert "Model 'churn' has no alias 'production'" in again.err
    assert cli("models", "list", "--json").json()[0]["aliases"] == {}


def test_rollback(cli: Any, registered: dict[str, str]) -> None:
    back = cli("models", "rollback", "churn", "production", "--json", "--reason", "drift")
    assert back.code == 0, back.err
    assert (back.json()["ref"], back.json()["aliases"]) == ("churn/1", ["production"])
    text = cli("models", "rollback", "churn", "production")
    assert text.code == 0, text.err
    assert "churn@production → 2 (rolled back)" in text.out
    never = cli("models", "rollback", "churn", "staging")
    assert never.code == 2
    assert "no alias 'staging'" in never.err


def test_archive(cli: Any, registered: dict[str, str]) -> None:
    held = cli("models", "archive", "churn/2")
    assert held.code == 2
    assert "error: churn/2 holds the alias(es) production" in held.err
    archived = cli("models", "archive", "churn/1", "--json", "-m", "old")
    assert archived.code == 0, archived.err
    assert (archived.json()["ref"], archived.json()["status"]) == ("churn/1", "archived")
    refused = cli("models", "alias", "churn/1", "staging")
    assert refused.code == 2
    assert "churn/1 is archived and can hold no alias" in refused.err
    text = cli("models", "archive", "churn/1")
    assert (text.code, text.out.strip()) == (0, "Archived churn/1")


# -- history --------------------------------------------------------------------------------


def test_history(cli: Any, registered: dict[str, str]) -> None:
    cli("models", "rollback", "churn", "production", "-m", "drift")
    entries = cli("models", "history", "churn", "--json")
    assert entries.code == 0, entries.err
    assert [
        (e["action"], e["alias"], e["version_from"], e["version_to"], e["actor"], e["reason"])
        for e in entries.json()
    ] == [
        ("register", None, None, 1, "cli-user", None),
        ("register", None, None, 2, "cli-user", None),
        ("alias", "production", None, 1, "cli-user", None),
        ("alias", "production", 1, 2, "cli-user", None),
        ("rollback", "production", 2, 1, "cli-user", "drift"),
    ]
    table = cli("models", "history", "churn")
    assert table.code == 0, table.err
    assert "history of churn" in table.out
    assert table.out.count("cli-user") == 5
    assert "rollback" in table.out and "drift" in table.out


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("models", "show", "churn/two"),
        ("models", "show", "churn@"),
        ("models", "alias", "churn/x", "production"),
        ("models", "archive", "a@b@c"),
    ],
)
def test_a_bad_ref_exits_2(cli: Any, registered: dict[str, str], args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("error: Expected a model ref like name/3")
    assert result.err.strip().endswith("- at ref")


@pytest.mark.parametrize(
    "args",
    [
        ("models", "show", "chrun/1"),
        ("models", "history", "chrun"),
        ("models", "alias", "chrun/1", "production"),
        ("models", "unalias", "chrun", "production"),
        ("models", "rollback", "chrun", "production"),
        ("models", "archive", "chrun/1"),
    ],
)
def test_an_unknown_model_exits_2(
    cli: Any, registered: dict[str, str], args: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.splitlines() == [
        "error: No model named 'chrun'. Did you mean 'churn'? Known models: churn."
    ]


def test_unknown_version_and_alias_exit_2(cli: Any, registered: dict[str, str]) -> None:
    version = cli("models", "show", "churn/9")
    assert version.code == 2
    assert "Model 'churn' has no version 9; versions: 1, 2" in version.err
    alias = cli("models", "show", "churn@staging")
    assert alias.code == 2
    assert "has no alias 'staging'; aliases: production" in alias.err


# -- the real program -----------------------------------------------------------------------


def test_the_real_program(project: Path, registered: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(
        COLUMNS="200",
        MODELYARD_DB_URL=os.environ["MODELYARD_DB_URL"],
        MODELYARD_ACTOR="shell-user",
    )

    def program(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelyard.cli.app", "models", *args],
            capture_output=True,
            text=True,
            cwd=project,
            env=env,
            timeout=60,
            check=False,
        )

    moved = program("alias", "churn/1", "canary", "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {
        "name": "churn",
        "alias": "canary",
        "version": 1,
        "previous": None,
    }
    listed = program("list")
    assert listed.returncode == 0, listed.stderr
    assert "canary→1, production→2" in listed.stdout
    history = json.loads(program("history", "churn", "--json").stdout)
    assert history[-1]["actor"] == "shell-user"
    failed = program("archive", "churn/1")
    assert failed.returncode == 2
    assert failed.stderr.strip() == (
        "error: churn/1 holds the alias(es) canary; move them to another version before "
        "archiving it"
    )


# -- optimize without the onnx extra --------------------------------------------------------


def _store_state(project: Path) -> dict[str, str]:
    """sha256 of every file in the project's state folder but the metadata database."""
    import hashlib

    state = project / ".modelyard"
    return {
        str(path.relative_to(state)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(state.rglob("*"))
        if path.is_file() and "modelyard.db" not in path.name
    }


def test_optimize_without_the_onnx_extra_exits_2_and_changes_nothing(
    project: Path, registered: dict[str, str], cli: Any
) -> None:
    """skl2onnx made unimportable in a real program: it names the extra, writes nothing."""
    before_version = cli("models", "show", "churn/2", "--json").json()
    before_history = cli("models", "history", "churn", "--json").json()
    before_files = _store_state(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(COLUMNS="200", MODELYARD_DB_URL=os.environ["MODELYARD_DB_URL"])
    wrapper = (
        "import sys; sys.modules['skl2onnx'] = None; "
        "from modelyard.cli.app import main; sys.exit(main(sys.argv[1:]))"
    )
    for extra in ((), ("--json",)):
        done = subprocess.run(
            [sys.executable, "-c", wrapper, "models", "optimize", "churn/2", *extra],
            capture_output=True,
            text=True,
            cwd=project,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            "error: Optimizing a sklearn model (ONNX export with skl2onnx) needs the 'onnx' "
            "extra: pip install 'modelyard[onnx]'"
        ]
    assert cli("models", "show", "churn/2", "--json").json() == before_version
    assert cli("models", "history", "churn", "--json").json() == before_history
    assert _store_state(project) == before_files
