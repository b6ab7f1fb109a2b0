"""Join keys compare with the source's type on every path, and are never coerced.

Offline (the point-in-time join, on-demand views, the logged skew check), materialization
and online reads (SQLite and Redis) must agree exactly with a brute-force oracle that
matches a key only to a source key of the same type and value, or refuse the call naming
both types.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.features import (
    Entity,
    Feature,
    FeatureView,
    FileSource,
    get_historical_features,
    get_online_features,
    on_demand_feature_view,
)
from modelyard.features.materialize import Window, materialize_view
from modelyard.features.online import OnlineStore
from modelyard.features.skew import check_logged_skew

T0 = datetime(2024, 1, 1, tzinfo=UTC)
END = T0 + timedelta(minutes=10)
AT = END - timedelta(microseconds=1)  # what materialize(end=END) covers
END_US = int((END - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
INT_KEYS = [0, 1, 7, 10, -1, 2**40]
# text that int coercion would turn into 1, 7, 0 or -1; unicode digits; blanks
STR_KEYS = ["0", "1", "01", "1.0", " 1", "1 ", "\u0661", "\uff11", "7", "-1", "a", ""]
_views = itertools.count()


def _source(folder: Path, keys: list[Any], kind: str) -> FeatureView:
    n = len(keys)
    times = [T0 + timedelta(minutes=i % 5) for i in range(n)]
    frame = pd.DataFrame(
        {
            "k": pd.Series(keys, dtype="int64" if kind == "int" else "str"),
            "ts": pd.Series(times, dtype="datetime64[us, UTC]"),
            "v": pd.Series([float(i) / 4 for i in range(n)], dtype="float64"),
            "rid": pd.Series(range(n), dtype="int64"),
        }
    )
    name = f"keys_{next(_views)}"
    path = folder / f"{name}.parquet"
    frame.to_parquet(path)
    return FeatureView(
        name,
        entities=[Entity("k", join_keys=["k"])],
        source=FileSource(str(path), "ts"),
        features=[Feature("v"), Feature("rid", "int")],
    )


def _oracle(source_keys: list[Any], entity_keys: list[Any]) -> list[tuple[Any, Any]]:
    """Per entity key: the latest row whose key has the same type and value."""
    out: list[tuple[Any, Any]] = []
    for key in entity_keys:
        found = [
            (i % 5, i)
            for i, s in enumerate(source_keys)
            if type(s) is type(key) and s == key  # no coercion, ever
        ]
        if not found:
            out.append((None, None))
            continue
        _, rid = max(found)
        out.append((float(rid) / 4, rid))
    return out


def _plain(values: Any) -> list[Any]:
    return [None if v is None or pd.isna(v) else v for v in list(values)]


def _type_name(value: Any) -> str:
    return "string" if isinstance(value, str) else "int"


@seed(20240601)
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(["string", "int"]),
    data=st.data(),
    entity_keys=st.lists(st.sampled_from([*INT_KEYS, *STR_KEYS]), min_size=1, max_size=6),
    backend=st.sampled_from(["inferred", "object", "pyarrow"]),
)
def test_offline_online_and_the_oracle_agree_or_the_types_are_named(
    tmp_path: Path,
    online_store: OnlineStore,
    kind: str,
    data: st.DataObject,
    entity_keys: list[Any],
    backend: str,
) -> None:
    pool = INT_KEYS if kind == "int" else STR_KEYS
    source_keys = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
    view = _source(tmp_path, source_keys, kind)
    materialize_view(view, Window(None, END_US, None), online_store)
    column = pd.Series(entity_keys, dtype=object if backend == "object" else None)
    kinds = {_type_name(k) for k in entity_keys}
    if backend == "pyarrow" and len(kinds) == 1:  # Arrow-backed, as read_parquet can give
        column = column.astype(pd.ArrowDtype(pa.string() if kinds == {"string"} else pa.int64()))
    entity_df = pd.DataFrame({"k": column, "event_timestamp": [AT] * len(entity_keys)})
    entity_df["event_timestamp"] = entity_df["event_timestamp"].astype("datetime64[us, UTC]")
    refs = [f"{view.name}:v", f"{view.name}:rid"]
    mismatched = any(_type_name(k) != kind for k in entity_keys)
    if mismatched:
        other = "int" if kind == "string" else "string"
        with pytest.raises(InvalidInputError, match=rf"(?s)(?=.*{kind})(?=.*{other})"):
            get_historical_features(entity_df, [view])
        with pytest.raises(InvalidInputError, match=rf"(?s)(?=.*{kind})(?=.*{other})"):
            get_online_features(online_store, {"k": entity_keys}, refs, [view], now=AT)
        return
    want = _oracle(source_keys, entity_keys)
    offline = get_historical_features(entity_df, [view])
    assert list(zip(_plain(offline["v"]), _plain(offline["rid"]), strict=True)) == want
    online = get_online_features(online_store, {"k": entity_keys}, refs, [view], now=AT)
    served = zip(
        online.values[refs[0]].to_pylist(), online.values[refs[1]].to_pylist(), strict=True
    )
    assert list(served) == want


def test_zero_one_and_one_are_distinct_string_keys(tmp_path: Path, online_store: Any) -> None:
    """The reported case: entity keys 01 and 1 against a string-keyed source."""
    view = _source(tmp_path, ["01", "1"], "string")
    materialize_view(view, Window(None, END_US, None), online_store)
    # as pandas reads a CSV with 01 and 1: both the integer 1
    coerced = pd.DataFrame({"k": [1, 1], "event_timestamp": pd.Series([AT] * 2)})
    with pytest.raises(InvalidInputError, match=r"VARCHAR in the source \(string keys\).*int"):
        get_historical_features(coerced, [view])
    typed = pd.DataFrame({"k": ["01", "1"], "event_timestamp": pd.Series([AT] * 2)})
    offline = get_historical_features(typed, [view])
    online = get_online_features(online_store, {"k": ["01", "1"]}, [f"{view.name}:v"], [view])
    assert offline["v"].tolist() == online.values[f"{view.name}:v"].to_pylist() == [0.0, 0.25]
    with pytest.raises(InvalidInputError, match=r"holds string keys.*got the int 1"):
        get_online_features(online_store, {"k": [1]}, [f"{view.name}:v"], [view])


def test_floats_bools_and_unsupported_source_keys_are_refused(tmp_path: Path) -> None:
    view = _source(tmp_path, [1, 2], "int")
    for values in ([1.0, 2.0], [True, False], [1, "1"]):
        frame = pd.DataFrame({"k": values, "event_timestamp": pd.Series([AT] * 2)})
        with pytest.raises(InvalidInputError, match=r"BIGINT in the source \(int keys\)"):
            get_historical_features(frame, [view])
    # an explicit conversion is the caller's: nullable integers are fine
    frame = pd.DataFrame(
        {"k": pd.array([1, None], dtype="Int64"), "event_timestamp": pd.Series([AT] * 2)}
    )
    assert _plain(get_historical_features(frame, [view])["rid"]) == [0, None]
    path = tmp_path / "float_keys.parquet"
    pd.DataFrame({"k": [1.0], "ts": pd.Series([T0])}).to_parquet(path)
    floaty = FeatureView(
        "floaty", [Entity("k", ["k"])], FileSource(str(path), "ts"), [Feature("k2", "float", "k")]
    )
    with pytest.raises(InvalidInputError, match=r"expected string or integer join keys.*DOUBLE"):
        get_historical_features(frame, [floaty])


def test_materializing_keys_of_another_type_is_refused(
    tmp_path: Path, online_store: OnlineStore
) -> None:
    strings = _source(tmp_path, ["1"], "string")
    materialize_view(strings, Window(None, END_US, None), online_store)
    ints = _source(tmp_path, [1], "int")
    # the same view name, its source's key now an integer: never mixed into one store
    renamed = FeatureView(strings.name, strings.entities, ints.source, strings.features)
    with pytest.raises(InvalidInputError, match=r"holds string keys in 'k'.*int keys"):
        materialize_view(renamed, Window(None, END_US, None), online_store)


def _twice(x: Any) -> Any:
    return {"twice": np.asarray(x["v"]) * 2}


def test_on_demand_and_logged_skew_paths_check_the_key_type(
    tmp_path: Path, online_store: OnlineStore
) -> None:
    view = _source(tmp_path, ["01", "1"], "string")
    materialize_view(view, Window(None, END_US, None), online_store)
    odfv = on_demand_feature_view(inputs=[f"{view.name}:v"], features=[Feature("twice")])(_twice)
    wrong = pd.DataFrame({"k": [1], "event_timestamp": pd.Series([AT])})
    with pytest.raises(InvalidInputError, match=r"string keys.*int"):
        get_historical_features(wrong, [odfv], views=[view])
    with pytest.raises(InvalidInputError, match=r"string keys.*int"):
        get_online_features(
            online_store, {"k": [1]}, [f"{odfv.name}:twice"], [view], on_demand=[odfv]
        )
    right = pd.DataFrame({"k": ["01", "1"], "event_timestamp": pd.Series([AT] * 2)})
    assert get_historical_features(right, [odfv], views=[view])["twice"].tolist() == [0.0, 0.5]
    log = pd.DataFrame({"k": [1], "time": pd.Series([AT]), f"{view.name}:v": [0.0]})
    with pytest.raises(InvalidInputError, match=r"string keys.*int"):
        check_logged_skew(log, [view])
