"""How the ``modelyard`` program fails: one line, the right exit code, no secret, no traceback.

Exit codes: 0 ok, 1 a check failed, 2 bad input, usage or environment, 3 an internal
error; ``--debug`` adds the traceback. Each case of issue 11 runs through the real
CLI (``main`` in-process, or the program in a subprocess); the classes behind them are
then exercised with generated exceptions raised inside a command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from fsspec.registry import _registry as fsspec_classes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc

from modelyard.cli.app import app, main
from modelyard.config import init_project
from modelyard.errors import (
    ConflictError,
    GateFailedError,
    InvalidInputError,
    ModelError,
    NotFoundError,
    StorageError,
)

SECRET = "Zq9-Sekrit-Pw"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def lines(self) -> list[str]:
        return self.err.rstrip("\n").splitlines()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _program(*args: str, cwd: Path, **env: str) -> Result:
    """The real program, as a shell runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "_MODELYARD"))}
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, "COLUMNS": "200", **env},
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project as the working directory, no MODELYARD_* variables."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    root = tmp_path / "proj"
    init_project(root)
    monkeypatch.chdir(root)
    return root


def _one_error_line(result: Result, code: int = 2) -> str:
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err
    [line] = result.lines
    assert line.startswith("error: "), line
    return line


@contextmanager
def _command(name: str, body: Callable[[], Any]) -> Iterator[None]:
    """A command registered on the real app for one test."""
    before = list(app.registered_commands)
    app.command(name)(body)
    try:
        yield
    finally:
        app.registered_commands[:] = before


# -- the cases of issue 11, through the real CLI ----------------------------------------------


def test_init_on_an_existing_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    line = _one_error_line(_program("init", "afile", cwd=tmp_path))
    assert (
        line
        == f"error: Expected a folder for the project, got the file {tmp_path / 'afile'}"
        + (" - at directory")
    )


def test_init_in_a_read_only_folder_names_it(tmp_path: Path) -> None:
    target = _read_only_folder(tmp_path) / "proj"
    line = _one_error_line(_program("init", str(target), cwd=tmp_path))
    assert str(target.parent) in line


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in (root ignores modes: use sysfs)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    sysfs = Path("/sys/fs")
    try:
        (sysfs / "modelyard-probe").mkdir()
    except OSError:
        return sysfs
    (sysfs / "modelyard-probe").rmdir()
    pytest.fail("found no read-only folder to test with")


