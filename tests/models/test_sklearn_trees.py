"""Tree arrays from a skops file are checked before scikit-learn can walk them.

A real model is trained, its nodes tampered with as a crafted file would hold them, and
the file is loaded the ways a foreign file arrives (an MLflow import, a package's model
file). Loading runs in a subprocess, so a crash (a signal) or a hang would fail the test
rather than take the test process down. Generated tamperings are judged by an oracle:
a plain-Python walk of every path from the root that bounds-checks each access the
compiled predictor makes; whatever the check accepts, that walk must find safe.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from modelyard.config import DEFAULT_TRUSTED_TYPES, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.models.flavors import LoadOptions, SavedModel, get_flavor
from modelyard.models.flavors.sklearn_trees import check_tree_structures
from modelyard.registry.client import ModelRegistry

SEED = 7


def _data(rows: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=["a", "b", "c", "d"])
    frame["kind"] = rng.integers(0, 4, size=rows)
    label = ((frame.a + frame.b * frame.c + (frame.kind == 2)) > 0.3).astype(int).to_numpy()
    return frame, label


def _hgb() -> tuple[HistGradientBoostingClassifier, pd.DataFrame]:
    frame, label = _data()
    model = HistGradientBoostingClassifier(
        max_iter=8, max_leaf_nodes=7, categorical_features=[4], random_state=SEED
    )
    return model.fit(frame, label), frame


def _tree() -> tuple[DecisionTreeClassifier, pd.DataFrame]:
    frame, label = _data()
    return DecisionTreeClassifier(max_depth=5, random_state=SEED).fit(frame, label), frame


def _split_nodes(nodes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(nodes["is_leaf"] == 0)


def _set_tree_nodes(tree: Any, field: str, node: int, value: int) -> None:
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes[field][node] = value
    state["nodes"] = nodes
    tree.__setstate__(state)


# -- the subprocess: load as a foreign file arrives, then predict ---------------------------

_LOADER = textwrap.dedent(
    """
    import json
    import sys
    import pandas as pd
    from modelyard.errors import InvalidInputError
    from modelyard.models.mlflow_import import import_mlflow_model

    frame = pd.read_parquet(sys.argv[1])
    for folder in sys.argv[2:]:
        try:
            model, _, _ = import_mlflow_model(folder)
        except InvalidInputError as exc:
            print(json.dumps({"case": folder, "refused": str(exc)}), flush=True)
            continue
        total = float(model.predict_proba(frame).sum())
        print(json.dumps({"case": folder, "predicted": total}), flush=True)
    """
)


def _mlflow_dir(root: Path, model: Any) -> Path:
    """An MLflow model directory holding ``model`` as skops (as MLflow 3 writes it)."""
    root.mkdir(parents=True)
    sio.dump(model, root / "model.skops")
    (root / "MLmodel").write_text(
        json.dumps(
            {
                "flavors": {
                    "sklearn": {
                        "pickled_model": "model.skops",
                        "serialization_format": "skops",
                        "sklearn_version": "1.9",
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    return root


def _hgb_case(field: str, value: int) -> tuple[Any, int]:
    model, _ = _hgb()
    nodes = model._predictors[2][0].nodes
    node = int(_split_nodes(nodes)[-1])
    nodes[field][node] = np.array(value).astype(nodes[field].dtype)  # -1 wraps in a uint32
    return model, node


def _tree_case(field: str, value: int) -> tuple[Any, int]:
    model, _ = _tree()
    node = int(np.flatnonzero(model.tree_.children_left != -1)[-1])
    _set_tree_nodes(model.tree_, field, node, value)
    return model, node


def _bitset_case() -> tuple[Any, int]:
    model, _ = _hgb()
    for iteration in model._predictors:
        nodes = iteration[0].nodes
        categorical = np.flatnonzero((nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 1))
        if len(categorical):
            nodes["bitset_idx"][categorical[0]] = 999
            return model, int(categorical[0])
    raise AssertionError("no categorical split to tamper with")  # the data make one


def _knn() -> tuple[KNeighborsClassifier, pd.DataFrame]:
    frame, label = _data()
    return KNeighborsClassifier(n_neighbors=3, algorithm="kd_tree", leaf_size=8).fit(
        frame, label
    ), frame


def _set_binary_tree(tree: Any, edit: Any) -> None:
    state = list(tree.__getstate__())
    state[1], state[2] = state[1].copy(), state[2].copy()
    edit(state)
    tree.__setstate__(tuple(state))


def _knn_case(what: str) -> tuple[Any, int]:
    model, _ = _knn()

    def edit(state: list[Any]) -> None:
        if what == "index":
            state[1][5] = 10**9  # a sample index far past the data
        else:
            state[2]["idx_end"][1] += 50  # a node range past its parent's (and the data)

    _set_binary_tree(model._tree, edit)
    return model, 1


HGB_CASES = [
    ("left", 10_000, "has left child 10000, expected an index after the node"),
    ("right", -1, "has right child 4294967295"),  # -1 written into the uint32 field
    ("left", 0, "has left child 0, expected an index after the node"),  # back to the root
    ("feature_idx", 40, "splits on feature 40, expected 0..4"),
    ("feature_idx", -3, "splits on feature -3"),
]
TREE_CASES = [
    ("left_child", 10_000, "has left child 10000"),
    ("right_child", -5, "has right child -5"),
    ("left_child", 0, "has left child 0"),
    ("feature", 77, "splits on feature 77, expected 0..4"),
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case loaded (and, if accepted, predicted) in one real subprocess.

    A crash (a signal) or a hang (a node pointing back) fails every test that reads
    this; one process for all cases keeps the suite fast on a busy machine.
    """
    root = tmp_path_factory.mktemp("foreign")
    cases: dict[str, tuple[Any, int]] = {
        "sound": (_hgb()[0], 0),
        "bitset": _bitset_case(),
        "knn-index": _knn_case("index"),
        "knn-range": _knn_case("range"),
    }
    for field, value, _ in HGB_CASES:
        cases[f"hgb-{field}-{value}"] = _hgb_case(field, value)
    for field, value, _ in TREE_CASES:
        cases[f"tree-{field}-{value}"] = _tree_case(field, value)
    folders = {name: _mlflow_dir(root / name, model) for name, (model, _) in cases.items()}
    frame = _data()[0]
    frame.to_parquet(root / "rows.parquet")
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root / "rows.parquet"), *map(str, folders.values())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_folder = {line["case"]: line for line in lines}
    return {
        name: {**by_folder[str(folder)], "node": cases[name][1], "rows": len(frame)}
        for name, folder in folders.items()
    }


