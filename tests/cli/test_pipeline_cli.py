"""``modelyard pipeline ...`` run as a user runs it, against real projects in tmp_path.

Most cases call ``modelyard.cli.app.main(argv)`` in-process (``--engine inline``); a few
run the real program in a subprocess (the local process pool, a SIGKILL, tracebacks).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import modelyard.cli.pipeline as pipeline_cli
from modelyard.cli.app import main
from modelyard.config import CONFIG_FILE, init_project, load_settings
from modelyard.errors import PipelineDefinitionError
from modelyard.pipelines import load_pipelines
from modelyard.pipelines.runner import load_pipeline_run

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

NUMBERS = '''
from pathlib import Path

from modelyard import log_metric, pipeline, step


@step
def load(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()]


@step
def scale(values: list[float], factor: float = 2.0) -> list[float]:
    return [v * factor for v in values]


@step
def total(values: list[float]) -> float:
    result = sum(values)
    log_metric("total", result)
    return result


@step
def count(values: list[float], limit: int = 100) -> int:
    return min(len(values), limit)


@pipeline
def numbers(
    data: Path = Path("numbers.txt"), factor: float = 2.0, limit: int = 100, label: str = "x"
) -> None:
    """Scale some numbers and add them up."""
    values = load(data)
    total(scale(values, factor=factor))
    count(values, limit=limit)


@pipeline
def needs(n: int) -> None:
    count(load(Path("numbers.txt")), limit=n)
'''

BROKEN_TOTAL = NUMBERS.replace(
    "    result = sum(values)\n",
    "    result = sum(values)\n    raise ValueError(f'bad total {result}')\n",
)

SLOW = NUMBERS.replace(
    "    return [v * factor for v in values]",
    "    import time\n    time.sleep(float((Path(__file__).parent / 'sleep.txt').read_text()))\n"
    "    return [v * factor for v in values]",
)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


def cli_project(tmp_path: Path, db_url: str, source: str = NUMBERS) -> Path:
    """A project with ``pipelines.py`` = ``source`` and its data file, on ``db_url``."""
    root = tmp_path / "proj"
    init_project(root)
    (root / CONFIG_FILE).write_text(f"db_url: {db_url}\n")
    cli_write(root, source)
    (root / "numbers.txt").write_text("1 2 3 4\n")
    return root


def cli_write(root: Path, source: str) -> None:
    """Write pipelines.py as a user edits it (a new mtime and size, so no stale bytecode)."""
    path = root / "pipelines.py"
    path.write_text(textwrap.dedent(source))
    stamp = time.time() + 2
    os.utime(path, (stamp, stamp))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cli(root, "pipeline", "list")``: the CLI in-process for project ``root``."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)

    def run(root: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--project", str(root), *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def cli_program(root: Path, *args: str, timeout: float = 120) -> Result:
    """The real ``modelyard`` program in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.app", "--project", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def numbers(tmp_path: Path, sqlite_url: str) -> Path:
    return cli_project(tmp_path, sqlite_url)


def cli_statuses(result: Result) -> dict[str, str]:
    return {name: step["status"] for name, step in result.json()["steps"].items()}


# -- list / show / graph ---------------------------------------------------------------------


def test_list_shows_each_pipeline_with_its_steps_and_params(cli: Any, numbers: Path) -> None:
    shown = cli(numbers, "pipeline", "list", "--json")
    assert shown.code == 0, shown.err
    rows = {r["name"]: r for r in shown.json()}
    assert set(rows) == {"needs", "numbers"}
    assert rows["numbers"]["module"] == "pipelines"
    assert rows["numbers"]["steps"] == ["load", "scale", "total", "count"]
    assert rows["needs"]["steps"] is None  # n has no default: built only with -p
    assert {p["name"]: (p["type"], p["default"]) for p in rows["numbers"]["params"]} == {
        "data": ("pathlib.Path", "numbers.txt"),
        "factor": ("float", 2.0),
        "limit": ("int", 100),
        "label": ("str", "x"),
    }
    text = cli(numbers, "pipeline", "list")
    assert text.code == 0
    assert "numbers" in text.out and "factor" in text.out and "needs -p" in text.out


