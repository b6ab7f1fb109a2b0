"""On-demand features: one function at training and serving time; skew over logged vectors.

The oracle for an on-demand feature is its formula applied by hand (pandas) to the plain
features of the same point-in-time join; the oracle for serving is the offline answer.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError, ModelError
from modelyard.features import Feature, on_demand_feature_view
from modelyard.features.ondemand import run_on_demand
from modelyard.features.online import FeatureStatus, OnlineStore
from modelyard.features.store import FeatureStore
from tests.features.test_store import T0, US, _clean, _frame, _write_features, _write_source

ON_DEMAND = """
import numpy as np
from modelyard.features import on_demand_feature_view

@on_demand_feature_view(
    inputs=["delays:delay", "delays:n"],
    request=[Feature("minutes_late", "float"), Feature("hub", "string")],
    features=[Feature("delay_ratio", "float"), Feature("busy_hub", "bool"),
              Feature("n_bucket", "int")],
)
def ratios(x):
    ratio = (x["delay"] + x["minutes_late"]) / (x["n"] + 1)
    busy = np.array([None if h is None else h in ("JFK", "EWR") for h in x["hub"]],
                    dtype=object)
    return {"delay_ratio": ratio, "busy_hub": busy, "n_bucket": np.floor(x["n"] / 10)}

