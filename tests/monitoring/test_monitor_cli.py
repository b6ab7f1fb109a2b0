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
    assert ran.code == 0, ran.err
    assert "drifting" in ran.out and "opened" in ran.out
    assert len(out.read_text().splitlines()) == 1
    again = cli("monitor", "run", NAME, "--json", "--no-notify")
    assert again.code == 0, again.err
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
        (["monitor", "drift", "nope"], 1, "nope"),
        (["monitor", "performance", "nope/3"], 1, "nope"),
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