def test_show_and_graph_in_every_format(cli: Any, numbers: Path) -> None:
    shown = cli(numbers, "pipeline", "show", "numbers")
    assert shown.code == 0, shown.err
    assert "Scale some numbers" in shown.out and "pipelines:scale" in shown.out
    assert "values <- load.output" in shown.out
    data = cli(numbers, "pipeline", "show", "numbers", "--json", "-p", "factor=3").json()
    assert data["graph"]["params"]["factor"] == 3.0
    assert [n["name"] for n in data["graph"]["nodes"]] == ["load", "scale", "total", "count"]
    graph = cli(numbers, "pipeline", "graph", "numbers", "--format", "json").json()
    assert {(e["from"], e["to"], e["input"]) for e in graph["edges"]} == {
        ("load", "scale", "values"),
        ("scale", "total", "values"),
        ("load", "count", "values"),
    }
    dot = cli(numbers, "pipeline", "graph", "numbers", "--format", "dot")
    assert dot.code == 0 and dot.out.startswith('digraph "numbers" {')
    assert '"load" -> "scale" [label="values"];' in dot.out
    mermaid = cli(numbers, "pipeline", "graph", "numbers", "--format", "mermaid")
    assert mermaid.out.startswith("flowchart LR")
    assert mermaid.out.count("-->") == 3
    tree = cli(numbers, "pipeline", "graph", "numbers")
    assert tree.code == 0 and "pipeline numbers" in tree.out and "factor = 2.0" in tree.out
    needs = cli(numbers, "pipeline", "graph", "needs", "-p", "n=2", "--format", "json").json()
    assert needs["nodes"][1]["params"] == {"limit": 2}


# -- run: the cache -------------------------------------------------------------------------


def test_a_second_run_is_fully_cached(cli: Any, tmp_path: Path, db_url: str) -> None:
    root = cli_project(tmp_path, db_url)
    first = cli(root, "pipeline", "run", "numbers", "--engine", "inline", "--json")
    assert first.code == 0, first.err
    assert set(cli_statuses(first).values()) == {"completed"}
    assert first.json()["steps"]["total"]["outputs"]["output"]["materializer"]
    second = cli(root, "pipeline", "run", "numbers", "--engine", "inline", "--json")
    assert second.code == 0, second.err
    assert set(cli_statuses(second).values()) == {"cached"}
    for name, step in second.json()["steps"].items():
        assert step["cached_from"] == first.json()["steps"][name]["run_id"]
        assert step["outputs"] == first.json()["steps"][name]["outputs"]
    runs = cli(root, "pipeline", "runs", "--json").json()
    assert [r["run_id"] for r in runs] == [second.json()["run_id"], first.json()["run_id"]]
    assert runs[0]["steps"] == {"ran": 0, "cached": 4, "failed": 0, "skipped": 0, "total": 4}
    assert runs[1]["steps"]["ran"] == 4 and runs[1]["status"] == "completed"
    why = cli(root, "pipeline", "inspect", second.json()["run_id"][:8], "--json").json()
    assert why["steps"]["scale"]["why"]["text"].startswith("cached: same key as")
    forced = cli(root, "pipeline", "run", "numbers", "--engine", "inline", "--no-cache", "--json")
    assert set(cli_statuses(forced).values()) == {"completed"}
    text = cli(root, "pipeline", "inspect", forced.json()["run_id"])
    assert "  scale: same key as" in text.out and "the cache was off" in text.out