def test_a_sound_hist_gradient_boosting_model_imports_and_predicts(
    loaded: dict[str, Any],
) -> None:
    assert loaded["sound"]["predicted"] == pytest.approx(loaded["sound"]["rows"])


@pytest.mark.parametrize(("field", "value", "expected"), HGB_CASES)
def test_a_tampered_hist_gradient_boosting_node_is_refused_not_run(
    loaded: dict[str, Any], field: str, value: int, expected: str
) -> None:
    case = loaded[f"hgb-{field}-{value}"]
    out = case.get("refused", f"not refused: {case}")
    assert len(out.splitlines()) == 1
    assert out.startswith("Refusing model.skops: HistGradientBoostingClassifier._predictors[2][0]")
    assert f"node {case['node']} {expected}" in out


def test_a_categorical_split_with_a_missing_bitset_is_refused(loaded: dict[str, Any]) -> None:
    case = loaded["bitset"]
    assert f"node {case['node']} has bitset_idx 999, expected below" in case.get("refused", "")


@pytest.mark.parametrize(("field", "value", "expected"), TREE_CASES)
def test_a_tampered_decision_tree_node_is_refused_not_run(
    loaded: dict[str, Any], field: str, value: int, expected: str
) -> None:
    case = loaded[f"tree-{field}-{value}"]
    out = case.get("refused", f"not refused: {case}")
    assert out.startswith("Refusing model.skops: DecisionTreeClassifier.tree_: ")
    assert f"node {case['node']} {expected}" in out


def test_a_tampered_kd_tree_is_refused_not_run(loaded: dict[str, Any]) -> None:
    index, ranges = loaded["knn-index"], loaded["knn-range"]
    assert index.get("refused", "").startswith(
        "Refusing model.skops: KNeighborsClassifier._tree: idx_array is not a permutation"
    ), index
    assert ranges.get("refused", "").startswith(
        "Refusing model.skops: KNeighborsClassifier._tree: node 0's children do not split "
        "its range 0..600"
    ), ranges