served_model = FeatureService("served_model", features=[delays, ratios])
"""


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    """The on-demand formula applied by hand to the plain joined features."""
    return pd.DataFrame(
        {
            "delay_ratio": (frame["delay"] + frame["minutes_late"]) / (frame["n"] + 1),
            "busy_hub": [None if pd.isna(h) else h in ("JFK", "EWR") for h in frame["hub"]],
            "n_bucket": np.floor(frame["n"].astype(float) / 10),
        }
    )


def _entities(carriers: list[str], times: list[Any]) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "carrier": carriers,
            "event_timestamp": pd.to_datetime(times, utc=True),
            "minutes_late": rng.uniform(0, 30, len(carriers)).round(3),
            "hub": [["JFK", "LGA", None][i % 3] for i in range(len(carriers))],
        }
    )


@pytest.fixture
def project(settings: Settings) -> Path:
    root = settings.project_dir
    _write_source(root, _frame())
    _write_features(root, extra=ON_DEMAND)
    return root


@pytest.fixture
def store(settings: Settings, project: Path, online_store: OnlineStore) -> Any:
    s = FeatureStore(settings, online_store=online_store)
    s.apply()
    yield s
    s.close()


def _same(a: Any, b: Any) -> bool:
    a, b = _clean(a), _clean(b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return bool(a == b)


# -- the function itself -----------------------------------------------------------------


@on_demand_feature_view(
    inputs=["v:amount"], request=[Feature("qty", "int")], features=[Feature("unit", "float")]
)
def unit_price(x: Any) -> Any:
    return {"unit": x["amount"] / x["qty"]}


def test_inputs_arrive_as_documented_numpy_types_on_both_paths() -> None:
    seen: list[dict[str, Any]] = []

    @on_demand_feature_view(
        inputs=["v:f", "v:i", "v:b", "v:s"],
        request=[Feature("t", "datetime")],
        features=[Feature("out", "float")],
    )
    def probe(x: Any) -> Any:
        seen.append({k: (v.dtype, list(v)) for k, v in x.items()})
        return {"out": np.zeros(len(x["f"]))}

    types = {"v:f": "float", "v:i": "int", "v:b": "bool", "v:s": "string"}
    t = pd.Timestamp("2013-01-01 10:00", tz="UTC")
    arrow = {
        "f": pa.array([1.5, None]),
        "i": pa.array([3, None], pa.int64()),
        "b": pa.array([True, None]),
        "s": pa.array(["a", None]),
        "t": [t.to_pydatetime(), None],
    }
    pandas = {
        "f": pd.Series([1.5, math.nan]),
        "i": pd.Series([3.0, math.nan]),  # an int column with nulls, as a join returns it
        "b": pd.Series([True, None], dtype=object),
        "s": pd.Series(["a", None], dtype=object),
        "t": pd.Series([t, pd.NaT]),
    }
    run_on_demand(probe, arrow, 2, types)  # type: ignore[arg-type]
    run_on_demand(probe, pandas, 2, types)  # type: ignore[arg-type]
    online, offline = seen
    assert {k: v[0] for k, v in online.items()} == {k: v[0] for k, v in offline.items()}
    assert online["f"][0] == np.float64 and online["i"][0] == np.float64
    assert online["b"][1] == [True, None] and online["s"][1] == ["a", None]
    assert online["t"][0] == np.dtype("datetime64[us]")
    assert np.isnat(online["t"][1][1]) and np.isnat(offline["t"][1][1])


def test_outputs_are_checked_against_their_declared_types() -> None:
    got = run_on_demand(unit_price, {"amount": [10.0, None], "qty": [4, 2]}, 2)
    assert got["unit"].type == pa.float64() and got["unit"].to_pylist() == [2.5, None]

    def broken(result: Any, **kwargs: Any) -> Any:
        view = on_demand_feature_view(
            inputs=[], request=[Feature("a")], features=[Feature("out", "int")], **kwargs
        )(lambda x: result)
        return run_on_demand(view, {"a": [1.0, 2.0]}, 2)

    with pytest.raises(InvalidInputError, match="returned no 'out'"):
        broken({"other": [1, 2]}, name="missing")
    with pytest.raises(InvalidInputError, match=r"Expected 2 values of 'out'.*got 3"):
        broken({"out": [1, 2, 3]}, name="too_long")
    with pytest.raises(InvalidInputError, match="got the single value 5"):
        broken({"out": 5}, name="scalar")
    with pytest.raises(InvalidInputError, match=r"Expected int values for on_demand\.frac\.out"):
        broken({"out": [1.5, 2.0]}, name="frac")
    with pytest.raises(InvalidInputError, match="must return a mapping"):
        broken([1, 2], name="listed")


def test_an_exception_in_the_function_names_the_view() -> None:
    @on_demand_feature_view(inputs=[], request=[Feature("a")], features=[Feature("out")])
    def faulty(x: Any) -> Any:
        return {"out": x["not_an_input"]}

    with pytest.raises(ModelError, match="'faulty' raised KeyError"):
        run_on_demand(faulty, {"a": [1.0]}, 1)
    with pytest.raises(InvalidInputError, match="needs 'qty'"):
        run_on_demand(unit_price, {"amount": [1.0]}, 1)


def test_definition_errors_are_clear() -> None:
    with pytest.raises(InvalidInputError, match="two inputs named 'x'"):
        on_demand_feature_view(inputs=["a:x", "b:x"], features=[Feature("y")], name="t")(
            lambda x: x
        )
    with pytest.raises(InvalidInputError, match="like view:feature"):
        on_demand_feature_view(inputs=["nocolon"], features=[Feature("y")], name="t")(lambda x: x)
    with pytest.raises(InvalidInputError, match="no output features"):
        on_demand_feature_view(inputs=[], features=[], name="t")(lambda x: x)
    with pytest.raises(InvalidInputError, match="on_demand name"):
        on_demand_feature_view(inputs=[], features=[Feature("y")])(lambda x: x)


# -- training and serving ----------------------------------------------------------------


def test_training_set_runs_the_function_over_the_point_in_time_values(
    store: FeatureStore,
) -> None:
    frame = _frame()
    rng = np.random.default_rng(11)
    carriers = [*rng.choice(sorted(set(frame["carrier"])), 60), "XX"]
    times = [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 22, len(carriers))]
    entities = _entities(list(carriers), times)
    got = store.get_historical_features(entities, "served_model")
    plain = store.get_historical_features(entities, ["delays:delay", "delays:n"])
    expected = _expected(plain)
    for column in ("delay_ratio", "busy_hub", "n_bucket"):
        for a, b in zip(got[column], expected[column], strict=True):
            assert _same(a, b), (column, a, b)
    assert list(got["minutes_late"]) == list(entities["minutes_late"])  # passed through
    assert got["delay_ratio"].isna().iloc[-1]  # unknown carrier: no inputs, null output


def test_served_on_demand_values_equal_the_training_values(store: FeatureStore) -> None:
    end = T0 + timedelta(days=21)
    store.materialize(None, end)
    frame = _frame()
    carriers = [*sorted(set(frame["carrier"])), "XX"]
    entities = _entities(carriers, [end - US] * len(carriers))
    offline = store.get_historical_features(entities, "served_model", full_feature_names=True)
    request = {
        "carrier": carriers,
        "minutes_late": list(entities["minutes_late"]),
        "hub": list(entities["hub"]),
    }
    online = store.get_online_features(request, "served_model", now=end - US)
    for ref in online.refs:
        view, _, name = ref.partition(":")
        served = online.values[ref].to_pylist()
        for a, b in zip(served, offline[f"{view}__{name}"], strict=True):
            assert _same(a, b), (ref, a, b)
    status = online.status["ratios:delay_ratio"]
    assert FeatureStatus(int(status[-1])) is FeatureStatus.MISSING  # worst of its inputs
    assert FeatureStatus(int(status[0])) is FeatureStatus.PRESENT


def test_serving_without_a_request_field_names_it(store: FeatureStore) -> None:
    with pytest.raises(InvalidInputError, match="request field 'hub'"):
        store.get_online_features(
            {"carrier": ["AA"], "minutes_late": [1.0]}, ["ratios:delay_ratio"]
        )
    entities = _entities(["AA"], [T0]).drop(columns=["hub"])
    with pytest.raises(InvalidInputError, match="request column 'hub'"):
        store.get_historical_features(entities, ["ratios:busy_hub"])


def test_apply_versions_the_code_and_refuses_to_run_unapplied_code(
    store: FeatureStore, project: Path
) -> None:
    assert [(c.kind, c.name, c.action) for c in store.plan().pending] == []
    assert store.applied("on_demand", "ratios").version == 1
    _write_features(project, extra=ON_DEMAND.replace('(x["n"] + 1)', '(x["n"] + 2)'))
    pending = [(c.kind, c.name, c.action) for c in store.plan().pending]
    assert pending == [("on_demand", "ratios", "change")]
    fresh = FeatureStore(store.settings, online_store=store.online_store)
    try:
        with pytest.raises(ConflictError, match="changed in the project's code"):
            fresh.get_online_features(
                {"carrier": ["AA"], "minutes_late": [1.0], "hub": ["JFK"]}, "served_model"
            )
        fresh.apply()
        assert fresh.applied("on_demand", "ratios").version == 2
        assert fresh.get_online_features(
            {"carrier": ["AA"], "minutes_late": [1.0], "hub": ["JFK"]}, "served_model"
        ).refs
    finally:
        fresh.close()


def test_apply_refuses_an_input_that_does_not_exist(store: FeatureStore, project: Path) -> None:
    _write_features(project, extra=ON_DEMAND.replace('"delays:n"]', '"delays:nope"]'))
    with pytest.raises(InvalidInputError, match="'ratios' reads 'delays:nope'"):
        store.apply()


# -- skew over logged vectors -------------------------------------------------------------


def _served_log(store: FeatureStore, times: list[Any], carriers: list[str]) -> pd.DataFrame:
    """What a server would log: request, time and the served vector, one row per request."""
    rows = []
    for carrier, at in zip(carriers, times, strict=True):
        request = {"carrier": [carrier], "minutes_late": [2.0], "hub": ["EWR"]}
        got = store.get_online_features(request, "served_model", now=at)
        row = {"time": at, "input.carrier": carrier, "input.minutes_late": 2.0, "input.hub": "EWR"}
        row.update({f"feature.{ref}": got.values[ref][0].as_py() for ref in got.refs})
        rows.append(row)
    log = pd.DataFrame(rows)
    log["time"] = pd.to_datetime(log["time"], utc=True)
    return log


def test_logged_vectors_served_right_after_materialization_show_no_skew(
    store: FeatureStore,
) -> None:
    end = T0 + timedelta(days=21)
    store.materialize(None, end)
    carriers = sorted(set(_frame()["carrier"]))
    log = _served_log(store, [end - US] * len(carriers), carriers)
    report = store.check_logged_skew(log)
    assert report.ok, report.examples
    assert report.rows == len(carriers)
    assert set(report.features) == {
        "delays:delay",
        "delays:n",
        "ratios:delay_ratio",
        "ratios:busy_hub",
        "ratios:n_bucket",
    }


def test_a_stale_materialization_and_a_tampered_value_are_reported(store: FeatureStore) -> None:
    early = T0 + timedelta(days=5)
    store.materialize(None, early)  # serving stops being refreshed after day 5
    carriers = sorted(set(_frame()["carrier"]))
    later = [T0 + timedelta(days=15)] * len(carriers)  # rows after day 5 exist offline
    log = _served_log(store, later, carriers)
    report = store.check_logged_skew(log)
    assert not report.ok
    assert report.features["delays:n"]["mismatches"] > 0
    assert report.features["ratios:delay_ratio"]["mismatches"] > 0  # skew propagates
    example = report.examples[0]
    assert {"row", "time", "keys", "feature", "served", "offline"} <= set(example)

    fresh = _served_log(store, [early - US] * len(carriers), carriers)
    assert store.check_logged_skew(fresh).ok
    fresh.loc[1, "feature.delays:n"] = fresh.loc[1, "feature.delays:n"] + 1
    tampered = store.check_logged_skew(fresh)
    assert tampered.features["delays:n"]["mismatches"] == 1
    assert tampered.features["delays:delay"]["mismatches"] == 0


def test_a_log_without_time_or_features_is_refused(store: FeatureStore) -> None:
    with pytest.raises(InvalidInputError, match="Expected a time column"):
        store.check_logged_skew(pd.DataFrame({"carrier": ["AA"], "delays:n": [1]}))
    with pytest.raises(InvalidInputError, match="view:feature"):
        store.check_logged_skew(
            pd.DataFrame({"carrier": ["AA"], "time": pd.to_datetime([T0], utc=True)})
        )