def test_a_changed_param_reruns_only_the_steps_it_reaches(cli: Any, numbers: Path) -> None:
    base = cli(numbers, "pipeline", "run", "numbers", "--engine", "inline", "--json")
    assert base.code == 0, base.err
    factor = cli(
        numbers, "pipeline", "run", "numbers", "--engine", "inline", "-p", "factor=3", "--json"
    )
    assert factor.code == 0, factor.err
    assert cli_statuses(factor) == {
        "load": "cached",
        "scale": "completed",
        "total": "completed",
        "count": "cached",
    }
    why = cli(numbers, "pipeline", "inspect", factor.json()["run_id"], "--json").json()["steps"]
    assert why["scale"]["why"]["changed"] == ["params.factor"]
    assert why["total"]["why"]["changed"] == ["inputs.values"]
    assert why["scale"]["why"]["compared_with"] == base.json()["steps"]["scale"]["run_id"]
    inspect_text = " ".join(
        cli(numbers, "pipeline", "inspect", factor.json()["run_id"]).out.split()
    )
    assert "params.factor" in inspect_text
    # the pipeline computed 3 * (1 + 2 + 3 + 4)
    settings_ = load_settings(numbers, environ={})
    assert load_pipeline_run(factor.json()["run_id"], settings=settings_).load("total") == 30.0
    limit = cli(
        numbers, "pipeline", "run", "numbers", "--engine", "inline", "-p", "limit=2", "--json"
    )
    assert [n for n, s in cli_statuses(limit).items() if s == "completed"] == ["count"]
    label = cli(
        numbers, "pipeline", "run", "numbers", "--engine", "inline", "-p", "label=y", "--json"
    )
    assert set(cli_statuses(label).values()) == {"cached"}  # no step reads it
    # the data file's content is part of the key: a new file reruns what reads it
    (numbers / "numbers.txt").write_text("1 2 3 5\n")
    changed = cli(numbers, "pipeline", "run", "numbers", "--engine", "inline", "--json")
    assert set(cli_statuses(changed).values()) == {"completed"}
    why = cli(numbers, "pipeline", "inspect", changed.json()["run_id"], "--json").json()["steps"]
    assert why["load"]["why"]["changed"] == ["params.path"]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(factors=st.lists(st.sampled_from([1.0, 2.0, 3.0]), min_size=1, max_size=4))
def test_any_sequence_of_runs_reruns_exactly_the_steps_whose_inputs_changed(
    cli: Any, numbers: Path, factors: list[float]
) -> None:
    """Oracle: a step reruns iff no earlier run (of any example) had its factor."""
    seen_file = numbers / "seen.json"
    if not seen_file.exists():
        assert cli(numbers, "pipeline", "run", "numbers", "--engine", "inline").code == 0
        seen_file.write_text("[2.0]")
    seen = set(json.loads(seen_file.read_text()))
    for factor in factors:
        ran = cli(
            numbers,
            "pipeline",
            "run",
            "numbers",
            "--engine",
            "inline",
            "-p",
            f"factor={factor}",
            "--json",
        )
        assert ran.code == 0, ran.err
        expected = "cached" if factor in seen else "completed"
        assert cli_statuses(ran) == {
            "load": "cached",
            "scale": expected,
            "total": expected,
            "count": "cached",
        }
        seen.add(factor)
        seen_file.write_text(json.dumps(sorted(seen)))


def test_the_local_engine_runs_steps_in_worker_processes(numbers: Path) -> None:
    ran = cli_program(numbers, "pipeline", "run", "numbers", "--max-workers", "2")
    assert ran.code == 0, ran.err
    # not a terminal: one plain line per finished step, then the summary
    assert re.search(r"^load\s+completed", ran.out, re.M)
    assert re.search(r"^numbers completed in .*4 completed \(run [0-9a-f]{32}\)", ran.out, re.M)
    runs = cli_program(numbers, "pipeline", "runs", "--json").json()
    assert runs[0]["executor"] == "local" and runs[0]["steps"]["ran"] == 4


# -- run: failures and resume ---------------------------------------------------------------


