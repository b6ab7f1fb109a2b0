"""The native runtime hands plain scikit-learn estimators the float matrix instead of a
frame: the answers are the frame's, bit for bit, and anything else still gets the frame."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelyard.models.flavors.sklearn import SklearnFlavor
from modelyard.models.runtimes import NativeRuntime, build_inputs
from modelyard.models.signature import ColumnSpec, Signature

SIGNATURE = Signature(
    columns=[
        ColumnSpec(name="count", dtype="int"),
        ColumnSpec(name="ratio", dtype="float", nullable=True),
        ColumnSpec(name="flag", dtype="bool"),
    ]
)
FLAVOR = SklearnFlavor()


def _training(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "count": rng.integers(-50, 50, rows),
            "ratio": rng.normal(0, 3, rows),
            "flag": rng.integers(0, 2, rows).astype(bool),
        }
    )
    label = ((frame["count"] / 20 + frame["ratio"] + frame["flag"]) > 0.5).astype(int)
    return frame, label.to_numpy()


def _models() -> dict[str, Any]:
    frame, label = _training()
    no_nan = frame.fillna(0.0)
    return {
        "hgb": HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, label),
        "forest": RandomForestRegressor(n_estimators=5, random_state=0).fit(no_nan, label),
    }


MODELS = _models()

rows_strategy = st.lists(
    st.tuples(
        st.integers(-(2**40), 2**40),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.booleans(),
    ),
    min_size=1,
    max_size=20,
)


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=25, deadline=None)
@given(rows=rows_strategy)
def test_the_matrix_gives_the_frames_answer_bit_for_bit(kind: str, rows: list[Any]) -> None:
    model = MODELS[kind]
    if kind != "hgb":  # fitted without missing values
        rows = [(c, 0.0 if r is None else r, f) for c, r, f in rows]
    frame = pd.DataFrame(rows, columns=SIGNATURE.names)
    inputs = build_inputs(SIGNATURE, frame)
    runtime = NativeRuntime(model, SIGNATURE, FLAVOR.scores)
    assert runtime._matrix
    with warnings.catch_warnings(record=True) as caught:
        got = runtime.scores(inputs)
    assert not [w for w in caught if "feature names" in str(w.message)]
    expected = FLAVOR.scores(model, inputs.to_frame(SIGNATURE)).reshape(len(rows), -1)
    np.testing.assert_array_equal(got, expected)


def test_pipelines_models_fitted_without_names_and_other_orders_get_the_frame() -> None:
    frame, label = _training()
    no_nan = frame.fillna(0.0)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(no_nan, label)
    unnamed = RandomForestRegressor(n_estimators=2).fit(no_nan.to_numpy(), label)
    reordered = RandomForestRegressor(n_estimators=2).fit(no_nan[["ratio", "count", "flag"]], label)
    text = Signature(
        columns=[ColumnSpec(name="count", dtype="int"), ColumnSpec(name="plan", dtype="string")]
    )
    assert not NativeRuntime(pipeline, SIGNATURE, FLAVOR.scores)._matrix
    assert not NativeRuntime(unnamed, SIGNATURE, FLAVOR.scores)._matrix
    assert not NativeRuntime(reordered, SIGNATURE, FLAVOR.scores)._matrix
    linear = LogisticRegression().fit(no_nan, label)  # BLAS: another layout, another ulp
    assert not NativeRuntime(linear, SIGNATURE, FLAVOR.scores)._matrix
    assert not NativeRuntime(MODELS["forest"], text, FLAVOR.scores)._matrix
    inputs = build_inputs(SIGNATURE, no_nan.head(5))
    np.testing.assert_array_equal(
        NativeRuntime(pipeline, SIGNATURE, FLAVOR.scores).scores(inputs),
        pipeline.predict_proba(no_nan.head(5)),
    )


def test_the_matrix_path_leaves_the_callers_model_and_warnings_alone() -> None:
    """No process-wide warning filter and no change to the caller's model: the runtime
    calls a shallow copy without fitted names (the trees are the same objects)."""
    model = MODELS["hgb"]
    runtime = NativeRuntime(model, SIGNATURE, FLAVOR.scores)
    assert runtime._matrix
    assert list(model.feature_names_in_) == SIGNATURE.names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime.scores(
            build_inputs(SIGNATURE, pd.DataFrame([(1, 0.5, True)], columns=SIGNATURE.names))
        )
        assert not [w for w in caught if "feature names" in str(w.message)]
        model.predict_proba(np.array([[1.0, 0.5, 1.0]]))  # the caller's own unnamed call
    assert [w for w in caught if "does not have valid feature names" in str(w.message)]
    assert runtime._method.__self__._predictors is model._predictors
