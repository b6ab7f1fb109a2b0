"""Structural checks of scikit-learn's tree arrays, run on every loaded skops model.

scikit-learn's compiled predictors walk node arrays without bounds checks: a child index
past the end of ``nodes``, a feature index past the row, a categorical bitset row that
does not exist, or a node count larger than the array is read (or, for
``decision_path``, written) out of bounds, and a child pointing back loops forever. skops
rebuilds these arrays exactly as the file holds them, so a crafted file (an imported
MLflow model, a package from elsewhere) can crash the process or read its memory. MLflow
refuses HistGradientBoosting's ``TreePredictor`` by default for that reason.

Here every tree in a loaded model is checked before the model is returned, so a model
made anywhere loads when its arrays are sound and is refused, with one line naming the
estimator and the node, when they are not:

* HistGradientBoosting (``TreePredictor`` in ``_predictors``): the record dtype; every
  split node's children inside the array and after the node (so every walk ends); every
  node but the root the child of exactly one node; ``feature_idx`` below the estimator's
  ``n_features_in_``; 0/1 flags; categorical splits only on features the bin mapper
  calls categorical, their ``bitset_idx`` inside both bitset arrays; ``bin_threshold``
  below the bin count. A ``TreePredictor`` outside a HistGradientBoosting estimator is
  refused (nothing could say how wide its rows are).
* Decision trees (``Tree`` in ``tree_``, also inside forests, gradient boosting, bagging
  and isolation forests): ``node_count`` within the array; leaves with both children
  -1, split nodes with both children inside the array and after the node, each node but
  the root the child of exactly one node; ``feature`` below ``n_features``, which must
  equal the estimator's ``n_features_in_``; the real depth within ``max_depth`` (the
  size ``decision_path`` allocates). Ensembles: each sub-estimator as wide as the
  ensemble (bagging: as its feature subset), gradient boosting's ``estimators_`` as wide
  as ``n_trees_per_iteration_``.
* Neighbour trees (``KDTree``, ``BallTree``, as nearest-neighbour estimators hold them):
  ``idx_array`` a permutation of the samples, ``2**n_levels - 1`` nodes whose ranges
  split their parent's exactly (so a query's index buffer cannot overrun), bounds as wide
  as the data; distance metrics with a square weight matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError

__all__ = ["check_tree_structures"]

#: objects walked at most; a model holding more is refused rather than walked forever
MAX_OBJECTS = 5_000_000


class _Refused(Exception):
    """One structural fault: where (an attribute path) and what."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """The objects ``obj`` holds, each with the path step that reaches it."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"[{key!r}]", value
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield f"[{i}]", value
    elif isinstance(obj, set | frozenset):
        for value in obj:
            yield "{}", value
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for index in np.ndindex(obj.shape):
                yield f"[{', '.join(map(str, index))}]", obj[index]
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for key, value in vars(obj).items():
            yield f".{key}", value


