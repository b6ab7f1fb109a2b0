"""Crash safety: the agent killed (SIGKILL) at every checkpoint neither loses nor repeats.

The scenario (the tiny project of conftest.py): pass at day 7 (the AUC incident opens,
the retrain runs, the candidate passes its gates and becomes the canary), a day of
traffic served as routed, pass at day 8 (the canary's look decides: promote, then the
promotion): the action is then terminal. An uncrashed run of
the scenario is the reference. For each checkpoint of ``agent.faults.CHECKPOINTS``, a
copy of the project as it was before the pass that reaches the checkpoint runs that pass
in a forked child with ``MODELYARD_AGENT_CRASH_AT`` set, which SIGKILLs itself there; a
restarted agent then runs the same pass and the rest of the scenario. The end state must
be the reference's: one action with the same states, decision and versions, each event
once and none missing, one gate evaluation linked, one non-archived candidate, the same
aliases, each alias move audited once, the same incidents.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelyard.agent.faults import CHECKPOINTS, CRASH_ENV
from modelyard.agent.loop import run_pass
from modelyard.agent.records import ActionStore
from modelyard.store.database import open_database
from modelyard.store.monitor_results import MonitorResults
from tests.agent.conftest import MODEL, CTProject, at, copy_project

#: the scenario: ("pass", day) runs a pass at the start of that day, ("serve", day) logs it
SCRIPT: list[tuple[str, int]] = [("pass", 7), ("serve", 7), ("pass", 8)]


def run_step(project: CTProject, step: tuple[str, int]) -> None:
    kind, day = step
    if kind == "pass":
        run_pass(project.settings, now=at(day))
    else:
        project.serve(day, "b")


def state(project: CTProject) -> dict[str, Any]:
    """What must be equal after a crash and the passes after it (ids and clocks left out)."""
    db = open_database(project.settings.db_url)
    try:
        store = ActionStore(db)
        actions = store.list(MODEL, limit=1000)
        with project.registry() as registry:
            versions = registry.list_versions(MODEL)
            evaluations = registry.evaluations(MODEL)
            history = registry.history(MODEL)
        events = {a.id: [(e.kind, e.key) for e in store.events(a.id)] for a in actions}
        incidents = MonitorResults(db).incidents(MODEL)
    finally:
        db.close()
    return {
        "actions": [
            (
                a.state,
                a.decision,
                a.champion_version,
                a.candidate_version,
                a.rule,
                a.pipeline,
                a.window_start_us,
                a.window_end_us,
                a.canary_started_us,
                a.reason,
                a.params,
                a.gate_evaluation_id in {e.id for e in evaluations},
            )
            for a in actions
        ],
        # every event once (the table's constraint), none lost; a killed retrain's orphan
        # (archived) is the one event a crash may add
        "events": sorted(
            Counter(k for ks in events.values() for k in ks if k[0] != "orphan_archived").items()
        ),
        "active_versions": [v.version for v in versions if v.status == "active"],
        "evaluations": len(evaluations),
        "aliases": project.aliases(),
        "alias_moves": sorted(
            Counter(
                (h.action, h.alias, h.version_from, h.version_to) for h in history if h.alias
            ).items()
        ),
        "incidents": sorted((i.rule, i.cause.split(":")[0], i.state, i.version) for i in incidents),
    }


@dataclass
class Reference:
    """The uncrashed run: the project before each step, the state after each."""

    project: CTProject
    before: list[Path]
    after: list[dict[str, Any]]
    reached: dict[str, int]  # checkpoint -> index of the pass that first reaches it

    @property
    def end(self) -> dict[str, Any]:
        return self.after[-1]


@pytest.fixture(scope="module")
def reference(_ct_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    root = tmp_path_factory.mktemp("crash-reference")
    project = copy_project(_ct_base, root / "run")
    before: list[Path] = []
    after: list[dict[str, Any]] = []
    for i, step in enumerate(SCRIPT):
        snapshot = root / f"before-{i}"
        shutil.copytree(project.root, snapshot)
        before.append(snapshot)
        run_step(project, step)
        after.append(state(project))
    # pass 1 (index 0) reaches every checkpoint up to the canary; pass 2 (index 2) the rest
    first = CHECKPOINTS.index("look-computed")
    reached = {name: (0 if i < first else 2) for i, name in enumerate(CHECKPOINTS)}
    return Reference(project, before, after, reached)


def test_the_reference_run_is_promoted(reference: Reference) -> None:
    """The uncrashed scenario is the full loop: incident -> retrain -> gates -> canary ->
    promoted, each step recorded and linked, production moved by the agent once."""
    [action] = reference.end["actions"]
    assert action[:4] == ("promoted", "promote", 1, 2)
    assert reference.end["aliases"] == {"production": 2}
    assert reference.end["evaluations"] == 1 and action[-1] is True
    events = dict(reference.end["events"])
    assert all(n == 1 for n in events.values())
    kinds = [k for k, _ in events]
    assert {"created", "retrain_started", "retrain_completed", "candidate", "gates",
            "canary_started", "look", "decision", "promoted"} == set(kinds)  # fmt: skip
    # the canary was set, production promoted and the canary removed, each once, by the agent
    with reference.project.registry() as registry:
        moves = [h for h in registry.history(MODEL) if h.alias and h.version_to != 1]
    assert [(h.action, h.alias, h.version_from, h.version_to) for h in moves] == [
        ("alias", "canary", None, 2),
        ("promote", "production", 1, 2),
        ("unalias", "canary", 2, None),
    ]
    assert all("agent: action" in (h.reason or "") for h in moves), moves
    # the incident that caused it is open on v1 and linked from the action
    db = open_database(reference.project.settings.db_url)
    try:
        [row] = ActionStore(db).list(MODEL)
        [incident] = MonitorResults(db).incidents(MODEL, 1, state="open")
    finally:
        db.close()
    assert (row.incident_id, row.rule) == (incident.id, "auc-low")


def killed_at(project: CTProject, name: str, step: Callable[[], None]) -> int:
    """Run ``step`` in a forked child that dies at checkpoint ``name``; its signal."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.environ[CRASH_ENV] = name
            step()
        except BaseException:  # the checkpoint was never reached: the parent fails
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_killed_at_each_checkpoint_the_agent_ends_where_it_would_have(
    name: str, reference: Reference, tmp_path: Path
) -> None:
    index = reference.reached[name]
    project = copy_project(reference.before[index], tmp_path / "run")
    signal_number = killed_at(project, name, lambda: run_step(project, SCRIPT[index]))
    assert signal_number == signal.SIGKILL, f"the child was not killed at {name}"
    assert os.environ.get(CRASH_ENV) is None
    # the agent restarts: the same pass again (same clock), then the rest of the scenario;
    # the restarted pass already ends where the uncrashed one did
    run_step(project, SCRIPT[index])
    assert state(project) == reference.after[index]
    for step in SCRIPT[index + 1 :]:
        run_step(project, step)
    assert state(project) == reference.end
