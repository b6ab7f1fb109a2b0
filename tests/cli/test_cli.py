"""The ``modelyard`` command line, run as a user runs it.

Most cases call ``modelyard.cli.app.main(argv)`` in-process and read what it printed;
a few run the real program in a subprocess. The CLI finds the test store through
``MODELYARD_DB_URL``, as a user's shell would point it at a team database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from sqlalchemy.engine import make_url

from modelyard.cli.app import main
from modelyard.config import Settings, init_project, load_settings
from modelyard.tracking.client import TrackingClient

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    """Output without colour codes (present when pytest runs with -s on a terminal)."""
    return _ANSI.sub("", text)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _plain(out)
        self.err = _plain(err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli("runs", "list")``: run the CLI in-process; its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()  # drop what the test printed before
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["COLUMNS"] = "200"  # wide enough that no name is cut short
    env.update(extra)
    return env


def _program(*args: str, cwd: Path, **env: str) -> Result:
    """Run the real ``modelyard`` program in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.app", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**env),
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the CLI is a thin layer over the client, which every backend tests;
    PostgreSQL is used below where the CLI itself differs (credentials in its URL)."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def project(settings: Settings, no_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test project as the working directory, its store chosen by MODELYARD_DB_URL."""
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    monkeypatch.chdir(settings.project_dir)
    return settings.project_dir


@pytest.fixture
def tracked(project: Path, client: TrackingClient, tmp_path: Path) -> dict[str, str]:
    """Four runs in two experiments; their ids by name."""
    model = tmp_path / "model.txt"
    model.write_text("weights")
    ids = {}
    with client.start_run("churn", name="alpha", tags={"team": "risk"}) as run:
        run.log_params({"model": "hgb", "depth": 6})
        run.log_metric("auc", 0.81)
        run.log_metric("loss", 0.3)
        run.log_input(pa.table({"age": [31, 45, 27]}), name="train")
        run.log_artifact(model)
        ids["alpha"] = run.id
        with client.start_run("churn", name="tuned", parent_run_id=run.id) as child:
            child.log_params({"model": "hgb", "depth": 8})
            child.log_metric("auc", 0.85)
            ids["tuned"] = child.id
    with client.start_run("churn", name="beta") as run:
        run.log_params({"model": "rf", "depth": 6})
        run.log_metric("auc", 0.75)
        run.log_metric("loss", 0.4)
        ids["beta"] = run.id
    with client.start_run("fraud", name="gamma") as run:
        run.log_params({"model": "hgb"})
        run.log_metric("auc", 0.9)
        ids["gamma"] = run.id
    return ids


# -- init -----------------------------------------------------------------------------------


def test_init_creates_a_project(tmp_path: Path) -> None:
    made = _program("init", "proj", "--name", "churn-models", cwd=tmp_path)
    assert made.code == 0, made.err
    config = tmp_path / "proj" / "modelyard.yaml"
    assert config.is_file()
    assert (tmp_path / "proj" / ".modelyard").is_dir()
    assert f"Created {config}" in made.out
    assert "modelyard runs list" in made.out
    assert load_settings(tmp_path / "proj", environ={}).name == "churn-models"

    again = _program("init", "proj", "--json", cwd=tmp_path)
    assert again.code == 0, again.err
    assert again.json() == {"config": str(config), "created": False}
    (tmp_path / "here").mkdir()
    fresh = _program("init", "--json", cwd=tmp_path / "here")  # default: the working folder
    assert fresh.json() == {"config": str(tmp_path / "here" / "modelyard.yaml"), "created": True}
    assert load_settings(tmp_path / "here", environ={}).name == "here"


def test_init_prints_a_path_with_brackets_as_it_is(tmp_path: Path, cli: Any) -> None:
    target = tmp_path / "exp[v2]" / "[/]"
    result = cli("init", str(target))
    assert result.code == 0, result.err
    assert f"Created {target / 'modelyard.yaml'}" in result.out


# -- runs list ------------------------------------------------------------------------------


def test_runs_list_shows_a_table_of_runs(project: Path, tracked: dict[str, str]) -> None:
    result = _program("runs", "list", cwd=project, MODELYARD_DB_URL=os.environ["MODELYARD_DB_URL"])
    assert result.code == 0, result.err
    assert "4 run(s)" in result.out
    for name, run_id in tracked.items():
        assert name in result.out
        assert run_id[:8] in result.out
    assert "churn/" in result.out and "fraud/" in result.out  # several experiments
    assert "└ " in result.out  # tuned is shown under its parent
    assert result.out.count("FINISHED") == 4
    assert "auc" in result.out and "0.85" in result.out