def test_a_tree_whose_node_count_exceeds_its_array_is_refused() -> None:
    model, _ = _tree()
    state = model.tree_.__getstate__()
    state["node_count"] = state["node_count"] + 50
    model.tree_.__setstate__(state)
    with pytest.raises(InvalidInputError, match=r"node_count is \d+, expected 1\.\.\d+"):
        check_tree_structures(model)


def test_a_tree_deeper_than_its_max_depth_is_refused() -> None:
    """decision_path allocates max_depth + 1 slots a row: a deeper tree writes past them."""
    model, _ = _tree()
    state = model.tree_.__getstate__()
    state["max_depth"] = 2
    model.tree_.__setstate__(state)
    with pytest.raises(InvalidInputError, match="the tree is 5 deep, but max_depth says 2"):
        check_tree_structures(model)


def test_a_package_from_elsewhere_with_a_tampered_tree_is_refused(tmp_path: Path) -> None:
    """The scikit-learn flavor itself refuses: a package folder from anywhere is checked."""
    model, _ = _hgb()
    model._predictors[0][0].nodes["left"][0] = 500
    folder = tmp_path / "package"
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    saved = SavedModel(model_file="model.skops", model_class="", task="classification")
    with pytest.raises(InvalidInputError) as refused:
        get_flavor("sklearn").load(folder, saved, LoadOptions(trusted_types=DEFAULT_TRUSTED_TYPES))
    assert str(refused.value).startswith(
        "Refusing model.skops: HistGradientBoostingClassifier._predictors[0][0]: node 0 has "
        "left child 500"
    )


def test_models_made_here_load_through_the_registry(tmp_path: Path) -> None:
    """Every tree family packaged and loaded back: the check refuses none of them."""
    frame, label = _data()
    models: list[Any] = [
        _hgb()[0],
        _tree()[0],
        RandomForestClassifier(n_estimators=5, max_depth=4, random_state=SEED).fit(frame, label),
        GradientBoostingClassifier(n_estimators=5, random_state=SEED).fit(frame, label),
        make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=3)).fit(frame, label),
        _knn()[0],
    ]
    init_project(tmp_path)
    with ModelRegistry(load_settings(tmp_path, environ={})) as registry:
        for i, model in enumerate(models):
            logged = registry.log_model(model, name=f"m{i}", training_frame=frame)
            loaded = registry.load(str(logged.ref))
            np.testing.assert_array_equal(
                loaded.predict(frame.head(50)), model.predict(frame.head(50))
            )


def test_a_tree_predictor_outside_its_estimator_is_refused() -> None:
    model, _ = _hgb()
    with pytest.raises(InvalidInputError, match="a TreePredictor outside a HistGradient"):
        check_tree_structures({"stray": model._predictors[0][0]})


# -- generated tamperings, judged by a bounds-checking walk ---------------------------------


def _hgb_walk_is_safe(model: Any) -> bool:
    """Every access HistGradientBoosting's predictor makes, bounds-checked, on every path."""
    n_features = model.n_features_in_
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    for iteration in model._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            raw = predictor.raw_left_cat_bitsets
            stack: list[tuple[int, frozenset[int]]] = [(0, frozenset())]
            while stack:
                index, path = stack.pop()
                if not 0 <= index < len(nodes) or index in path:
                    return False  # read past the array, or a walk that never ends
                node = nodes[index]
                if node["is_leaf"]:
                    continue
                feature = int(node["feature_idx"])
                if not 0 <= feature < n_features:
                    return False
                if node["is_categorical"] and (
                    int(node["bitset_idx"]) >= len(raw) or int(f_idx_map[feature]) >= len(known)
                ):
                    return False
                seen = path | {index}
                stack += [(int(node["left"]), seen), (int(node["right"]), seen)]
    return True