def test_a_failing_step_exits_1_and_resume_completes_it_after_the_fix(
    cli: Any, tmp_path: Path, db_url: str
) -> None:
    root = cli_project(tmp_path, db_url, BROKEN_TOTAL)
    failed = cli(root, "pipeline", "run", "numbers", "--engine", "inline", "-p", "factor=3")
    assert failed.code == 1
    run_id = re.search(r"--resume ([0-9a-f]{32})", failed.err)
    assert run_id is not None, failed.err
    assert "step 'total' failed" in failed.err and "bad total 30.0" in failed.err
    assert f"modelyard pipeline run numbers --resume {run_id[1]}" in failed.err
    assert re.search(r"its run and log: modelyard runs show [0-9a-f]{32}", failed.err)
    assert "Traceback" not in failed.err + failed.out
    inspected = cli(root, "pipeline", "inspect", run_id[1], "--json").json()
    assert inspected["status"] == "failed"
    assert cli_statuses_of(inspected) == {
        "load": "completed",
        "scale": "completed",
        "total": "failed",
        "count": "completed",
    }
    assert "bad total" in inspected["steps"]["total"]["error"]
    listed = cli(root, "pipeline", "runs", "numbers", "--json").json()
    assert listed[0]["status"] == "failed" and listed[0]["steps"]["failed"] == 1
    # the user fixes the bug and resumes: the failed step reruns with the run's params
    cli_write(root, NUMBERS)
    resumed = cli(
        root,
        "pipeline",
        "run",
        "numbers",
        "--engine",
        "inline",
        "--resume",
        run_id[1][:10],
        "--json",
    )
    assert resumed.code == 0, resumed.err
    data = resumed.json()
    assert data["resumed_from"] == run_id[1]
    assert data["params"]["factor"] == 3.0
    assert cli_statuses(resumed) == {
        "load": "cached",
        "scale": "cached",
        "total": "completed",
        "count": "cached",
    }
    why = cli(root, "pipeline", "inspect", data["run_id"], "--json").json()["steps"]["total"]["why"]
    assert why["compared_with"] == inspected["steps"]["total"]["run_id"]
    assert why["changed"] == ["source"]


def cli_statuses_of(data: dict[str, Any]) -> dict[str, str]:
    return {name: step["status"] for name, step in data["steps"].items()}


def test_a_failed_run_with_json_prints_only_json_and_exits_1(
    cli: Any, tmp_path: Path, sqlite_url: str
) -> None:
    root = cli_project(tmp_path, sqlite_url, BROKEN_TOTAL)
    failed = cli(root, "pipeline", "run", "numbers", "--engine", "inline", "--json")
    assert failed.code == 1
    data = failed.json()  # the whole of stdout is one JSON document
    assert data["status"] == "failed" and data["steps"]["total"]["status"] == "failed"
    assert "--resume" in failed.err


def test_a_killed_pipeline_run_is_shown_killed_and_can_be_resumed(
    tmp_path: Path, sqlite_url: str
) -> None:
    root = cli_project(tmp_path, sqlite_url, SLOW)
    (root / "sleep.txt").write_text("60")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelyard.cli.app",
            "--project",
            str(root),
            "pipeline",
            "run",
            "numbers",
            "--engine",
            "inline",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            runs = cli_program(root, "pipeline", "runs", "--json")
            if runs.code == 0 and runs.json() and runs.json()[0]["steps"]["ran"] >= 1:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the pipeline never started its steps")
        run_id = runs.json()[0]["run_id"]
        assert runs.json()[0]["status"] == "running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    listed = cli_program(root, "pipeline", "runs", "--json")
    assert listed.json()[0]["status"] == "killed"
    assert "killed" in cli_program(root, "pipeline", "runs").out
    (root / "sleep.txt").write_text("0")
    resumed = cli_program(
        root, "pipeline", "run", "numbers", "--engine", "inline", "--resume", run_id, "--json"
    )
    assert resumed.code == 0, resumed.err
    assert resumed.json()["steps"]["load"]["status"] == "cached"
    assert resumed.json()["steps"]["scale"]["status"] == "completed"


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-p", "factor=abc"], ["'factor'", "float", "'abc'"]),
        (["-p", "limit=1.5"], ["'limit'", "int", "'1.5'"]),
        (["-p", "factr=2"], ["'factr'", "Did you mean 'factor'"]),
        (["-p", "factor"], ["key=value", "'factor'"]),
        (["--engine", "spark"], ["--engine", "'spark'"]),
        (["--max-workers", "0"], ["--max-workers", "greater than or equal to 1"]),
    ],
)
def test_a_bad_param_is_one_line_naming_it_and_exit_2(
    cli: Any, numbers: Path, args: list[str], words: list[str]
) -> None:
    bad = cli(numbers, "pipeline", "run", "numbers", *args)
    assert bad.code == 2, bad.out + bad.err
    assert bad.err.startswith("error: ") and bad.err.count("\n") == 1, bad.err
    for word in words:
        assert word in bad.err
    assert cli(numbers, "pipeline", "runs", "--json").json() == []  # nothing ran


