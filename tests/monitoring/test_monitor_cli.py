"""``modelyard monitor ...`` run in-process as a user runs it, in the project's folder."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from modelyard.cli.app import main
from tests.monitoring.conftest import NAME, Project, write_days

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def here(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(project.root)
    return project


def test_drift_exits_1_when_the_latest_window_drifts(here: Project, cli: Any) -> None:
    write_days(here, [0, 1, 2])
    calm = cli("monitor", "drift", NAME, "--json", "--window", "1d")
    assert calm.code == 0, calm.err
    body = calm.json()
    assert (body["model"], body["version"]) == (NAME, 1)
    assert [(w["rows"], w["alarm"]) for w in body["windows"]] == [(400, False)] * 3
    write_days(here, [3], shifted=[3], seed=8)
    drifting = cli("monitor", "drift", f"{NAME}/1", "--json")  # 1d: the default window
    assert drifting.code == 1, drifting.err
    windows = drifting.json()["windows"]
    assert [w["alarm"] for w in windows] == [False, False, False, True]
    assert windows[-1]["ranked"][0] == "amount"
    assert windows[-1]["start"] == "2024-03-07T00:00:00+00:00"
    text = cli("monitor", "drift", NAME)
    assert text.code == 1
    assert "amount" in text.out and "2024-03-07" in text.out


def test_performance_json_has_the_metrics_of_each_window(here: Project, cli: Any) -> None:
    logged = write_days(here, [0, 1])
    result = cli("monitor", "performance", NAME, "--json")
    assert result.code == 0, result.err
    windows = result.json()["windows"]
    assert len(windows) == 2
    for day, w in enumerate(windows):
        known = np.array([v is not None for v in logged.labels[day]])
        y = [v for v in logged.labels[day] if v is not None]
        assert w["matured"] is True
        assert w["metrics"]["auc"]["value"] == pytest.approx(
            roc_auc_score(y, logged.proba[day][known, 1]), abs=1e-12
        )
    text = cli("monitor", "performance", NAME)
    assert text.code == 0 and "performance" in text.out and "est. auc" in text.out


def test_run_then_alerts_then_report(here: Project, cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "incidents.jsonl"
    script = f"import os; open({str(out)!r}, 'a').write(os.environ['MODELYARD_INCIDENT'] + '\\n')"
    here.configure(
        {
            "alerts": [
                {
                    "name": "drifting",
                    "signal": "prediction_drift",
                    "command": f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}",
                }
            ]
        }
    )
    write_days(here, [0, 1, 2], shifted=[2])
    ran = cli("monitor", "run", NAME)
    assert ran.code == 1, ran.err  # the latest window drifts and an incident opened
    assert "drifting" in ran.out and "opened" in ran.out
    assert len(out.read_text().splitlines()) == 1
    again = cli("monitor", "run", NAME, "--json", "--no-notify")
    assert again.code == 1, again.err
    body = again.json()
    assert len(body["drift"]) == 3 and len(body["performance"]) == 3
    assert [(a["rule"], a["change"]) for a in body["alerts"]] == [("drifting", "updated")]

    incidents = cli("monitor", "alerts", "--json")
    assert incidents.code == 0, incidents.err
    (incident,) = incidents.json()
    assert (incident["model"], incident["rule"], incident["state"]) == (NAME, "drifting", "open")
    assert cli("monitor", "alerts", NAME, "--state", "resolved", "--json").json() == []
    assert "drifting" in cli("monitor", "alerts").out
    bad = cli("monitor", "alerts", "--state", "closed")
    assert bad.code == 2 and "--state" in bad.err and "Traceback" not in bad.err

    html = tmp_path / "report.html"
    report = cli("monitor", "report", NAME, "--out", str(html), "--no-domain")
    assert report.code == 0, report.err
    assert f"Wrote {html}" in report.out.replace("\n", "")
    page = html.read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and NAME in page
    data = cli("monitor", "report", NAME, "--out", str(html), "--no-domain", "--json").json()
    assert data["report"] == str(html) and len(data["windows"]) == 3


def _files(tmp_path: Path, shift: float) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    reference = pd.DataFrame(
        {
            "x": rng.normal(size=2_000),
            "c": rng.choice(["a", "b"], 2_000),
            "p": rng.uniform(size=2_000),
        }
    )
    current = pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, size=800),
            "c": rng.choice(["a", "b"], 800),
            "p": rng.uniform(size=800),
        }
    )
    a, b = tmp_path / "a.parquet", tmp_path / f"b{shift}.csv"
    reference.to_parquet(a)
    current.to_csv(b, index=False)
    return a, b


@pytest.mark.parametrize(("shift", "code"), [(0.0, 0), (1.0, 1)])
def test_drift_between_two_files_needs_no_project(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, shift: float, code: int
) -> None:
    (tmp_path / "nowhere").mkdir()
    monkeypatch.chdir(tmp_path / "nowhere")
    a, b = _files(tmp_path, shift)
    result = cli(
        "monitor",
        "drift",
        "--reference",
        str(a),
        "--current",
        str(b),
        "--prediction",
        "p",
        "--json",
    )
    assert result.code == code, result.err
    body = result.json()
    assert set(body["columns"]) == {"x", "c"} and set(body["outputs"]) == {"p"}
    assert body["drifted_columns"] == (["x"] if shift else [])
    assert body["prediction_drift"] is False
    text = cli("monitor", "drift", "--reference", str(a), "--current", str(b))
    assert text.code == code
    assert ("1 of 3 columns drifted: x" if shift else "0 of 3 columns drifted") in text.out


def test_drift_files_refuse_a_missing_prediction_column(tmp_path: Path, cli: Any) -> None:
    a, b = _files(tmp_path, 0.0)
    result = cli(
        "monitor", "drift", "--reference", str(a), "--current", str(b), "--prediction", "nope"
    )
    assert result.code == 2 and "'nope'" in result.err and "--reference" in result.err


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["monitor", "drift", "nope"], 2, "nope"),  # 1 would read as drift
        (["monitor", "performance", "nope/3"], 2, "nope"),
        (["monitor", "drift", NAME, "--window", "1y"], 2, "window"),
        (["monitor", "run", NAME, "--window", "0d"], 2, "window"),
        (["monitor", "drift", NAME, "--since", "2024-03-04T00:00"], 2, "--since"),
        (["monitor", "performance", NAME, "--until", "yesterday"], 2, "--until"),
        (
            ["monitor", "drift", "--reference", "missing.parquet", "--current", "b.csv"],
            2,
            "--reference",
        ),
        (
            ["monitor", "drift", NAME, "--reference", "a.parquet", "--current", "b.csv"],
            2,
            "--reference",
        ),
        (["monitor", "drift", "--reference", "a.parquet"], 2, "--reference"),
        (["monitor", "drift"], 2, "REF"),
    ],
)
def test_bad_inputs_are_clear_errors(
    here: Project, cli: Any, args: list[str], code: int, names: str
) -> None:
    write_days(here, [0], rows=20)
    result = cli(*args)
    assert result.code == code, (result.out, result.err)
    assert result.err.strip().startswith("error:"), result.err
    assert names in result.err
    assert "Traceback" not in result.err + result.out


def test_a_missing_current_file_names_its_option(here: Project, cli: Any, tmp_path: Path) -> None:
    a, _ = _files(tmp_path, 0.0)
    result = cli("monitor", "drift", "--reference", str(a), "--current", str(tmp_path / "none.csv"))
    assert result.code == 2 and "--current" in result.err and "none.csv" in result.err


def test_drift_files_use_the_projects_drift_settings_and_report_a_broken_one(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a project the defaults apply; inside one its monitoring.drift overrides do,
    and a bad override is an error, not silently ignored."""
    a, b = _files(tmp_path, 0.5)
    monkeypatch.chdir(tmp_path)
    assert cli("monitor", "drift", "--reference", str(a), "--current", str(b)).code == 1
    (tmp_path / "modelyard.yaml").write_text("monitoring:\n  drift:\n    min_wasserstein: 50\n")
    loose = cli("monitor", "drift", "--reference", str(a), "--current", str(b), "--json")
    assert loose.code == 0, loose.err  # a 0.5 sd shift is below an effect floor of 50
    assert loose.json()["columns"]["x"]["threshold"] == 50
    (tmp_path / "modelyard.yaml").write_text("monitoring:\n  drift:\n    alpha: lots\n")
    broken = cli("monitor", "drift", "--reference", str(a), "--current", str(b))
    assert broken.code != 0 and "monitoring.drift" in broken.err


