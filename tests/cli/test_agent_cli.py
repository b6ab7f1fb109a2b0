"""``modelyard agent``, ``agent status|show``, ``models approve``, and what ``models history``
and ``lineage`` show of the agent, run as a user runs them.

A real project (SQLite): a champion that serves badly, a prediction log with feedback
written through the real writer, an AUC alert whose action retrains with a real
pipeline, a canary policy. The CLI runs in-process (``main``) except where the process
itself is the subject: ``python -m modelyard agent --once`` killed by SIGKILL mid-pass
(``MODELYARD_AGENT_CRASH_AT``) then rerun, and the long-running agent stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert, select

from modelyard.cli.agent_events import event_summary
from modelyard.cli.app import main
from modelyard.config import init_project, load_settings
from modelyard.registry import ModelRegistry
from modelyard.store.database import open_database
from modelyard.store.predlog import FeedbackRecord, PredictionLog, PredictionRecord
from modelyard.store.schema import agent_leases

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NAME = "churn"
NOW = "2026-03-01T00:00Z"
NOW_DT = datetime(2026, 3, 1, tzinfo=UTC)
#: the events of an action that stops before the canary (approve: manual), in order
TO_APPROVAL = ["created", "retrain_started", "retrain_completed", "candidate", "gates"]

PIPELINES = """
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import modelyard
from modelyard import pipeline, step


@step(packages=("scikit-learn",))
def fit(c: float, fail: bool) -> dict[str, float]:
    if fail:
        raise RuntimeError("the training data is gone")
    frame = pd.read_csv(Path(__file__).parent / "train.csv")
    model = LogisticRegression(C=c).fit(frame[["x"]], frame.y)
    modelyard.log_model(model, name="churn", training_frame=frame[["x"]])
    return {"coef": float(model.coef_[0][0])}


@pipeline
def retrain(
    c: float = 1.0, fail: bool = False, window_start: str | None = None,
    window_end: str | None = None,
) -> None:
    fit(c, fail)