def test_a_missing_required_param_names_it(cli: Any, numbers: Path) -> None:
    bad = cli(numbers, "pipeline", "run", "needs")
    assert bad.code == 2
    assert "'n'" in bad.err and "missing required parameter" in bad.err


def test_an_unknown_pipeline_exits_2_with_did_you_mean(cli: Any, numbers: Path) -> None:
    for command in ("run", "show", "graph"):
        bad = cli(numbers, "pipeline", command, "numbrs")
        assert bad.code == 2
        assert "No pipeline named 'numbrs'. Did you mean 'numbers'?" in bad.err
        assert "Known pipelines: needs, numbers." in bad.err


def test_an_unknown_run_to_resume_or_inspect_exits_2(cli: Any, numbers: Path) -> None:
    bad = cli(numbers, "pipeline", "run", "numbers", "--resume", "0123456789abcdef")
    assert bad.code == 2 and "No pipeline run with id '0123456789abcdef'" in bad.err
    assert cli(numbers, "pipeline", "inspect", "abc").code == 2  # too short a prefix
    assert cli(numbers, "pipeline", "inspect", "f" * 32).code == 2


def test_a_syntax_error_in_pipelines_py_is_one_line_with_file_and_line(numbers: Path) -> None:
    cli_write(numbers, NUMBERS + "\n\ndef oops(:\n    pass\n")
    line = (NUMBERS + "\n\ndef oops(:\n").count("\n")
    for command in (["pipeline", "list"], ["pipeline", "run", "numbers"]):
        bad = cli_program(numbers, *command)
        assert bad.code == 2, bad.err
        assert bad.err.count("\n") == 1 and "Traceback" not in bad.err
        assert f"{numbers.resolve() / 'pipelines.py'}:{line}" in bad.err
        assert "SyntaxError" in bad.err
    debug = cli_program(numbers, "--debug", "pipeline", "list")
    assert debug.code == 2 and "Traceback" in debug.err


def test_no_pipelines_py_says_where_to_write_one(cli: Any, tmp_path: Path, sqlite_url: str) -> None:
    root = cli_project(tmp_path, sqlite_url)
    (root / "pipelines.py").unlink()
    listed = cli(root, "pipeline", "list")
    assert listed.code == 0 and "No pipelines" in listed.out and "pipelines.py" in listed.out
    assert cli(root, "pipeline", "list", "--json").json() == []
    bad = cli(root, "pipeline", "run", "numbers")
    assert bad.code == 2 and "the project has no pipelines" in bad.err


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(["factor", "limit", "label", "data"]), text=_TEXT)
def test_any_param_text_is_parsed_as_the_api_parses_it_or_refused_in_one_line(
    cli: Any, numbers: Path, key: str, text: str
) -> None:
    pipeline = load_pipelines(load_settings(numbers, environ={}))["numbers"]
    try:
        expected: Any = pipeline.build(pipeline.parse_params([f"{key}={text}"])).params[key]
    except PipelineDefinitionError:
        expected = None
    shown = cli(numbers, "pipeline", "graph", "numbers", "-p", f"{key}={text}", "--format", "json")
    if expected is None:
        assert shown.code == 2, shown.out
        assert shown.err.startswith("error: ") and f"'{key}'" in shown.err
        assert "Traceback" not in shown.err
    else:
        assert shown.code == 0, shown.err
        got = shown.json()["params"][key]
        assert got == (str(expected) if key == "data" else expected)