# -- files: read the same way, every row, and a missing feature fails ---------------------


def _drift_files(cli: Any, reference: Path, current: Path, *more: str) -> Result:
    return cli("monitor", "drift", "--reference", str(reference), "--current", str(current), *more)


def test_a_bad_cell_in_the_reference_csv_hides_no_drift(tmp_path: Path, cli: Any) -> None:
    """Issue 11: one 'oops' made x a category and the 0.5 sd shift was missed (exit 0)."""
    a, b = _files(tmp_path, 0.5)
    reference = pd.read_parquet(a).astype({"x": object})
    reference.loc[7, "x"] = "oops"
    reference.to_csv(tmp_path / "ref.csv", index=False)
    for first, second in ((tmp_path / "ref.csv", b), (b, tmp_path / "ref.csv")):
        result = _drift_files(cli, first, second, "--json")
        assert result.code == 1, result.err
        body = result.json()
        assert body["drifted_columns"] == ["x"] and body["columns"]["x"]["kind"] == "numeric"
        assert any("1 of 2,000 cells are not numbers (e.g. 'oops')" in f for f in body["findings"])


def test_a_truncating_quote_is_exit_2_naming_the_line(tmp_path: Path, cli: Any) -> None:
    """Issue 11: the file was read as 2,284 of 5,000 rows without a word."""
    rng = np.random.default_rng(4)
    text = pd.DataFrame({"x": rng.normal(size=5_000)}).to_csv(index=False).splitlines()
    text[2285] = '"' + text[2285]
    (tmp_path / "cut.csv").write_text("\n".join(text) + "\n")
    pd.DataFrame({"x": rng.normal(size=100)}).to_csv(tmp_path / "ok.csv", index=False)
    result = _drift_files(cli, tmp_path / "cut.csv", tmp_path / "ok.csv")
    assert result.code == 2, (result.out, result.err)
    assert "line 2286" in result.err and "--reference" in result.err
    assert "Traceback" not in result.err