def test_runs_list_json_has_params_and_metrics(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "list", "--json")
    assert result.code == 0, result.err
    runs = {r["name"]: r for r in result.json()}
    assert set(runs) == set(tracked)
    alpha = runs["alpha"]
    assert alpha["id"] == tracked["alpha"]
    assert alpha["params"] == {"depth": "6", "model": "hgb"}
    assert alpha["metrics"] == {"auc": 0.81, "loss": 0.3}
    assert alpha["tags"] == {"team": "risk"}
    assert (alpha["experiment"], alpha["status"]) == ("churn", "FINISHED")
    assert runs["tuned"]["parent_run_id"] == tracked["alpha"]
    starts = [r["start_time"] for r in result.json()]
    assert starts == sorted(starts, reverse=True)  # newest first


def test_runs_list_filters(cli: Any, tracked: dict[str, str]) -> None:
    for args, names in (
        (["--filter", "metrics.auc > 0.8"], {"alpha", "tuned", "gamma"}),
        (["-f", "params.model = 'hgb' and metrics.loss < 0.35"], {"alpha"}),
        (["--experiment", "churn"], {"alpha", "tuned", "beta"}),
        (["-e", "churn", "-e", "fraud"], {"alpha", "tuned", "beta", "gamma"}),
        (["-e", "fraud", "-f", "metrics.auc > 0.95"], set()),
    ):
        result = cli("runs", "list", "--json", *args)
        assert result.code == 0, (args, result.err)
        assert {r["name"] for r in result.json()} == names, args


def test_runs_list_orders_and_limits(cli: Any, tracked: dict[str, str]) -> None:
    ordered = cli("runs", "list", "--json", "--order-by", "metrics.auc DESC")
    assert [r["name"] for r in ordered.json()] == ["gamma", "tuned", "alpha", "beta"]
    by_two = cli("runs", "list", "--json", "-o", "params.depth", "-o", "metrics.auc", "-n", "3")
    assert [r["name"] for r in by_two.json()] == ["beta", "alpha", "tuned"]
    top = cli("runs", "list", "--json", "-e", "churn", "-o", "metrics.auc", "-n", "1")
    assert [r["name"] for r in top.json()] == ["beta"]
    text = cli("runs", "list", "-n", "2", "-o", "metrics.auc DESC")
    assert "2 run(s)" in text.out
    assert "gamma" in text.out and "tuned" in text.out and "beta" not in text.out


def test_runs_list_without_runs_says_how_to_track_one(cli: Any, project: Path) -> None:
    result = cli("runs", "list")
    assert result.code == 0, result.err
    assert "No runs match" in result.out
    assert cli("runs", "list", "--json").json() == []


def test_names_and_values_are_printed_as_text_not_markup(
    cli: Any, project: Path, client: TrackingClient
) -> None:
    with client.start_run("churn", name="a[/]b [red]c") as run:
        run.log_param("layers", "[bold]64[/bold]")
        run.set_tag("note", ":warning: [v2]")
    listed = cli("runs", "list")
    assert listed.code == 0, listed.err
    assert "a[/]b [red]c" in listed.out
    shown = cli("runs", "show", run.id)
    assert shown.code == 0, shown.err
    assert "a[/]b [red]c" in shown.out
    assert "[bold]64[/bold]" in shown.out
    assert ":warning: [v2]" in shown.out


# -- runs show ------------------------------------------------------------------------------


def test_runs_show_prints_everything_about_a_run(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "show", tracked["alpha"])
    assert result.code == 0, result.err
    for text in (tracked["alpha"], "alpha", "churn", "FINISHED", "hgb", "0.81", "team", "risk"):
        assert text in result.out
    assert "inputs" in result.out and "train" in result.out
    assert "artifacts" in result.out and "model.txt" in result.out
    child = cli("runs", "show", tracked["tuned"])
    assert tracked["alpha"] in child.out  # its parent


def test_runs_show_json_by_prefix(
    cli: Any, tracked: dict[str, str], client: TrackingClient
) -> None:
    full = cli("runs", "show", tracked["alpha"], "--json")
    assert full.code == 0, full.err
    data = full.json()
    assert data["id"] == tracked["alpha"]
    assert data["params"] == {"depth": "6", "model": "hgb"}
    assert data["metrics"] == {"auc": 0.81, "loss": 0.3}
    [dataset] = data["inputs"]
    assert (dataset["name"], dataset["context"], dataset["num_rows"]) == ("train", "training", 3)
    assert dataset["digest"] == client.list_inputs(tracked["alpha"])[0].digest
    [artifact] = data["artifacts"]
    assert (artifact["path"], artifact["size"]) == ("model.txt", len("weights"))
    assert len(artifact["sha256"]) == 64

    prefix = cli("runs", "show", tracked["alpha"][:8], "--json")
    assert prefix.code == 0, prefix.err
    assert prefix.json() == data