def test_on_a_terminal_the_steps_are_a_live_table(
    cli: Any, numbers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, highlight=False)
    monkeypatch.setattr(pipeline_cli, "console", terminal)
    first = cli(numbers, "pipeline", "run", "numbers", "--engine", "inline")
    assert first.code == 0, first.err
    shown = _ANSI.sub("", screen.getvalue())
    assert "\x1b[" in screen.getvalue()  # drawn for a terminal
    final = shown[shown.rindex("load") :]  # the last frame of the live table
    for step in ("load", "scale", "total", "count"):
        assert re.search(rf"{step}\s+completed\s+\d+\.\ds", final), final
    assert "numbers completed in" in shown
    screen.truncate(0)
    again = cli(numbers, "pipeline", "run", "numbers", "--engine", "inline", "-p", "factor=5")
    assert again.code == 0
    shown = _ANSI.sub("", screen.getvalue())
    final = shown[shown.rindex("load") :]
    assert re.search(r"load\s+cached", final) and re.search(r"scale\s+completed", final)


def test_list_names_a_pipeline_that_cannot_be_built_and_show_exits_2(
    cli: Any, numbers: Path
) -> None:
    broken = NUMBERS + textwrap.dedent(
        """

        @pipeline
        def looped(factor: float = 1.0) -> None:
            scale(load(Path("numbers.txt")), factor="many")
        """
    )
    cli_write(numbers, broken)
    listed = cli(numbers, "pipeline", "list", "--json")
    assert listed.code == 0, listed.err
    rows = {r["name"]: r for r in listed.json()}
    assert rows["numbers"]["error"] is None and rows["looped"]["steps"] is None
    assert "'factor'" in rows["looped"]["error"] and "float" in rows["looped"]["error"]
    assert "invalid" in cli(numbers, "pipeline", "list").out
    shown = cli(numbers, "pipeline", "show", "looped")
    assert shown.code == 2 and "Pipeline 'looped', step 'scale'" in shown.err


@pytest.mark.parametrize("engine", ["inline", "local"])
def test_with_json_what_steps_print_stays_out_of_stdout(
    tmp_path: Path, sqlite_url: str, engine: str
) -> None:
    noisy = NUMBERS.replace(
        "    return min(len(values), limit)",
        "    import sys\n    print('counting', values)\n    print('to stderr', file=sys.stderr)\n"
        "    return min(len(values), limit)",
    )
    root = cli_project(tmp_path, sqlite_url, noisy)
    ran = cli_program(root, "pipeline", "run", "numbers", "--engine", engine, "--json")
    assert ran.code == 0, ran.err
    assert cli_statuses(ran)["count"] == "completed"  # the whole of stdout is the JSON
    assert "counting" not in ran.out + ran.err  # kept in the step's log instead


def test_runs_of_a_misspelt_pipeline_suggest_the_recorded_one(cli: Any, numbers: Path) -> None:
    assert cli(numbers, "pipeline", "run", "numbers", "--engine", "inline").code == 0
    listed = cli(numbers, "pipeline", "runs", "numbrs")
    assert listed.code == 0
    assert "No pipeline runs of 'numbrs'. Did you mean 'numbers'?" in listed.out
    assert cli(numbers, "pipeline", "runs", "numbrs", "--json").json() == []
    assert len(cli(numbers, "pipeline", "runs", "numbers", "--json").json()) == 1
