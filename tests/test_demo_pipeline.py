"""The demo's training pipeline as a file in the demo project (fast checks; the whole
demo, run three times, is in ``tests/e2e/test_demo.py``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from modelyard.config import init_project, load_settings
from modelyard.demo.run import CHANGE, PIPELINE, write_pipelines
from modelyard.pipelines import load_pipelines

SHIPPED = (resources.files("modelyard.demo") / "project_pipelines.py").read_text("utf-8")
STEPS = ["flights", "training_set", "split", "tune", "fit", "evaluate", "register"]


def test_the_demo_writes_its_pipeline_once_and_keeps_an_edited_one(tmp_path: Path) -> None:
    path, own = write_pipelines(tmp_path)
    assert (path, own) == (tmp_path / "pipelines.py", True)
    assert path.read_text("utf-8") == SHIPPED
    assert write_pipelines(tmp_path) == (path, True)  # the same text: nothing to keep
    edited = SHIPPED.replace("n_trials: int = 6", "n_trials: int = 4")
    path.write_text(edited, encoding="utf-8")
    assert write_pipelines(tmp_path) == (path, False)
    assert path.read_text("utf-8") == edited  # the user's edit survives a rerun


def test_the_pipeline_file_loads_and_the_change_reaches_only_tune(tmp_path: Path) -> None:
    init_project(tmp_path)
    write_pipelines(tmp_path)
    flights = load_pipelines(load_settings(tmp_path, environ={}))[PIPELINE]
    before, after = flights.build(), flights.build(CHANGE)
    assert before.order() == after.order() == STEPS
    direct = {n for n in STEPS if dict(before.nodes[n].params) != dict(after.nodes[n].params)}
    assert direct == {"tune"}
    # what runs again downstream of tune is decided by the contents of its output
    assert after.downstream("tune") == {"fit", "evaluate", "register"}
    assert after.params["n_trials"] == CHANGE["n_trials"] != before.params["n_trials"]


@pytest.mark.parametrize("tune_from", ["2012-12-01", "2013-01-01", "2013-03-01"])
def test_tune_from_outside_the_training_days_is_one_clear_error(
    tmp_path: Path, tune_from: str
) -> None:
    init_project(tmp_path)
    write_pipelines(tmp_path)
    flights = load_pipelines(load_settings(tmp_path, environ={}))[PIPELINE]
    tune_model = flights.build().nodes["tune"].step
    days = pd.date_range("2013-01-01", "2013-02-14", freq="D", tz="UTC")
    train = pd.DataFrame({"event_timestamp": days})
    with pytest.raises(ValueError, match=r"tune_from inside the training days \(2013-01-01 to"):
        tune_model(train, tune_from=tune_from)  # outside a pipeline: the plain function
