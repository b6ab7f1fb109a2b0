"""Each part of a step's cache key, changed alone, reruns exactly the steps it should.

A five-step pipeline with two branches (load -> left, right -> merge -> report) is
written into a project folder as real files (the pipeline module and a helper module it
imports), run once, then changed one part at a time. After each change the test asserts
the exact set of steps that ran again, that every other step was answered from the
cache, and that the changed step's recorded key parts differ exactly in that part.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelyard.config import Settings
from modelyard.pipelines import PipelineRun, run_pipeline
from modelyard.pipelines import cache as cache_module
from modelyard.pipelines.cache import changed_parts
from modelyard.tracking.client import TrackingClient

STEPS = ("load", "left", "right", "merge", "report")

_HELPER = """
def scale(values):
    return [FACTOR * v for v in values]

FACTOR = 2
"""

_PIPELINE = """
from __future__ import annotations
from pathlib import Path
from modelyard.pipelines import pipeline, step
import {helper} as helpers

SALT = {{"salt": "1"}}


def _fingerprint(params):
    return dict(SALT)


@step
def load(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


@step
def left(values: list[int], label: str = "x") -> list[int]:
    return helpers.scale(values)


@step(fingerprint=_fingerprint)
def right(values: list[int], offset: int = 1) -> list[int]:
    return [v + offset for v in values]


@step
def merge(a: list[int], b: list[int]) -> int:
    return sum(a) + sum(b)


@step(packages=("msgspec",), cache_version=1)
def report(total: int) -> dict[str, int]:
    return {{"total": total}}


@pipeline
def parts(data: Path = Path("data.txt"), offset: int = 1, label: str = "x") -> None:
    values = load(data)
    a = left(values, label=label)
    b = right(values, offset=offset)
    report(merge(a, b))
"""


class Project:
    """The generated project: edit its files, reload its modules, run its pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.project_dir
        tag = uuid.uuid4().hex[:10]
        self.helper_name = f"rp_helpers_{tag}"
        self.module_name = f"rp_pipeline_{tag}"
        self.helper_file = self.dir / f"{self.helper_name}.py"
        self.module_file = self.dir / f"{self.module_name}.py"
        self.helper_file.write_text(_HELPER)
        self.module_file.write_text(_PIPELINE.format(helper=self.helper_name))
        (self.dir / "data.txt").write_text("1 2 3 4")
        self.module: ModuleType = self.reload()
        self.last: PipelineRun | None = None

    def reload(self) -> ModuleType:
        for name in (self.module_name, self.helper_name):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        self.module = importlib.import_module(self.module_name)
        return self.module

    def edit(self, file: Path, old: str, new: str) -> None:
        text = file.read_text()
        assert text.count(old) == 1, f"{old!r} is not once in {file.name}"
        file.write_text(text.replace(old, new))
        self.reload()

    def run(self, **params: Any) -> PipelineRun:
        self.last = run_pipeline(
            self.module.parts, params, settings=self.settings, executor="inline"
        )
        return self.last


def _parts(settings: Settings, run: PipelineRun, step: str) -> dict[str, Any]:
    client = TrackingClient(settings)
    try:
        tags = client.get_run(run.steps[step].run_id).tags
    finally:
        client.close()
    return dict(json.loads(tags["modelyard.cache_parts"]))


def _oracle(values: list[int], factor: int, offset: int, extra: int = 0) -> dict[str, int]:
    return {"total": sum(factor * v for v in values) + sum(v + offset + extra for v in values)}


@pytest.fixture
def project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # edits of equal size, same second
    monkeypatch.syspath_prepend(str(settings.project_dir))
    made = Project(settings)
    yield made
    for name in (made.module_name, made.helper_name):
        sys.modules.pop(name, None)


def _check(
    project: Project,
    before: PipelineRun,
    after: PipelineRun,
    reran: set[str],
    why: dict[str, list[str]],
) -> None:
    statuses = {name: r.status for name, r in after.steps.items()}
    expected = {name: ("completed" if name in reran else "cached") for name in STEPS}
    assert statuses == expected
    for name, parts in why.items():
        old = _parts(project.settings, before, name)
        new = _parts(project.settings, after, name)
        assert changed_parts(old, new) == parts, name


def test_each_part_of_the_key_reruns_exactly_its_steps(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [1, 2, 3, 4]
    base = project.run()
    assert {r.status for r in base.steps.values()} == {"completed"}
    assert base.load("report") == _oracle(values, 2, 1)
    same = project.run()
    _check(project, base, same, set(), {})

    # 1. the step's own source, changing its output: it and everything after it
    project.edit(
        project.module_file, "[v + offset for v in values]", "[v + offset + 1 for v in values]"
    )
    run = project.run()
    _check(
        project,
        same,
        run,
        {"right", "merge", "report"},
        {"right": ["source"], "merge": ["inputs.b"], "report": ["inputs.total"]},
    )
    assert run.load("report") == _oracle(values, 2, 1, extra=1)
    prev = run

    # 2. the step's source, same output: only it (its downstream hits the cache)
    project.edit(
        project.module_file, "return helpers.scale(values)", "return list(helpers.scale(values))"
    )
    run = project.run()
    _check(project, prev, run, {"left"}, {"left": ["source"]})
    prev = run

    # 3. a project helper the step calls: it and what its new output feeds
    project.edit(project.helper_file, "FACTOR * v", "(FACTOR + 1) * v")
    run = project.run()
    _check(
        project,
        prev,
        run,
        {"left", "merge", "report"},
        {"left": ["source"], "merge": ["inputs.a"]},
    )
    assert run.load("report") == _oracle(values, 3, 1, extra=1)
    prev = run

    # 4. a parameter value
    run = project.run(offset=5)
    _check(
        project,
        prev,
        run,
        {"right", "merge", "report"},
        {"right": ["params.offset"], "merge": ["inputs.b"]},
    )
    assert run.load("report") == _oracle(values, 3, 5, extra=1)
    prev = run

    # 5. a parameter that changes nothing the step returns: identical content downstream
    run = project.run(offset=5, label="y")
    _check(project, prev, run, {"left"}, {"left": ["params.label"]})
    prev = run

    # 6. the content of a Path parameter's file (same path)
    (project.dir / "data.txt").write_text("1 2 3 5")
    run = project.run(offset=5, label="y")
    _check(
        project,
        prev,
        run,
        set(STEPS),
        {"load": ["params.path"], "left": ["inputs.values"], "right": ["inputs.values"]},
    )
    values = [1, 2, 3, 5]
    assert run.load("report") == _oracle(values, 3, 5, extra=1)
    prev = run

    # 7. the installed version of a declared package
    real = cache_module.package_version
    monkeypatch.setattr(
        cache_module, "package_version", lambda name: "999.0" if name == "msgspec" else real(name)
    )
    run = project.run(offset=5, label="y")
    _check(project, prev, run, {"report"}, {"report": ["packages.msgspec"]})
    prev = run

    # 8. cache_version
    project.edit(project.module_file, "cache_version=1", "cache_version=2")
    run = project.run(offset=5, label="y")
    statuses = {name: r.status for name, r in run.steps.items()}
    assert statuses == {**dict.fromkeys(STEPS, "cached"), "report": "completed"}
    assert "cache_version" in changed_parts(
        _parts(project.settings, prev, "report"), _parts(project.settings, run, "report")
    )
    prev = run

    # 9. the fingerprint
    project.module.SALT["salt"] = "2"
    run = project.run(offset=5, label="y")
    _check(project, prev, run, {"right"}, {"right": ["fingerprint"]})
    assert run.load("report") == _oracle(values, 3, 5, extra=1)

    # and nothing changed: everything from the cache
    project.module.SALT["salt"] = "2"
    again = project.run(offset=5, label="y")
    assert {r.status for r in again.steps.values()} == {"cached"}


def test_the_local_pool_runs_the_edited_code(project: Project) -> None:
    def run() -> PipelineRun:
        return run_pipeline(project.module.parts, settings=project.settings, executor="local")

    base = run()
    assert base.load("report") == _oracle([1, 2, 3, 4], 2, 1)
    project.edit(project.helper_file, "FACTOR * v", "(FACTOR + 1) * v")
    after = run()
    _check(project, base, after, {"left", "merge", "report"}, {"left": ["source"]})
    assert after.load("report") == _oracle([1, 2, 3, 4], 3, 1)