def test_comparing_nothing_is_no_pass(tmp_path: Path, cli: Any) -> None:
    """Issue 11: a current file sharing no column exited 0 ("0 of 0 columns drifted")."""
    a, b = _files(tmp_path, 0.0)
    pd.DataFrame({"y": [1.0, 2.0]}).to_csv(tmp_path / "other.csv", index=False)
    nothing = _drift_files(cli, a, tmp_path / "other.csv")
    assert nothing.code == 2 and "--current" in nothing.err and "'y'" not in nothing.out
    pd.read_csv(b).drop(columns=["c"]).to_csv(tmp_path / "less.csv", index=False)
    less = _drift_files(cli, a, tmp_path / "less.csv", "--json")
    assert less.code == 1, less.err
    body = less.json()
    assert body["missing_columns"] == ["c"] and body["drifted_columns"] == []
    assert body["alarm"] is True
    text = _drift_files(cli, a, tmp_path / "less.csv")
    assert text.code == 1 and "missing from --current: c" in text.out


# -- exit codes: 0 passed, 1 failed, 2 could not check; never a traceback ------------------


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "fake.parquet").write_text("not parquet at all")
    (folder / "ragged.csv").write_text("x,y\n1,2\n3\n")
    (folder / "ok.csv").write_text("x,y\n1,2\n3,4\n")
    (folder / "a.file").write_text("x")
    return folder


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["drift", "--reference", "{j}/fake.parquet", "--current", "{j}/ok.csv"], "fake.parquet"),
        (["drift", "--reference", "{j}/ok.csv", "--current", "{j}/ragged.csv"], "line 3"),
        (["drift", "--reference", "{j}/ok.csv", "--current", "{j}"], "folder"),
        (["drift", "--reference", "{j}/ok.csv", "--current", "{j}/none.csv"], "none.csv"),
        (["drift", "nope"], "nope"),
        (["drift", NAME, "--window", "-1d"], "--window"),
        (["drift", NAME, "--log-dir", "{j}/a.file"], "a.file"),
        (["performance", "nope"], "nope"),
        (["performance", NAME, "--window", "fortnight"], "--window"),
        (["run", "nope"], "nope"),
        (["run", NAME, "--since", "soon"], "--since"),
        (["skew", NAME], "feature lookups"),  # no entity requests: nothing to check
        (["skew", NAME, "--sample", "-1"], "--sample"),
        (["alerts", "nope"], "nope"),
        (["alerts", "--state", "shut"], "--state"),
        (["report", "nope"], "nope"),
        (["report", NAME, "--out", "{j}/missing/report.html"], "--out"),
        (["report", NAME, "--out", "{j}"], "--out"),
        (["report", NAME, "--window", "0h"], "--window"),
    ],
)
def test_every_command_exits_2_when_it_cannot_check(
    here: Project, cli: Any, junk: Path, args: list[str], names: str
) -> None:
    write_days(here, [0], rows=20)
    result = cli("monitor", *[a.replace("{j}", str(junk)) for a in args])
    assert result.code == 2, (result.out, result.err)
    assert result.err.strip().startswith("error:"), result.err
    assert names.replace("{j}", str(junk)) in result.err
    assert "Traceback" not in result.err + result.out


