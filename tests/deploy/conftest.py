"""One project for the deploy tests: ``churn`` with three versions (the last is served).

Three versions, so an image that served "version 1 of a fresh registry" instead of the
version it was built from would show it. The model is a small HistGradientBoosting on a
float and an int column, logged with its training frame (signature, held-out rows).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from modelyard.cli.app import main
from modelyard.config import Settings, init_project, load_settings
from modelyard.registry import ModelRegistry

NAME = "churn"
SEED = 7
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class DeployProject:
    root: Path
    settings: Settings
    frame: pd.DataFrame
    model: HistGradientBoostingClassifier
    ref: str


def make_frame(rows: int = 200, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.normal(size=rows), "visits": rng.integers(0, 9, size=rows)})


@pytest.fixture(scope="session")
def deploy_project(tmp_path_factory: pytest.TempPathFactory) -> DeployProject:
    root = tmp_path_factory.mktemp("deploy") / "project"
    init_project(root, name="shop")
    settings = load_settings(root, environ={})
    frame = make_frame()
    labels = (frame["amount"] + 0.2 * frame["visits"] > 0.8).astype(int)
    model = HistGradientBoostingClassifier(max_iter=15, random_state=SEED).fit(frame, labels)
    with ModelRegistry(settings) as registry:
        for _ in range(3):
            logged = registry.log_model(model, name=NAME, training_frame=frame)
    assert logged.ref == f"{NAME}/3"
    return DeployProject(root, settings, frame, model, logged.ref)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(
    deploy_project: DeployProject,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """``cli("build", ...)`` in-process, in the project, with no MODELYARD_* of the caller."""
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(deploy_project.root)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, _ANSI.sub("", out), _ANSI.sub("", err))

    yield run
