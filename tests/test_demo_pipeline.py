"""The demo's training pipeline as a file in the demo project (fast checks; the whole
demo, run three times, is in ``tests/e2e/test_demo.py``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config import init_project, load_settings
from modelyard.demo.closed_loop import loop_verdict
from modelyard.demo.flights import flight_entities
from modelyard.demo.project_pipelines import window_months
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


def _pipeline(tmp_path: Path) -> Any:
    init_project(tmp_path)
    write_pipelines(tmp_path)
    return load_pipelines(load_settings(tmp_path, environ={}))[PIPELINE]


def test_a_training_window_sets_the_flights_the_split_and_the_tuning_days(tmp_path: Path) -> None:
    flights = _pipeline(tmp_path)
    default = flights.build()
    # without a window the graph is the 3-run demo's: the months, the fixed days
    assert dict(default.nodes["flights"].params)["months"] == (1, 2)
    assert dict(default.nodes["split"].params) == {"valid_from": "2013-02-15"}
    assert dict(default.nodes["register"].params) == {"promote": True}

    window = {"window_start": "2013-05-02T04:00:00+00:00", "window_end": "2013-07-31T04:00:00Z"}
    graph = flights.build({**window, "promote": False})
    assert graph.order() == STEPS
    got = dict(graph.nodes["flights"].params)
    assert got == {"months": (5, 6, 7, 8), **window}
    end = pd.Timestamp(window["window_end"])
    valid_from = pd.Timestamp(dict(graph.nodes["split"].params)["valid_from"])
    tune_from = pd.Timestamp(dict(graph.nodes["tune"].params)["tune_from"])
    assert (end - valid_from, valid_from - tune_from) == (pd.Timedelta(days=14),) * 2
    assert dict(graph.nodes["register"].params) == {"promote": False}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window_start": "2013-05-01"}, "Expected both window_start and window_end"),
        ({"window_end": "2013-05-01"}, "Expected both window_start and window_end"),
        (
            {"window_start": "2013-05-01", "window_end": "2013-05-20"},
            "Expected window_end more than 28 days after window_start",
        ),
        (
            {"window_start": "last spring", "window_end": "2013-05-20"},
            "Expected window_start as an ISO 8601 time, got 'last spring'",
        ),
    ],
)
def test_a_bad_window_is_one_clear_error_naming_the_parameter(
    tmp_path: Path, params: dict[str, str], message: str
) -> None:
    flights = _pipeline(tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        flights.build(params)


NEW_YORK = ZoneInfo("America/New_York")


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(datetime(2012, 10, 1), datetime(2014, 3, 1), timezones=st.just(UTC)),
    length=st.timedeltas(timedelta(days=29), timedelta(days=200)),
    where=st.floats(0, 1, exclude_max=True),
)
def test_the_window_months_hold_every_flight_departing_in_the_window(
    start: datetime, length: timedelta, where: float
) -> None:
    # the oracle: a flight departing at `moment` (UTC) is in its New York date's month
    months = window_months(start, start + length)
    moment = start + length * where
    local = moment.astimezone(NEW_YORK)
    if local.year == 2013:
        assert local.month in months, (start, length, moment)
    assert set(months) <= set(range(1, 13))
    assert list(months) == sorted(set(months))


def test_the_flights_step_keeps_exactly_the_window(tmp_path: Path) -> None:
    step = _pipeline(tmp_path).build().nodes["flights"].step
    start, end = "2013-05-02T04:00:00+00:00", "2013-07-31T04:00:00+00:00"
    got = step(months=(4, 5, 6, 7, 8), window_start=start, window_end=end)
    everything = flight_entities((4, 5, 6, 7, 8))
    stamp = everything["event_timestamp"]
    wanted = everything[(stamp >= pd.Timestamp(start)) & (stamp < pd.Timestamp(end))]
    pd.testing.assert_frame_equal(got, wanted.reset_index(drop=True))
    assert step(months=(1,)).equals(flight_entities((1,)))  # no window: the months


@settings(max_examples=200, deadline=None)
@given(
    diff=st.floats(-0.2, 0.2),
    half=st.floats(0.0, 0.1),
    others=st.integers(0, 5000),
)
def test_the_closed_loop_verdict_says_gained_or_lost_and_whether_it_is_real(
    diff: float, half: float, others: int
) -> None:
    summary = {"difference": diff, "low": diff - half, "high": diff + half}
    verdict = loop_verdict({**summary, "other_versions_rows": others})
    if others == 0:  # only the original answered: there is nothing to compare
        assert verdict.endswith("realised equals counterfactual")
        return
    assert ("gained" in verdict) == (diff > 0) and ("lost" in verdict) == (diff < 0)
    real = diff - half > 0 or diff + half < 0
    assert ("excludes 0" in verdict) == real and ("includes 0" in verdict) == (not real)
