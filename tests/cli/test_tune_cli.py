"""``modelyard tune list|show`` through the real CLI entry point (``main``)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from modelyard.cli.app import main
from modelyard.config import Settings
from modelyard.pipelines import studies
from modelyard.pipelines.study_info import MIN_IMPORTANCE_TRIALS
from modelyard.pipelines.trials import trial_run_id
from modelyard.pipelines.tuning import tune
from modelyard.tracking.fluent import get_client, set_client

optuna.logging.set_verbosity(optuna.logging.WARNING)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the storage itself runs on both backends in tests/pipelines."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in [k for k in os.environ if k.startswith("MODELYARD_") and "_TEST_" not in k]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    monkeypatch.chdir(settings.project_dir)
    yield settings.project_dir
    client = get_client(settings.project_dir)
    set_client(None)
    client.close()
    studies.close_study_storages()


def tune_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def tune_quadratic(params: dict[str, Any]) -> float:
    return (params["x"] - 1.0) ** 2 + params["d"]


def test_list_shows_every_study_with_its_counts(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tune_cli(capsys, "tune", "list").code == 0  # no study yet: a hint, exit 0
    big = tune(
        tune_quadratic,
        space={"x": (-2.0, 2.0), "d": (1, 3)},
        n_trials=8,
        seed=0,
        study="big",
        project=project,
    )
    tune(
        lambda p: -p["x"],
        space={"x": (0.0, 1.0)},
        n_trials=2,
        study="up",
        direction="maximize",
        project=project,
    )
    capsys.readouterr()
    listed = tune_cli(capsys, "tune", "list", "--json")
    assert listed.code == 0, listed.err
    rows = {r["name"]: r for r in listed.json()}
    assert set(rows) == {"big", "up"}
    assert rows["big"]["complete"] == 8 and rows["big"]["direction"] == "minimize"
    assert (
        rows["big"]["best_value"] == big.best_value and rows["big"]["best_trial"] == big.best_trial
    )
    assert rows["up"]["direction"] == "maximize" and rows["up"]["pruned"] == 0
    assert rows["big"]["created"] is not None
    table = tune_cli(capsys, "tune", "list")
    assert table.code == 0 and "big" in table.out and "maximize" in table.out


def test_show_gives_trials_best_and_importances(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = tune(
        tune_quadratic,
        space={"x": (-2.0, 2.0), "d": (1, 3)},
        n_trials=10,
        seed=1,
        study="show",
        project=project,
    )
    capsys.readouterr()
    shown = tune_cli(capsys, "tune", "show", "show", "--json")
    assert shown.code == 0, shown.err
    data = shown.json()
    assert data["best"]["number"] == result.best_trial
    assert data["best"]["params"] == result.best_params
    assert data["best"]["run_id"] == result.best_run_id
    oracle = optuna.importance.get_param_importances(result.study)
    assert data["importances"].keys() == oracle.keys()
    assert all(math.isclose(data["importances"][k], v) for k, v in oracle.items())
    assert [t["number"] for t in data["trial_list"]] == list(range(10))
    assert all(
        t["run_id"] == trial_run_id("show", result.study.trials[t["number"]])
        for t in data["trial_list"]
    )
    text = tune_cli(capsys, "tune", "show", "show")
    assert text.code == 0 and "parameter importances" in text.out and "COMPLETE" in text.out


def test_importances_say_why_when_there_are_too_few_trials(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune(
        tune_quadratic,
        space={"x": (-2.0, 2.0), "d": (1, 3)},
        n_trials=MIN_IMPORTANCE_TRIALS - 1,
        study="few",
        project=project,
    )
    capsys.readouterr()
    data = tune_cli(capsys, "tune", "show", "few", "--json").json()
    assert data["importances"] is None
    assert f"at least {MIN_IMPORTANCE_TRIALS} complete trials" in data["importance_note"]
    text = tune_cli(capsys, "tune", "show", "few")
    assert text.code == 0 and "at least" in text.out


def test_html_report_is_offline_and_escapes_names(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = "<b>study</b>"
    tune(
        lambda p: p["<x>"] ** 2,
        space={"<x>": (-1.0, 1.0)},
        n_trials=6,
        seed=2,
        study=name,
        project=project,
    )
    capsys.readouterr()
    page = tmp_path / "out" / "study.html"
    shown = tune_cli(capsys, "tune", "show", name, "--html", str(page), "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["html"] == str(page)
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;study&lt;/b&gt;" in html and "<b>study</b>" not in html
    assert "&lt;x&gt;" in html and "Optimization history" in html
    assert "plotly" in html.lower() and 'src="http' not in html  # embedded, no URL
    assert "best so far" in html


def test_unknown_study_exits_2_with_did_you_mean(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune(
        tune_quadratic,
        space={"x": (-2.0, 2.0), "d": (1, 3)},
        n_trials=1,
        study="churn-hgb",
        project=project,
    )
    capsys.readouterr()
    missing = tune_cli(capsys, "tune", "show", "churn-hbg")
    assert missing.code == 2
    assert "No study named 'churn-hbg'" in missing.err and "Did you mean 'churn-hgb'" in missing.err
    assert "Traceback" not in missing.err
    bad = tune_cli(capsys, "tune", "list", "--storage", "redis")
    assert bad.code == 2 and "storage" in bad.err