def _walk(root: Any, name: str) -> Iterator[tuple[str, Any]]:
    """Every object reachable from ``root`` once, with a path from ``name``."""
    seen: set[int] = set()
    stack = [(name, root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | type(None)):
            continue
        seen.add(id(obj))
        if len(seen) > MAX_OBJECTS:
            raise _Refused(name, f"holds more than {MAX_OBJECTS} objects")
        yield path, obj
        stack.extend((path + step, child) for step, child in reversed(list(_children(obj))))


def _int(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _Refused(where, f"{what} is {value!r}, expected an integer")
    return int(value)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_features(
    where: str, split: np.ndarray, feature: np.ndarray, width: int, holder: str
) -> None:
    """Split nodes' feature indices within the ``width`` features ``holder`` takes."""
    bad = split & ((feature < 0) | (feature >= width))
    if bad.any():
        i = _first(bad)
        raise _Refused(
            where,
            f"node {i} splits on feature {int(feature[i])}, expected 0..{width - 1} "
            f"({holder} takes {width} features)",
        )


def _check_links(where: str, split: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """Split nodes' children inside the array, after their node, each node one parent."""
    n = len(split)
    index = np.arange(n)
    for side, child in (("left", left), ("right", right)):
        bad = split & ((child <= index) | (child >= n))
        if bad.any():
            i = _first(bad)
            raise _Refused(
                where,
                f"node {i} has {side} child {int(child[i])}, expected an index after the "
                f"node and below {n} (the tree's node count)",
            )
    linked = np.concatenate((left[split], right[split])).astype(np.int64)
    parents = np.bincount(linked, minlength=n)
    parents[0] += 1  # the root has no parent
    if (parents != 1).any():
        i = _first(parents != 1)
        count = int(parents[i]) - (1 if i == 0 else 0)
        raise _Refused(
            where, f"node {i} is the child of {count} nodes, expected exactly one (a tree)"
        )


def _flag(where: str, nodes: np.ndarray, field: str) -> None:
    bad = nodes[field] > 1
    if bad.any():
        i = _first(bad)
        raise _Refused(where, f"node {i} has {field} {int(nodes[field][i])}, expected 0 or 1")


# -- HistGradientBoosting ----------------------------------------------------------------


def _bitsets(where: str, predictor: Any, name: str) -> np.ndarray:
    from sklearn.ensemble._hist_gradient_boosting.common import X_BITSET_INNER_DTYPE

    array = getattr(predictor, name, None)
    if (
        not isinstance(array, np.ndarray)
        or array.ndim != 2
        or array.shape[1] != 8
        or array.dtype != X_BITSET_INNER_DTYPE
        or not array.flags.c_contiguous
    ):
        got = (
            f"{array.dtype} array of shape {array.shape}"
            if isinstance(array, np.ndarray)
            else type(array).__name__
        )
        raise _Refused(where, f"{name} is a {got}, expected a C-contiguous (k, 8) uint32 array")
    return array


def _check_predictor(
    where: str, predictor: Any, n_features: int, categorical: np.ndarray, n_bins: int
) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = getattr(predictor, "nodes", None)
    if (
        not isinstance(nodes, np.ndarray)
        or nodes.ndim != 1
        or nodes.dtype != PREDICTOR_RECORD_DTYPE
    ):
        got = f"{nodes.dtype}" if isinstance(nodes, np.ndarray) else type(nodes).__name__
        raise _Refused(where, f"nodes is {got}, expected a 1-d array of predictor records")
    if len(nodes) == 0:
        raise _Refused(where, "has no nodes")
    raw = _bitsets(where, predictor, "raw_left_cat_bitsets")
    binned = _bitsets(where, predictor, "binned_left_cat_bitsets")
    for field in ("is_leaf", "is_categorical", "missing_go_to_left"):
        _flag(where, nodes, field)
    split = nodes["is_leaf"] == 0
    _check_links(where, split, nodes["left"], nodes["right"])
    feature = nodes["feature_idx"]
    _check_features(where, split, feature, n_features, "the estimator")
    bad = split & (nodes["bin_threshold"] >= n_bins)
    if bad.any():
        i = _first(bad)
        raise _Refused(
            where,
            f"node {i} has bin_threshold {int(nodes['bin_threshold'][i])}, expected below "
            f"{n_bins} (the bin count)",
        )
    category = split & (nodes["is_categorical"] == 1)
    if category.any():
        safe_feature = np.where(category, feature, 0)
        bad = category & (categorical[safe_feature] == 0)
        if bad.any():
            i = _first(bad)
            raise _Refused(
                where,
                f"node {i} is a categorical split on feature {int(feature[i])}, which the "
                "bin mapper does not call categorical",
            )
        rows = min(len(raw), len(binned))
        bad = category & (nodes["bitset_idx"] >= rows)
        if bad.any():
            i = _first(bad)
            raise _Refused(
                where,
                f"node {i} has bitset_idx {int(nodes['bitset_idx'][i])}, expected below "
                f"{rows} (the bitset rows)",
            )


def _preprocessor_width(where: str, preprocessor: Any) -> int:
    """The row width HistGradientBoosting's own ColumnTransformer hands its trees.

    It is built by the estimator (categorical columns), so only what it builds is
    accepted: an OrdinalEncoder and an identity or ``check_array`` FunctionTransformer,
    each one column out per column in; anything else could change the width.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
    from sklearn.utils.validation import check_array

    if not isinstance(preprocessor, ColumnTransformer):
        raise _Refused(where, f"is a {type(preprocessor).__name__}, expected a ColumnTransformer")
    columns_in = _int(getattr(preprocessor, "n_features_in_", None), where, "n_features_in_")
    width = 0
    for i, step in enumerate(getattr(preprocessor, "transformers_", None) or []):
        name, transformer, columns = step
        if isinstance(transformer, str) and transformer == "drop":
            continue
        func = getattr(transformer, "func", None)
        one_to_one = (
            (isinstance(transformer, str) and transformer == "passthrough")
            or isinstance(transformer, OrdinalEncoder)
            or (
                isinstance(transformer, FunctionTransformer)
                and (func is None or getattr(func, "func", None) is check_array)
            )
        )
        if not one_to_one:
            raise _Refused(
                f"{where}.transformers_[{i}]",
                f"{name!r} is a {type(transformer).__name__}, expected the OrdinalEncoder "
                "or identity HistGradientBoosting builds",
            )
        selected = np.asarray(columns)
        if selected.dtype == bool and selected.shape == (columns_in,):
            width += int(selected.sum())
        elif selected.dtype.kind in "iu" and selected.ndim == 1:
            if ((selected < 0) | (selected >= columns_in)).any():
                raise _Refused(f"{where}.transformers_[{i}]", "selects a column out of range")
            width += len(selected)
        else:
            raise _Refused(
                f"{where}.transformers_[{i}]",
                f"selects columns by {selected.dtype}, expected a mask or indices",
            )
    return width


def _check_hist_gradient_boosting(where: str, model: Any, owned: set[int]) -> None:
    n_features = _int(getattr(model, "n_features_in_", None), where, "n_features_in_")
    mapper = getattr(model, "_bin_mapper", None)
    categorical = getattr(mapper, "is_categorical_", None)
    if (
        not isinstance(categorical, np.ndarray)
        or categorical.ndim != 1
        or len(categorical) != n_features
    ):
        raise _Refused(
            where,
            f"_bin_mapper.is_categorical_ is {categorical!r:.60}, expected an array of "
            f"{n_features} flags (one per feature)",
        )
    n_bins = _int(getattr(mapper, "n_bins", None), where, "_bin_mapper.n_bins")
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is not None:
        width = _preprocessor_width(f"{where}._preprocessor", preprocessor)
        if width != n_features:
            raise _Refused(
                f"{where}._preprocessor", f"gives {width} features, expected {n_features}"
            )
    predictors = getattr(model, "_predictors", None)
    if not isinstance(predictors, list):
        raise _Refused(where, f"_predictors is a {type(predictors).__name__}, expected a list")
    for i, iteration in enumerate(predictors):
        if not isinstance(iteration, list):
            raise _Refused(
                f"{where}._predictors[{i}]",
                f"is a {type(iteration).__name__}, expected a list",
            )
        for k, predictor in enumerate(iteration):
            path = f"{where}._predictors[{i}][{k}]"
            _check_predictor(path, predictor, n_features, categorical.astype(bool), n_bins)
            owned.add(id(predictor))


# -- decision trees ----------------------------------------------------------------------


def _check_tree(where: str, tree: Any, n_features: int | None) -> None:
    """A ``sklearn.tree._tree.Tree``; ``n_features`` is its estimator's width if known."""
    count = _int(tree.node_count, where, "node_count")
    capacity = _int(tree.capacity, where, "capacity")
    if not 1 <= count <= capacity:
        raise _Refused(
            where, f"node_count is {count}, expected 1..{capacity} (the node array's length)"
        )
    width = _int(tree.n_features, where, "n_features")
    if n_features is not None and width != n_features:
        raise _Refused(
            where, f"the tree takes {width} features, expected {n_features} (its estimator's)"
        )
    left = np.asarray(tree.children_left, dtype=np.int64)
    right = np.asarray(tree.children_right, dtype=np.int64)
    split = left != -1
    leaf_wrong = ~split & (right != -1)
    if leaf_wrong.any():
        i = _first(leaf_wrong)
        raise _Refused(
            where, f"node {i} has left child -1 (a leaf) but right child {int(right[i])}"
        )
    _check_links(where, split, left, right)
    feature = np.asarray(tree.feature, dtype=np.int64)
    _check_features(where, split, feature, width, "the tree")
    depth, frontier = 0, np.array([0])
    while True:
        frontier = frontier[split[frontier]]
        if not len(frontier):
            break
        frontier = np.concatenate((left[frontier], right[frontier]))
        depth += 1
    max_depth = _int(tree.max_depth, where, "max_depth")
    if depth > max_depth:
        raise _Refused(where, f"the tree is {depth} deep, but max_depth says {max_depth}")


def _width(where: str, estimator: Any) -> int:
    return _int(getattr(estimator, "n_features_in_", None), where, "n_features_in_")


def _check_ensemble(where: str, model: Any) -> None:
    """Sub-estimators of a fitted ensemble read rows as wide as the ensemble's."""
    from sklearn.ensemble import BaseEnsemble
    from sklearn.ensemble._bagging import BaseBagging
    from sklearn.ensemble._gb import BaseGradientBoosting

    if not isinstance(model, BaseEnsemble) or not hasattr(model, "estimators_"):
        return
    width = _width(where, model)
    estimators = model.estimators_
    if isinstance(model, BaseGradientBoosting):
        trees = _int(
            getattr(model, "n_trees_per_iteration_", None), where, "n_trees_per_iteration_"
        )
        if not isinstance(estimators, np.ndarray) or estimators.ndim != 2:
            raise _Refused(where, "estimators_ is not a 2-d array of trees")
        if estimators.shape[1] != trees:
            raise _Refused(
                where,
                f"estimators_ has {estimators.shape[1]} trees per stage, expected {trees}",
            )
        members = list(estimators.ravel())
    else:
        members = list(estimators)
    subsets = (
        getattr(model, "estimators_features_", None) if isinstance(model, BaseBagging) else None
    )
    for i, member in enumerate(members):
        path = f"{where}.estimators_[{i}]"
        if not hasattr(member, "tree_"):
            continue  # not a tree: its own checks (if any) run where the walk meets it
        expected = width
        if subsets is not None:
            subset = np.asarray(subsets[i])
            if subset.ndim != 1 or ((subset < 0) | (subset >= width)).any():
                raise _Refused(path, f"its feature subset is not within 0..{width - 1}")
            expected = len(subset)
        if _width(path, member) != expected:
            raise _Refused(
                path,
                f"takes {_width(path, member)} features, expected {expected} (the ensemble's)",
            )


# -- neighbour trees and distance metrics --------------------------------------------------


def _check_distance_metric(where: str, metric: Any) -> None:
    """A metric's weights are as wide as it says (Mahalanobis reads ``mat`` size x size)."""
    state = metric.__getstate__()
    vec, mat = np.asarray(state[1]), np.asarray(state[2])
    if vec.ndim != 1 or mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise _Refused(
            where,
            f"its weights have shapes {vec.shape} and {mat.shape}, expected a vector and a "
            "square matrix",
        )


def _check_binary_tree(where: str, tree: Any) -> None:
    """A KDTree or BallTree: every index its queries follow stays inside its arrays.

    The nodes form a complete binary tree (children ``2i+1``, ``2i+2``) whose ranges
    partition ``[0, n_samples)``: a query that adds whole nodes to a buffer of
    ``n_samples`` indices can never overrun it.
    """
    state = tree.__getstate__()
    data, order, nodes, bounds = (np.asarray(state[i]) for i in range(4))
    n_levels, n_nodes = _int(state[5], where, "n_levels"), _int(state[6], where, "n_nodes")
    if data.ndim != 2:
        raise _Refused(where, f"data has {data.ndim} dimensions, expected 2")
    n_samples, n_features = data.shape
    if order.shape != (n_samples,) or not np.array_equal(np.sort(order), np.arange(n_samples)):
        raise _Refused(where, f"idx_array is not a permutation of the {n_samples} samples")
    if not 1 <= n_levels <= 64 or n_nodes != 2**n_levels - 1 or nodes.shape != (n_nodes,):
        raise _Refused(
            where,
            f"has {len(nodes)} nodes, n_nodes {n_nodes} and n_levels {n_levels}, expected "
            "2**n_levels - 1 of each",
        )
    if bounds.ndim != 3 or bounds.shape[1:] != (n_nodes, n_features) or bounds.shape[0] < 1:
        raise _Refused(
            where, f"node_bounds has shape {bounds.shape}, expected (k, {n_nodes}, {n_features})"
        )
    start, end, leaf = (
        np.asarray(nodes[f], dtype=np.int64) for f in ("idx_start", "idx_end", "is_leaf")
    )
    if start[0] != 0 or end[0] != n_samples:
        raise _Refused(where, f"the root covers {start[0]}..{end[0]}, expected 0..{n_samples}")
    bad = (leaf > 1) | (leaf < 0) | (start < 0) | (start > end) | (end > n_samples)
    if bad.any():
        i = _first(bad)
        raise _Refused(
            where,
            f"node {i} covers {start[i]}..{end[i]} with is_leaf {leaf[i]}, expected a range "
            f"inside 0..{n_samples} and a 0/1 flag",
        )
    index = np.arange(n_nodes)
    split = leaf == 0
    if (split & (2 * index + 2 >= n_nodes)).any():
        i = _first(split & (2 * index + 2 >= n_nodes))
        raise _Refused(where, f"node {i} is not a leaf but has no children (of {n_nodes} nodes)")
    inner = index[split]
    first, second = 2 * inner + 1, 2 * inner + 2
    bad_split = (
        (start[first] != start[inner]) | (end[first] != start[second]) | (end[second] != end[inner])
    )
    if bad_split.any():
        i = int(inner[_first(bad_split)])
        raise _Refused(where, f"node {i}'s children do not split its range {start[i]}..{end[i]}")
    weights = state[12]
    if weights is not None and np.asarray(weights).shape != (n_samples,):
        raise _Refused(where, f"sample_weight is not one weight per sample ({n_samples})")
    _check_distance_metric(f"{where}.dist_metric", state[11])


# -- the walk ------------------------------------------------------------------------------


def _check(model: Any, name: str) -> None:
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import (
        BaseHistGradientBoosting,
    )
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.metrics import DistanceMetric
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree import BaseDecisionTree
    from sklearn.tree._tree import Tree

    owned: set[int] = set()
    predictors: list[tuple[str, Any]] = []
    for path, obj in _walk(model, name):
        if isinstance(obj, BaseHistGradientBoosting) and hasattr(obj, "_predictors"):
            _check_hist_gradient_boosting(path, obj, owned)
        elif isinstance(obj, BaseDecisionTree) and hasattr(obj, "tree_"):
            if not isinstance(obj.tree_, Tree):
                raise _Refused(f"{path}.tree_", f"is a {type(obj.tree_).__name__}, not a Tree")
            _check_tree(f"{path}.tree_", obj.tree_, _width(path, obj))
        elif isinstance(obj, Tree):
            _check_tree(path, obj, None)
        elif isinstance(obj, TreePredictor):
            predictors.append((path, obj))
        elif isinstance(obj, KDTree | BallTree):
            _check_binary_tree(path, obj)
        elif isinstance(obj, DistanceMetric):
            _check_distance_metric(path, obj)
        _check_ensemble(path, obj)
    for path, predictor in predictors:
        if id(predictor) not in owned:
            raise _Refused(
                path,
                "a TreePredictor outside a HistGradientBoosting estimator (nothing says how "
                "wide its rows are)",
            )


def check_tree_structures(model: Any, *, source: str = "the model") -> None:
    """Refuse ``model`` when a tree it holds could be walked out of bounds.

    ``source`` names where the model came from (a file) in the one-line error.
    """
    try:
        _check(model, type(model).__name__)
    except _Refused as refused:
        raise InvalidInputError(
            f"Refusing {source}: {refused}. The file is damaged or crafted; scikit-learn "
            "does not bounds-check these arrays, so it is not run",
            loc=source,
        ) from None