def test_a_read_only_artifacts_folder_is_one_line(
    project: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    arts = _read_only_folder(tmp_path) / "artifacts"
    monkeypatch.setenv("MODELYARD_ARTIFACTS", str(arts))
    line = _one_error_line(cli("models", "list"))
    assert line.startswith(f"error: Artifact store {arts} failed: cannot create the folder")
    assert "MODELYARD_ARTIFACTS" in line


def test_s3_artifacts_without_s3fs_name_the_extra(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    # an earlier test may have imported it: fsspec then keeps the class in its registry
    monkeypatch.delitem(fsspec_classes, "s3", raising=False)
    monkeypatch.setenv("MODELYARD_ARTIFACTS", f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix")
    line = _one_error_line(cli("models", "list"))
    assert line == (
        "error: The artifact store s3://AKIAEXAMPLE:***@bucket/prefix needs the 's3' extra: "
        "pip install 'modelyard[s3]'"
    )
    loud = cli("--debug", "models", "list")
    assert "Traceback" in loud.err and SECRET not in loud.err


@pytest.mark.parametrize("port", ["abc", "99999", "-1", "", "5432x"])
def test_a_bad_port_in_db_url_is_one_line_with_the_url_masked(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    url = f"postgresql+psycopg://ana:{SECRET}@127.0.0.1:{port}/ml?password={SECRET}"
    monkeypatch.setenv("MODELYARD_DB_URL", url)
    line = _one_error_line(cli("runs", "list"))
    assert SECRET not in line
    assert "postgresql+psycopg://ana:***@127.0.0.1" in line
    loud = cli("--debug", "runs", "list")
    assert loud.code == 2 and SECRET not in loud.err + loud.out


def test_a_password_in_the_query_is_never_printed(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MODELYARD_DB_URL", f"postgresql+psycopg://ana@127.0.0.1:1/ml?password={SECRET}"
    )
    for args in (("runs", "list"), ("--debug", "runs", "list"), ("config",), ("config", "--json")):
        result = cli(*args)
        assert SECRET not in result.out + result.err, args


def test_a_file_that_is_not_parquet_is_one_line(project: Path, cli: Callable[..., Result]) -> None:
    bad = project / "data.parquet"
    bad.write_text("hello, not parquet\n")
    drift = _one_error_line(cli("monitor", "drift", "--reference", str(bad), "--current", str(bad)))
    assert "data.parquet" in drift
    (project / "features.py").write_text("")
    joined = _one_error_line(
        cli("features", "historical", str(bad), "--out", "o.parquet", "--features", "v:f")
    )
    assert "data.parquet" in joined or "v" in joined


def test_a_report_in_a_missing_folder_names_the_folder(
    project: Path, cli: Callable[..., Result]
) -> None:
    out = project / "missing" / "dir" / "report.html"
    line = _one_error_line(cli("monitor", "report", "churn", "--out", str(out)))
    assert str(out.parent) in line or "No model named 'churn'" in line


def test_a_filter_nested_500_deep_is_refused_without_a_traceback(
    project: Path, cli: Callable[..., Result]
) -> None:
    deep = "(" * 500 + "metrics.auc > 1" + ")" * 500
    result = cli("runs", "list", "--filter", deep)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert result.lines[0].startswith("error: ")


def test_a_metric_too_large_for_a_float_is_one_line(
    project: Path, cli: Callable[..., Result]
) -> None:
    import modelyard as my

    def log_huge() -> None:
        with my.start_run(experiment="overflow"):
            my.log_metric("x", 10**400)

    with _command("log-huge", log_huge):
        line = _one_error_line(cli("log-huge"))
    assert "metric" in line.lower() or "too large" in line


# -- the version and shell completion ---------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = _program("--version", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.out == f"modelyard {version('modelyard')}\n"


def test_shell_completion(tmp_path: Path) -> None:
    script = _program("--show-completion", "bash", cwd=tmp_path)
    assert script.code == 0, script.err
    assert "_MODELYARD_COMPLETE=complete_bash" in script.out
    words = _program(
        cwd=tmp_path, _MODELYARD_COMPLETE="complete_bash", COMP_WORDS="modelyard ru", COMP_CWORD="1"
    )
    assert words.code == 0, words.err
    assert words.out.split() == ["runs"]
    sub = _program(
        cwd=tmp_path,
        _MODELYARD_COMPLETE="complete_bash",
        COMP_WORDS="modelyard monitor dr",
        COMP_CWORD="2",
    )
    assert sub.out.split() == ["drift"]


def test_no_arguments_prints_the_help(cli: Callable[..., Result]) -> None:
    result = cli()
    assert result.code == 2
    assert "Usage: modelyard" in result.out
    assert "--install-completion" in result.out and "--version" in result.out


# -- the classes, with generated exceptions raised inside a command ---------------------------

_URLS = st.builds(
    "{}://{}:{}@{}/{}".format,
    st.sampled_from(["postgresql+psycopg", "redis", "s3", "https"]),
    st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    st.just(SECRET),
    st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?", fullmatch=True),
    st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True),
)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
_MESSAGES = st.builds(lambda a, url, b: f"{a} {url} {b}", _TEXT, _URLS, _TEXT)
_PATHS = st.from_regex(r"/[a-z0-9_./-]{1,30}", fullmatch=True)
_OS_ERRORS = st.sampled_from(
    [FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError]
)

# (exception factory, exit code)
_FAILURES = st.one_of(
    st.builds(lambda m: (InvalidInputError(m), 2), _MESSAGES),
    st.builds(lambda m: (NotFoundError(m), 2), _MESSAGES),
    st.builds(lambda m: (ConflictError(m), 2), _MESSAGES),
    st.builds(lambda m: (StorageError(m), 2), _MESSAGES),
    st.builds(lambda m: (ModelError(m), 2), _MESSAGES),
    st.builds(lambda m: (GateFailedError(m), 1), _MESSAGES),
    st.builds(lambda kind, p, m: (kind(13, m, p), 2), _OS_ERRORS, _PATHS, _MESSAGES),
    st.builds(lambda m: (OSError(m), 2), _MESSAGES),
    st.builds(lambda m: (ConnectionRefusedError(m), 2), _MESSAGES),
    st.builds(lambda m: (sa_exc.ArgumentError(m), 2), _MESSAGES),
    st.builds(lambda m: (sa_exc.OperationalError("SELECT 1", {}, RuntimeError(m)), 2), _MESSAGES),
    st.builds(
        lambda mod: (ModuleNotFoundError(f"No module named {mod!r}", name=mod), 2),
        st.sampled_from(["skl2onnx", "onnxruntime", "redis", "psycopg", "starlette", "torch"]),
    ),
    st.builds(lambda m: (OverflowError(m), 2), _MESSAGES),
    st.builds(lambda: (RecursionError("maximum recursion depth exceeded"), 2)),
    st.builds(lambda m: (KeyError(m), 3), _MESSAGES),
    st.builds(lambda m: (RuntimeError(m), 3), _MESSAGES),
    st.builds(lambda m: (ZeroDivisionError(m), 3), _MESSAGES),
    st.builds(lambda m: (ModuleNotFoundError(m, name="yaml"), 3), _MESSAGES),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(failure=_FAILURES, debug=st.booleans())
def test_every_failure_is_one_line_with_its_exit_code_and_no_secret(
    cli: Callable[..., Result], failure: tuple[BaseException, int], debug: bool
) -> None:
    exc, code = failure

    def fail() -> None:
        raise exc

    with _command("fail", fail):
        result = cli(*(["--debug"] if debug else []), "fail")
    assert result.code == code
    assert SECRET not in result.err + result.out
    assert result.out == ""
    lines = result.lines
    if debug:
        assert lines[0] == "Traceback (most recent call last):"
    else:
        assert "Traceback" not in result.err
        assert len(lines) == 1
    last = lines[-1]
    if code == 3:
        assert last.startswith(f"internal error: {type(exc).__name__}")
        assert last.endswith("(run with --debug for the traceback)") or "reinstall" in last
    else:
        assert last.startswith("error: ")
    if isinstance(exc, ModuleNotFoundError) and code == 2:
        assert "pip install 'modelyard[" in last
    if isinstance(exc, OSError) and exc.filename:
        assert str(exc.filename) in last


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.from_regex(r"--[a-z][a-z-]{0,12}", fullmatch=True))
def test_unknown_options_are_one_usage_line(cli: Callable[..., Result], option: str) -> None:
    known = {"--help", "--version", "--debug", "--verbose", "--project"}
    if option in known or option.startswith(("--install-completion", "--show-completion")):
        return
    result = cli(option, "runs", "list")
    assert result.code == 2
    [line] = result.lines
    assert line.startswith(f"error: No such option: {option}")  # and maybe "Did you mean"
    assert line.endswith("(see 'modelyard --help')")


def test_ctrl_c_exits_130(cli: Callable[..., Result]) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with _command("interrupted", interrupted):
        result = cli("interrupted")
    assert result.code == 130  # as a shell reports SIGINT
    assert "Traceback" not in result.err


def test_a_settings_file_with_a_password_in_a_yaml_error_is_masked(
    project: Path, cli: Callable[..., Result]
) -> None:
    config = project / "modelyard.yaml"
    config.write_text(f"db_url: postgresql://ana:{SECRET}@db/ml\nname: [unclosed\n")
    result = cli("runs", "list")
    assert result.code == 2
    assert SECRET not in result.err
    text = yaml.safe_dump({"db_url": f"postgresql://ana:{SECRET}@db/ml"})
    config.write_text(text + "  bad indent: [\n")
    assert SECRET not in cli("runs", "list").err


# -- missing extras ---------------------------------------------------------------------------


def test_a_postgres_url_without_psycopg_names_the_extra(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.setenv("MODELYARD_DB_URL", f"postgresql+psycopg://ana:{SECRET}@127.0.0.1:1/ml")
    line = _one_error_line(cli("runs", "list"))
    assert line.endswith("needs the 'postgres' extra: pip install 'modelyard[postgres]'")
    assert SECRET not in line


def test_serve_without_the_serve_extra_names_it(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server module cannot be imported (so nothing can start listening either)
    monkeypatch.setitem(sys.modules, "modelyard.serving.server", None)
    monkeypatch.setitem(sys.modules, "starlette", None)
    line = _one_error_line(cli("serve", "--port", "1"))
    assert "pip install 'modelyard[serve]'" in line


def test_every_extra_named_in_messages_is_declared() -> None:
    import tomllib

    from modelyard.errors import EXTRA_OF_MODULE

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    distribution = {
        "sklearn": "scikit-learn",
        "prometheus_client": "prometheus-client",
        "psycopg": "psycopg[binary]",
    }
    for module, extra in EXTRA_OF_MODULE.items():
        assert extra in extras, (module, extra)
        wanted = distribution.get(module, module).lower()
        named = [req.lower() for req in extras[extra]]
        assert any(req.startswith(wanted) for req in named), (module, extra, named)
    every = extras["all"][0]
    for extra in extras:
        assert extra in ("all", "dev") or extra in every, extra
