"""``modelyard traffic show|set|clear|history`` run as a user runs them, in-process.

A real project (SQLite metadata store) with two registered versions holding
``production`` and ``canary``; every change is read back through the store's own API
(``TrafficPolicies``), which is what every serving worker polls.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.cli.app import main
from modelyard.config import TrafficSettings, init_project, load_settings
from modelyard.registry import ModelRegistry
from modelyard.registry.traffic import TrafficPolicies

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
NAME = "churn"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, _ANSI.sub("", out), _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    init_project(root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MODELYARD_ACTOR", "ops")
    registry = ModelRegistry(load_settings(root, environ={}))
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"tenure": rng.normal(size=50), "spend": rng.normal(size=50)})
    labels = (frame["tenure"] > 0).astype(int).to_numpy()
    for alias in ("production", "canary"):
        logged = registry.log_model(
            LogisticRegression().fit(frame, labels), name=NAME, training_frame=frame
        )
        registry.set_alias(f"{NAME}/{logged.version}", alias)
    registry.close()
    return root


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _stored(project: Path) -> tuple[int, TrafficSettings | None]:
    registry = ModelRegistry(load_settings(project, environ={}))
    try:
        stored = TrafficPolicies(registry).get_policy(NAME)
        return (0, None) if stored is None else (stored.version, stored.policy)
    finally:
        registry.close()


def test_set_patches_the_current_policy_and_each_change_is_audited(cli: Any, project: Path) -> None:
    shown = cli("traffic", "show", NAME, "--json")
    assert shown.code == 0 and shown.json()["source"] == "default"
    first = cli("traffic", "set", NAME, "--canary", "canary", "--weight", "0.1",
                "--sticky-key", "user", "--reason", "try v2", "--json")  # fmt: skip
    assert first.code == 0, first.err
    assert first.json()["version"] == 1
    assert _stored(project) == (
        1,
        TrafficSettings(canary="canary", canary_weight=0.1, sticky_key="user"),
    )
    # only the weight changes: the canary alias and the sticky key stay
    second = cli("traffic", "set", NAME, "--weight", "0.5")
    assert second.code == 0, second.err
    assert "50% @canary" in second.out and "version 2" in second.out
    assert _stored(project) == (
        2,
        TrafficSettings(canary="canary", canary_weight=0.5, sticky_key="user"),
    )
    cleared = cli("traffic", "clear", NAME, "--reason", "rolled back", "--json")
    assert cleared.code == 0 and cleared.json()["policy"]["canary"] is None
    assert _stored(project) == (3, TrafficSettings(sticky_key="user"))
    history = cli("traffic", "history", NAME, "--json").json()
    assert [h["version"] for h in history] == [1, 2, 3]
    assert [h["reason"] for h in history] == ["try v2", None, "rolled back"]
    assert {h["actor"] for h in history} == {"ops"}
    assert history[1]["policy_from"]["canary_weight"] == 0.1
    table = cli("traffic", "show")
    assert table.code == 0 and NAME in table.out and "production" in table.out
    assert cli("traffic", "history", NAME).code == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("set", "nosuch", "--weight", "0.1", "--canary", "canary"), "nosuch"),
        (("set", NAME, "--canary", "staging", "--weight", "0.1"), "canary"),
        (("set", NAME, "--canary", "canary", "--weight", "1.5"), "--weight"),
        (("set", NAME, "--weight", "0.2"), "canary"),  # a weight with no canary alias
        (("set", NAME), "traffic set"),
        (("set", NAME, "--no-canary", "--canary", "canary"), "--no-canary"),
        (("set", NAME, "--shadow", "canary", "--expect-version", "4"), "version 0"),
        (("show", "nosuch"), "nosuch"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    cli: Any, project: Path, args: tuple[str, ...], field: str
) -> None:
    result = cli("traffic", *args)
    assert result.code == 2, result.out
    assert field in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert _stored(project) == (0, None)


def test_a_stale_expected_version_is_refused(cli: Any, project: Path) -> None:
    assert cli("traffic", "set", NAME, "--shadow", "canary", "--expect-version", "0").code == 0
    stale = cli("traffic", "set", NAME, "--no-shadow", "--expect-version", "0")
    assert stale.code == 2 and "version 1" in stale.err
    assert _stored(project) == (1, TrafficSettings(shadow="canary"))
    assert cli("traffic", "set", NAME, "--no-shadow", "--expect-version", "1").code == 0
    assert _stored(project) == (2, TrafficSettings())