"""


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, _ANSI.sub("", out), _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    found = pd.DataFrame({"x": rng.normal(size=rows)})
    p = 1 / (1 + np.exp(-2.0 * found["x"]))
    found["y"] = (rng.uniform(size=rows) < p).astype(np.int64)
    return found


def write_yaml(root: Path, *, approve: str = "manual", fail: bool = False) -> None:
    (root / "modelyard.yaml").write_text(
        textwrap.dedent(
            f"""\
            pipelines:
              executor: inline
            monitoring:
              window: 1d
              min_label_coverage: 0.5
              alerts:
                - name: auc-low
                  signal: auc
                  below: 0.9
                  action:
                    retrain:
                      {{pipeline: retrain, params: {{fail: {str(fail).lower()}}}, window: 30d}}
            serving:
              traffic:
                {NAME}: {{canary: canary, canary_weight: 0.3}}
            agent:
              models:
                {NAME}: {{approve: {approve}, gate_window: 7d, cooldown: 1d}}
            """
        )
    )


def build_project(root: Path, *, approve: str = "manual", fail: bool = False) -> Path:
    """NAME/1 in production (it learned the labels upside down: AUC far below the
    alert's 0.9), two days of its traffic with feedback, the retrain pipeline."""
    init_project(root)
    write_yaml(root, approve=approve, fail=fail)
    (root / "pipelines.py").write_text(PIPELINES)
    frame(300, 1).to_csv(root / "train.csv", index=False)
    settings = load_settings(root, environ={})
    train = frame(300, 0)
    model = LogisticRegression().fit(train[["x"]], 1 - train.y)
    with ModelRegistry(settings) as registry:
        registry.log_model(model, name=NAME, training_frame=train[["x"]])
        registry.set_alias(f"{NAME}/1", "production")
    served = frame(400, 2)
    proba = model.predict_proba(served[["x"]])
    with PredictionLog(settings.prediction_log_dir) as log:
        for first in range(0, len(served), 10):
            rows = slice(first, first + 10)
            us = int((NOW_DT - timedelta(days=2, minutes=-first)).timestamp() * 1_000_000)
            log.append_blocking(
                PredictionRecord(
                    request_id=f"r{first}",
                    time_us=us,
                    model=NAME,
                    version=1,
                    rows=10,
                    inputs={"x": [float(v) for v in served.x[rows]]},
                    outputs={
                        "label": [int(v > 0.5) for v in proba[rows, 1]],
                        "proba_0": [float(v) for v in proba[rows, 0]],
                        "proba_1": [float(v) for v in proba[rows, 1]],
                    },
                    latency_us=100,
                )
            )
            log.append_feedback_blocking(
                FeedbackRecord(
                    request_id=f"r{first}",
                    label=[int(v) for v in served.y[rows]],
                    time_us=us + 1000,
                )
            )
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, built once (its stores are inside it: a copy is a fresh project)."""
    return build_project(tmp_path_factory.mktemp("agent-cli") / "template")


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(template, root)
    return root


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MODELYARD_ACTOR", "cli-user")


@pytest.fixture
def cli(clean_env: None, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(root: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--project", str(root), *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def aliases(root: Path) -> dict[str, int]:
    with ModelRegistry(load_settings(root, environ={})) as registry:
        [model] = [m for m in registry.list_models() if m.name == NAME]
        return dict(model.aliases)


def active_versions(root: Path) -> list[int]:
    with ModelRegistry(load_settings(root, environ={})) as registry:
        return [v.version for v in registry.list_versions(NAME) if v.status == "active"]


def python_m(root: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    # PYTHONUNBUFFERED off, as a service manager runs it: the agent flushes each pass
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELYARD_") and k != "PYTHONUNBUFFERED"
    }
    if crash_at is not None:
        env["MODELYARD_AGENT_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard", "--project", str(root), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- bad input, an empty project -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["agent", "--once", "--interval", "5x"], "--interval"),
        (["agent", "--once", "--as-of", "2013-01-01"], "time zone"),
        (["agent", "--once", "status"], "--once"),
        (["agent", "show", "abc"], "No agent action"),
        (["agent", "show", "0123456789"], "agent status"),
        (["models", "approve", "nope/1"], "nope"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cli: Any, tmp_path: Path, args: list[str], words: str
) -> None:
    init_project(tmp_path)
    result = cli(tmp_path, *args)
    assert result.code == 2, (result.out, result.err)
    assert words in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_bad_agent_section_exits_2(cli: Any, tmp_path: Path) -> None:
    init_project(tmp_path)
    (tmp_path / "modelyard.yaml").write_text("agent:\n  models:\n    m: {approve: maybe}\n")
    result = cli(tmp_path, "agent", "--once")
    assert result.code == 2 and "approve" in result.err and "Traceback" not in result.err


def test_a_pass_on_an_empty_project_is_done_exit_0(cli: Any, tmp_path: Path) -> None:
    init_project(tmp_path)
    result = cli(tmp_path, "agent", "--once", "--as-of", NOW, "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["now_us"] == int(NOW_DT.timestamp() * 1_000_000)
    assert (report["models"], report["actions"], report["failed"]) == ([], [], False)
    assert cli(tmp_path, "agent", "status", "--json").json() == []
    assert "No agent actions" in cli(tmp_path, "agent", "status").out


def test_a_pass_while_another_agent_holds_the_lease_is_skipped_exit_0(
    cli: Any, tmp_path: Path
) -> None:
    init_project(tmp_path)
    holder = "elsewhere.example:4242:feedc0ffee00"
    db = open_database(load_settings(tmp_path, environ={}).db_url)
    try:
        far = int(time.time() * 1e6) + 3_600_000_000
        with db.write() as conn:
            conn.execute(
                insert(agent_leases).values(
                    name="agent", holder=holder, acquired_us=0, expires_us=far
                )
            )
        shown = cli(tmp_path, "agent", "--once")
        assert shown.code == 0 and holder in shown.out and "skipped" in shown.out
        quiet = cli(tmp_path, "agent", "--once", "--quiet")
        assert quiet.code == 0 and holder in quiet.err and quiet.out == ""
        report = cli(tmp_path, "agent", "--once", "--json").json()
        assert report["skipped_lease"] is True and holder in report["events"][0]
        with db.read() as conn:  # still the other agent's
            assert conn.execute(select(agent_leases.c.holder)).scalars().all() == [holder]
    finally:
        db.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def test_an_event_detail_cannot_break_the_line_or_drive_the_terminal() -> None:
    line = event_summary({"a\nb": "x\x1b[2J", "metrics": {"m\n": {"decision": "p\nq"}}})
    assert line == "a b=x\\x1b[2J; m p q"


@given(st.dictionaries(st.text(), _JSON, max_size=6))
def test_any_event_detail_is_summarised_on_one_line(detail: dict[str, Any]) -> None:
    """Generated: whatever JSON an event's detail holds (a look's metrics malformed
    included), its summary is one line and never raises."""
    line = event_summary(detail)
    assert isinstance(line, str) and line.isprintable()


# -- the loop as a user drives it ------------------------------------------------------------


def test_manual_approval_status_show_history_and_lineage(cli: Any, project: Path) -> None:
    root = project
    ran = cli(root, "agent", "--once", "--as-of", NOW, "--json")
    assert ran.code == 0, ran.out
    report = ran.json()
    [action] = report["actions"]
    assert (action["state"], action["candidate_version"]) == ("awaiting_approval", 2)
    assert report["incidents_opened"] and not report["failed"]
    assert aliases(root) == {"production": 1}  # nothing moved before the approval

    status = cli(root, "agent", "status", NAME, "--json").json()
    assert [(s["id"], s["state"], s["gates"], s["looks"]) for s in status] == [
        (action["id"], "awaiting_approval", "passed", 0)
    ]
    text = cli(root, "agent", "status")
    assert action["id"][:12] in text.out and "1 in flight" in text.out

    shown = cli(root, "agent", "show", action["id"][:8], "--json")
    assert shown.code == 0, shown.err
    assert [e["kind"] for e in shown.json()["events"]] == [*TO_APPROVAL, "awaiting_approval"]
    assert "awaiting_approval" in cli(root, "agent", "show", action["id"]).out

    approved = cli(root, "models", "approve", f"{NAME}/2", "--as-of", NOW, "-m", "looks right")
    assert approved.code == 0, approved.err
    assert "is canary" in approved.out
    assert aliases(root) == {"production": 1, "canary": 2}
    again = cli(root, "models", "approve", f"{NAME}/2", "--json")
    assert again.code == 2 and "no action awaiting approval" in again.err

    rows = cli(root, "models", "history", NAME, "--json").json()
    agent = [r for r in rows if r["action"].startswith("agent ")]
    assert [r["event"] for r in agent] == [
        *TO_APPROVAL,
        "awaiting_approval",
        "approved",
        "canary_started",
    ]
    assert all(r["action_id"] == action["id"] for r in agent)
    assert "incident" in agent[0]["reason"] and "auc-low" in agent[0]["reason"]
    assert agent[-2]["detail"]["who"] == "cli-user"
    kinds = [r["action"] for r in rows]
    # beside the alias moves and the gate evaluation, in the order they happened
    assert kinds.index("gate") < kinds.index("agent awaiting_approval")
    assert kinds.index("agent approved") < kinds.index("alias", kinds.index("agent approved"))
    table = cli(root, "models", "history", NAME)
    assert table.code == 0 and "agent created" in table.out

    tree = cli(root, "lineage", f"{NAME}/2", "--json").json()["root"]
    [node] = [c for c in tree["children"] if c["kind"] == "action"]
    assert node["id"] == action["id"] and node["details"]["state"] == "canary"
    [incident] = node["children"]
    assert incident["kind"] == "incident" and incident["details"]["rule"] == "auc-low"
    assert "incident" in cli(root, "lineage", f"{NAME}/2").out


def test_a_failed_retrain_exits_1_and_leaves_production(cli: Any, project: Path) -> None:
    root = project
    write_yaml(root, fail=True)
    ran = cli(root, "agent", "--once", "--as-of", NOW)
    assert ran.code == 1, (ran.out, ran.err)
    assert "Traceback" not in ran.out + ran.err
    [action] = cli(root, "agent", "status", "--json").json()
    assert action["state"] == "failed" and action["candidate_version"] is None
    assert aliases(root) == {"production": 1} and sorted(active_versions(root)) == [1]
    # the next pass has nothing new to do (one action per incident opening): exit 0
    assert cli(root, "agent", "--once", "--as-of", NOW, "--quiet").code == 0


# -- the process itself ----------------------------------------------------------------------


def test_an_agent_killed_mid_pass_is_rerun_to_the_same_end(cli: Any, project: Path) -> None:
    """SIGKILL after the pipeline's step ended (its version registered, the action still
    ``training``); the rerun resumes from the step cache: one action, one candidate, each
    event once, as a pass that was never killed."""
    root = project
    killed = python_m(root, "agent", "--once", "--as-of", NOW, crash_at="retrain-mid")
    out, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, (out, err)
    [during] = cli(root, "agent", "status", "--json").json()
    assert during["state"] == "training"

    rerun = python_m(root, "agent", "--once", "--as-of", NOW, "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    [action] = json.loads(out)["actions"]
    assert action["id"] == during["id"] and action["state"] == "awaiting_approval"
    assert action["candidate_version"] == 2 and sorted(active_versions(root)) == [1, 2]
    shown = cli(root, "agent", "show", action["id"], "--json").json()
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds == [*TO_APPROVAL, "awaiting_approval"]
    assert aliases(root) == {"production": 1}


def test_sigterm_stops_the_running_agent_and_releases_the_lease(
    clean_env: None, tmp_path: Path
) -> None:
    """``modelyard agent`` without --once: SIGTERM while it waits for the next pass stops
    it, exit 0, the lease released, no traceback."""
    init_project(tmp_path)
    with python_m(tmp_path, "agent", "--interval", "1h", "--json") as agent:
        assert agent.stdout is not None
        first = agent.stdout.readline()  # the first pass's report: it waits for the next
        assert first.startswith("{"), agent.stderr.read() if agent.stderr else ""
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        assert agent.stderr is not None
        rest, err = agent.stdout.read(), agent.stderr.read()
        assert agent.returncode == 0, err
        assert "SIGTERM: stopping" in err and "Traceback" not in err
        assert json.loads(first + rest)["skipped_lease"] is False  # one pass, then stopped
    db = open_database(load_settings(tmp_path, environ={}).db_url)
    try:
        with db.read() as conn:
            assert conn.execute(select(agent_leases)).all() == []
    finally:
        db.close()