def _tree_walk_is_safe(tree: Any) -> bool:
    """Every access a decision tree's apply/decision_path makes, bounds-checked."""
    if not 1 <= tree.node_count <= tree.capacity:
        return False
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    stack = [(0, 0)]
    while stack:
        index, depth = stack.pop()
        if not 0 <= index < tree.node_count or depth > tree.max_depth:
            return False  # out of the array, or deeper than decision_path allocates
        if left[index] == -1:
            continue
        if not 0 <= feature[index] < tree.n_features:
            return False
        stack += [(int(left[index]), depth + 1), (int(right[index]), depth + 1)]
    return True


_HGB, _ = _hgb()
_TREE, _ = _tree()
_HGB_FIELDS = ["left", "right", "feature_idx", "bitset_idx", "is_leaf", "is_categorical"]
_TREE_FIELDS = ["left_child", "right_child", "feature"]


def _accepted(model: Any) -> bool:
    try:
        check_tree_structures(model)
    except InvalidInputError as exc:
        assert len(str(exc).splitlines()) == 1
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tamperings=st.lists(
        st.tuples(
            st.integers(0, 7),  # iteration
            st.sampled_from(_HGB_FIELDS),
            st.integers(0, 12),  # node (taken modulo the node count)
            st.integers(-3, 40),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_generated_hist_gradient_boosting_tamperings(
    tamperings: list[tuple[int, str, int, int]],
) -> None:
    model = copy.deepcopy(_HGB)
    for iteration, field, node, value in tamperings:
        nodes = model._predictors[iteration % len(model._predictors)][0].nodes
        nodes[field][node % len(nodes)] = np.array(value).astype(nodes[field].dtype)
    if _accepted(model):
        assert _hgb_walk_is_safe(model), tamperings


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tamperings=st.lists(
        st.tuples(st.sampled_from(_TREE_FIELDS), st.integers(0, 40), st.integers(-3, 70)),
        min_size=1,
        max_size=3,
    ),
    max_depth=st.integers(0, 7),
)
def test_generated_decision_tree_tamperings(
    tamperings: list[tuple[str, int, int]], max_depth: int
) -> None:
    model = copy.deepcopy(_TREE)
    for field, node, value in tamperings:
        _set_tree_nodes(model.tree_, field, node % model.tree_.node_count, value)
    state = model.tree_.__getstate__()
    state["max_depth"] = max_depth
    model.tree_.__setstate__(state)
    if _accepted(model):
        assert _tree_walk_is_safe(model.tree_), tamperings


def _binary_tree_walk_is_safe(tree: Any) -> bool:
    """Every index a KDTree query follows, bounds-checked; whole nodes added to a buffer of
    n_samples indices (query_radius) never overrun it."""
    data, order, nodes, _ = tree.get_arrays()
    n_samples, n_nodes = len(data), len(nodes)
    added, stack = 0, [0]
    while stack:
        i = stack.pop()
        if not 0 <= i < n_nodes:
            return False
        start, end = int(nodes["idx_start"][i]), int(nodes["idx_end"][i])
        if not 0 <= start <= end <= n_samples:
            return False
        if nodes["is_leaf"][i]:
            if not all(0 <= int(k) < n_samples for k in order[start:end]):
                return False
            added += end - start
            continue
        stack += [2 * i + 1, 2 * i + 2]
    return added <= n_samples


_KNN, _ = _knn()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tamperings=st.lists(
        st.tuples(
            st.sampled_from(["index", "idx_start", "idx_end", "is_leaf"]),
            st.integers(0, 200),
            st.integers(-3, 700),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_generated_kd_tree_tamperings(tamperings: list[tuple[str, int, int]]) -> None:
    model = copy.deepcopy(_KNN)

    def edit(state: list[Any]) -> None:
        for field, at, value in tamperings:
            if field == "index":
                state[1][at % len(state[1])] = value
            else:
                state[2][field][at % len(state[2])] = value

    _set_binary_tree(model._tree, edit)
    if _accepted(model):
        assert _binary_tree_walk_is_safe(model._tree), tamperings


def test_the_untampered_models_pass_the_oracle_and_the_check() -> None:
    """Both judges agree on the models the generated cases start from."""
    assert _accepted(_HGB) and _hgb_walk_is_safe(_HGB)
    assert _accepted(_TREE) and _tree_walk_is_safe(_TREE.tree_)
    assert _accepted(_KNN) and _binary_tree_walk_is_safe(_KNN._tree)