def test_outside_a_project_the_log_commands_exit_2(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELYARD_PROJECT", raising=False)
    for command in ("drift", "performance", "run", "skew", "alerts", "report"):
        result = cli("monitor", command, *([] if command == "alerts" else [NAME]))
        assert result.code == 2, (command, result.err)
        assert "Traceback" not in result.err


def test_a_broken_project_file_is_exit_2(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _files(tmp_path, 0.0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "modelyard.yaml").write_text("monitoring:\n  drift:\n    alpha: lots\n")
    result = _drift_files(cli, a, b)
    assert result.code == 2 and "monitoring.drift" in result.err


def test_verbose_shows_the_traceback_of_a_failure(here: Project, cli: Any) -> None:
    write_days(here, [0], rows=20)
    result = cli("--verbose", "monitor", "drift", "nope")
    assert result.code == 2 and "Traceback" in result.err


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(alphabet='ab1.5,"\n\r\t -x', max_size=300),
    ),
    suffix=st.sampled_from([".csv", ".tsv", ".parquet", ".pq"]),
    side=st.sampled_from(["--reference", "--current"]),
)
def test_any_file_gives_a_verdict_or_exit_2(
    tmp_path: Path, cli: Any, content: bytes | str, suffix: str, side: str
) -> None:
    """Whatever bytes a file holds: exit 0 or 1 with a verdict, or 2 with one error line
    naming the option; never a traceback, never another code."""
    (tmp_path / "good.csv").write_text("a,b\n1.5,x\n2.5,y\n1.0,x\n")
    odd = tmp_path / f"odd{suffix}"
    if isinstance(content, bytes):
        odd.write_bytes(content)
    else:
        odd.write_text(content, newline="")
    files = {"--reference": tmp_path / "good.csv", "--current": tmp_path / "good.csv", side: odd}
    result = cli("monitor", "drift", *(str(v) for pair in files.items() for v in pair))
    assert result.code in (0, 1, 2), (result.code, result.err)
    assert "Traceback" not in result.out + result.err
    if result.code == 2:
        lines = result.err.strip().splitlines()
        assert lines[0].startswith("error:") and len(lines) == 1, result.err
    else:
        assert "columns drifted" in result.out