def test_runs_show_unknown_run_exits_2(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "show", "deadbeefdeadbeef")
    assert result.code == 2
    assert result.out == ""
    assert result.err.splitlines() == [
        "error: No run with id 'deadbeefdeadbeef'. List runs with `modelyard runs list`."
    ]


# -- runs compare ---------------------------------------------------------------------------


def test_runs_compare_marks_rows_that_differ(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "compare", tracked["alpha"], tracked["beta"][:8], "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["runs"] == [tracked["alpha"], tracked["beta"]]
    rows = {row["key"]: row for row in data["rows"]}
    assert rows["name"] == {"key": "name", "values": ["alpha", "beta"], "differs": True}
    assert rows["params.model"] == {
        "key": "params.model",
        "values": ["hgb", "rf"],
        "differs": True,
    }
    assert rows["params.depth"] == {"key": "params.depth", "values": ["6", "6"], "differs": False}
    assert rows["metrics.auc"]["values"] == [0.81, 0.75]
    assert rows["metrics.auc"]["differs"] is True
    assert rows["status"]["differs"] is False

    three = cli("runs", "compare", tracked["alpha"], tracked["beta"], tracked["gamma"], "--json")
    rows = {row["key"]: row for row in three.json()["rows"]}
    assert rows["params.depth"] == {
        "key": "params.depth",
        "values": ["6", "6", None],  # gamma has no depth
        "differs": True,
    }


def test_runs_compare_diff_only(cli: Any, tracked: dict[str, str]) -> None:
    ids = (tracked["alpha"], tracked["beta"])
    table = cli("runs", "compare", *ids)
    assert "params.depth" in table.out and "params.model" in table.out
    only = cli("runs", "compare", *ids, "--diff-only")
    assert only.code == 0, only.err
    assert "params.model" in only.out and "metrics.auc" in only.out
    assert "params.depth" not in only.out
    assert "status" not in only.out
    as_json = cli("runs", "compare", *ids, "--diff-only", "--json")
    keys = [row["key"] for row in as_json.json()["rows"]]
    assert "params.model" in keys
    assert "params.depth" not in keys
    assert all(row["differs"] for row in as_json.json()["rows"])


def test_runs_compare_needs_two_runs(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "compare", tracked["alpha"])
    assert result.code == 2
    assert "at least two run ids" in result.err


# -- errors ---------------------------------------------------------------------------------


def test_bad_filter_exits_2_with_a_caret_under_the_token(cli: Any, tracked: dict[str, str]) -> None:
    # longer than a terminal line: the caret must still sit under the bad token
    bad = "params.model = 'hgb' and tags.team = 'risk' and metrics.auc > 0.8 and metrics.loss << 3"
    result = cli("runs", "list", "--filter", bad)
    assert result.code == 2
    assert result.out == ""
    first, text, caret = result.err.splitlines()
    column = bad.index("<<") + 1  # the second '<' is the token that was not expected
    assert first == f"error: Expected a value after '<', got '<' (column {column + 1})"
    assert text == "  " + bad
    assert caret == " " * (2 + column) + "^"


def test_bad_order_exits_2(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "list", "--order-by", "metrics.auc sideways")
    assert result.code == 2
    assert result.err.startswith("error: Expected ASC or DESC, got 'sideways'")
    assert "Traceback" not in result.err


def test_unknown_experiment_exits_2_with_a_suggestion(cli: Any, tracked: dict[str, str]) -> None:
    result = cli("runs", "list", "-e", "chrun")
    assert result.code == 2
    assert result.err.startswith("error: No experiment named 'chrun'. Did you mean 'churn'?")


def test_usage_errors_exit_2_without_a_traceback(cli: Any, project: Path) -> None:
    for args in (["runs", "list", "--bogus"], ["runs", "show"], ["runs", "list", "-n", "0"]):
        result = cli(*args)
        assert result.code == 2, args
        assert "Traceback" not in result.err
        [line] = result.err.splitlines()  # one line, however long the message
        assert line.startswith("error: ")
        assert line.endswith(f"(see 'modelyard runs {args[1]} --help')"), line


def test_no_project_exits_2_and_suggests_init(tmp_path: Path, no_env: None) -> None:
    result = _program("runs", "list", cwd=tmp_path)
    assert result.code == 2
    assert result.out == ""
    assert result.err.splitlines() == [
        f"error: No modelyard project in {tmp_path} or any folder above it. "
        "Run `modelyard init` here, or pass --project DIR."
    ]


def test_debug_prints_the_traceback(
    cli: Any, tmp_path: Path, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    quiet = cli("runs", "list")
    assert quiet.code == 2
    assert "Traceback" not in quiet.err
    for flag in ("--debug", "--verbose", "-v"):
        loud = cli(flag, "runs", "list")
        assert loud.code == 2
        assert "Traceback" in loud.err
        assert "NotFoundError" in loud.err
        assert loud.err.rstrip().splitlines()[-1].startswith("error: No modelyard project in")


# -- choosing the project -------------------------------------------------------------------


def _project_with_run(root: Path, name: str) -> str:
    init_project(root)
    with TrackingClient(load_settings(root, environ={})) as client:
        with client.start_run("churn", name=name) as run:
            return run.id


def test_project_option_and_environment_select_the_project(
    tmp_path: Path, cli: Any, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _project_with_run(tmp_path / "first", "in-first")
    second = _project_with_run(tmp_path / "second", "in-second")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    by_option = cli("--project", str(tmp_path / "first"), "runs", "list", "--json")
    assert by_option.code == 0, by_option.err
    assert [r["id"] for r in by_option.json()] == [first]
    by_short = cli("-p", str(tmp_path / "second"), "runs", "list", "--json")
    assert [r["id"] for r in by_short.json()] == [second]

    monkeypatch.setenv("MODELYARD_PROJECT", str(tmp_path / "second"))
    by_env = cli("runs", "list", "--json")
    assert [r["id"] for r in by_env.json()] == [second]
    # the option wins over the environment
    both = cli("--project", str(tmp_path / "first"), "runs", "show", first, "--json")
    assert both.code == 0, both.err
    assert both.json()["name"] == "in-first"

    in_program = _program("runs", "list", "--json", cwd=elsewhere, MODELYARD_PROJECT="../second")
    assert in_program.code == 0, in_program.err
    assert [r["id"] for r in in_program.json()] == [second]

    missing = cli("--project", str(elsewhere), "runs", "list")
    assert missing.code == 2
    assert missing.err.startswith(f"error: No modelyard.yaml in {elsewhere}.")
    assert "modelyard init" in missing.err


def test_the_project_is_found_from_a_subfolder(tmp_path: Path, no_env: None) -> None:
    run_id = _project_with_run(tmp_path / "repo", "found")
    deep = tmp_path / "repo" / "src" / "pkg"
    deep.mkdir(parents=True)
    result = _program("runs", "show", run_id[:8], "--json", cwd=deep)
    assert result.code == 0, result.err
    assert result.json()["name"] == "found"


# -- credentials ----------------------------------------------------------------------------


def _with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_a_postgres_password_never_appears_in_output(
    pg_database: str, tmp_path: Path, cli: Any, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Sup3rSecretPw"
    # the test server trusts local connections, so any password gets in
    url = _with_password(pg_database, password)
    root = tmp_path / "team"
    init_project(root)
    config = yaml.safe_load((root / "modelyard.yaml").read_text())
    config["db_url"] = url
    (root / "modelyard.yaml").write_text(yaml.safe_dump(config))
    with TrackingClient(load_settings(root, environ={})) as client:
        with client.start_run("churn", name="first") as a:
            a.log_metric("auc", 0.8)
        with client.start_run("churn", name="second") as b:
            b.log_metric("auc", 0.7)
    monkeypatch.chdir(root)

    outputs = [
        cli("runs", "list"),
        cli("runs", "list", "--json"),
        cli("runs", "show", a.id),
        cli("runs", "show", a.id, "--json"),
        cli("runs", "compare", a.id, b.id),
        cli("runs", "list", "-f", "metrics.auc >> 1"),
        cli("--verbose", "runs", "show", "deadbeefdeadbeef"),
    ]
    assert [r.code for r in outputs] == [0, 0, 0, 0, 0, 2, 2]

    # a server that is not there: the error names the store, without its password
    port = make_url(url).port
    monkeypatch.setenv("MODELYARD_DB_URL", url.replace(f":{port}/", ":1/"))
    down = cli("runs", "list")
    assert down.code == 2
    assert down.err.startswith("error: Metadata store postgresql+psycopg://")
    assert ":***@" in down.err
    outputs += [down, cli("--verbose", "runs", "list")]
    monkeypatch.setenv("MODELYARD_DB_URL", url.replace("postgresql+psycopg", "postgresql+nodriver"))
    outputs.append(cli("--verbose", "runs", "list"))

    for result in outputs:
        assert password not in result.out
        assert password not in result.err


def test_a_password_with_a_slash_is_hidden_too(
    tmp_path: Path, cli: Any, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELYARD_DB_URL", "postgresql+psycopg://ana:pa/ss-w0rd@127.0.0.1:1/ml")
    result = cli("runs", "list")
    assert result.code == 2
    assert "ss-w0rd" not in result.err
