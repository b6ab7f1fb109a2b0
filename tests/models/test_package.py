"""Model packages: what ``save_package`` writes and what ``load_package`` verifies.

Every test runs on a local artifact folder and on ``memory://``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from modelyard.config import DEFAULT_TRUSTED_TYPES
from modelyard.errors import ArtifactIntegrityError, InvalidInputError, ModelError
from modelyard.models.flavors import LoadOptions
from modelyard.models.manifest import MANIFEST_NAME, decode_manifest, encode_manifest
from modelyard.models.package import (
    EXAMPLE_FILE,
    HOLDOUT_FILE,
    HOLDOUT_ROWS,
    PROFILE_FILE,
    SavedPackage,
    load_package,
    read_holdout,
    read_manifest,
    save_package,
)
from modelyard.models.signature import infer_signature
from modelyard.store.artifacts import ArtifactStore

SEED = 7
OPTIONS = LoadOptions(trusted_types=DEFAULT_TRUSTED_TYPES)


def _data(rows: int = 120, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(size=rows),
            "spend": rng.gamma(2.0, size=rows),
            "visits": rng.integers(0, 20, size=rows),
        }
    )
    labels = (frame["tenure"] + 0.3 * frame["spend"] > 0.5).astype(int).to_numpy()
    return frame, labels


def _classifier(rows: int = 120, seed: int = SEED) -> tuple[LogisticRegression, pd.DataFrame]:
    frame, labels = _data(rows, seed)
    return LogisticRegression().fit(frame, labels), frame


@pytest.fixture(params=["local", "memory"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    store = ArtifactStore(f"memory://packages-{uuid.uuid4().hex}")
    yield store
    if store.fs.exists(store.root):  # the memory filesystem is shared by the process
        store.fs.rm(store.root, recursive=True)


def _overwrite(artifacts: ArtifactStore, sha256: str, data: bytes) -> None:
    """Replace the stored bytes of ``sha256`` (the store's layout: objects/ab/cdef...)."""
    artifacts.fs.pipe_file(f"{artifacts.root}/objects/{sha256[:2]}/{sha256[2:]}", data)


def _parquet(artifacts: ArtifactStore, package: SavedPackage, path: str) -> pd.DataFrame:
    entry = package.manifest.file(path)
    return pd.read_parquet(io.BytesIO(artifacts.get_bytes(entry.sha256)))


# -- what a package holds -------------------------------------------------------------------


def test_package_id_is_the_sha256_of_the_manifest(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, training_frame=frame)
    stored = artifacts.get_bytes(package.id)
    assert hashlib.sha256(stored).hexdigest() == package.id
    assert encode_manifest(package.manifest) == (stored, package.id)
    assert decode_manifest(stored, expected_sha256=package.id) == package.manifest
    assert read_manifest(artifacts, package.id) == package.manifest


def test_manifest_describes_the_model(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    manifest = save_package(model, artifacts, training_frame=frame, metrics={"auc": 0.9}).manifest
    assert manifest.flavor == "sklearn"
    assert manifest.model_class == "sklearn.linear_model._logistic.LogisticRegression"
    assert (manifest.task, manifest.classes) == ("classification", ["0", "1"])
    assert [(o.name, o.dtype) for o in manifest.outputs] == [
        ("label", "string"),
        ("proba_0", "float"),
        ("proba_1", "float"),
    ]
    assert manifest.signature == infer_signature(frame)
    assert manifest.metrics == {"auc": 0.9}
    assert (manifest.input_example, manifest.holdout, manifest.profile) == (
        EXAMPLE_FILE,
        HOLDOUT_FILE,
        PROFILE_FILE,
    )
    assert manifest.needs_trust is False


def test_every_listed_file_is_stored_with_its_sha(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    manifest = save_package(model, artifacts, training_frame=frame).manifest
    assert [f.path for f in manifest.files] == [
        "model.skops",
        EXAMPLE_FILE,
        HOLDOUT_FILE,
        PROFILE_FILE,
    ]
    for entry in manifest.files:
        assert artifacts.exists(entry.sha256), entry.path
        data = artifacts.get_bytes(entry.sha256)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert len(data) == entry.size


def test_requirements_are_the_running_versions(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    requirements = save_package(model, artifacts, training_frame=frame).manifest.requirements
    for name in ("numpy", "pandas", "pyarrow", "modelyard"):
        assert requirements[name] == importlib.metadata.version(name)


def test_requirements_name_the_flavors_libraries(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    requirements = save_package(model, artifacts, training_frame=frame).manifest.requirements
    for name in ("scikit-learn", "skops", "numpy"):
        assert requirements.get(name) == importlib.metadata.version(name)


def test_input_example_is_the_first_five_rows(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    # the example follows the signature's column order, not the frame's
    shuffled = frame[["visits", "tenure", "spend"]]
    package = save_package(model, artifacts, training_frame=frame)
    example = _parquet(artifacts, package, EXAMPLE_FILE)
    pd.testing.assert_frame_equal(example, frame.head(5))
    other = save_package(
        model, artifacts, training_frame=shuffled, signature=infer_signature(frame)
    )
    pd.testing.assert_frame_equal(_parquet(artifacts, other, EXAMPLE_FILE), frame.head(5))


def test_holdout_is_at_most_500_rows_with_the_models_scores(artifacts: ArtifactStore) -> None:
    model, frame = _classifier(rows=HOLDOUT_ROWS + 300)
    package = save_package(model, artifacts, training_frame=frame)
    features, scores = read_holdout(artifacts, package.manifest)
    assert HOLDOUT_ROWS == 500
    assert len(features) == HOLDOUT_ROWS
    assert list(features.columns) == list(frame.columns)
    # every held-out row is a training row, none twice
    keys = set(map(tuple, frame.to_numpy().tolist()))
    held = list(map(tuple, features.to_numpy().tolist()))
    assert len(set(held)) == HOLDOUT_ROWS
    assert set(held) <= keys
    np.testing.assert_allclose(scores, model.predict_proba(features), rtol=1e-12, atol=0)


def test_small_training_frames_are_held_out_whole(artifacts: ArtifactStore) -> None:
    model, frame = _classifier(rows=60)
    package = save_package(model, artifacts, training_frame=frame)
    features, scores = read_holdout(artifacts, package.manifest)
    pd.testing.assert_frame_equal(features, frame)
    np.testing.assert_allclose(scores, model.predict_proba(frame), rtol=1e-12, atol=0)


def test_a_given_holdout_frame_is_used(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    holdout, _ = _data(rows=40, seed=SEED + 1)
    package = save_package(
        model, artifacts, training_frame=frame, holdout_frame=holdout.assign(extra=1)
    )
    features, scores = read_holdout(artifacts, package.manifest)
    pd.testing.assert_frame_equal(features, holdout)  # the extra column is dropped
    np.testing.assert_allclose(scores, model.predict_proba(holdout), rtol=1e-12, atol=0)


def test_a_regressor_stores_its_predictions(artifacts: ArtifactStore) -> None:
    frame, _ = _data()
    target = 2.0 * frame["tenure"] - frame["spend"]
    model = HistGradientBoostingRegressor(max_iter=10, max_leaf_nodes=8, random_state=SEED).fit(
        frame, target
    )
    package = save_package(model, artifacts, training_frame=frame)
    assert (package.manifest.task, package.manifest.classes) == ("regression", None)
    assert [o.name for o in package.manifest.outputs] == ["prediction"]
    features, scores = read_holdout(artifacts, package.manifest)
    np.testing.assert_allclose(scores[:, 0], model.predict(features), rtol=1e-12, atol=0)
    loaded = load_package(artifacts, package.id, OPTIONS)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


# -- content addressing ----------------------------------------------------------------------


def test_identical_content_is_stored_once(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    first = save_package(model, artifacts, training_frame=frame).manifest
    second = save_package(model, artifacts, training_frame=frame).manifest
    # the data files are deterministic: the same bytes, so the same objects
    for path in (EXAMPLE_FILE, HOLDOUT_FILE, PROFILE_FILE):
        assert first.file(path) == second.file(path), path


# -- loading and verification ----------------------------------------------------------------


def test_load_package_predicts_like_the_model(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, training_frame=frame)
    loaded = load_package(artifacts, package.id, OPTIONS)
    assert (loaded.id, loaded.manifest) == (package.id, package.manifest)
    assert type(loaded.native) is LogisticRegression
    reordered = frame[["visits", "spend", "tenure"]]  # the signature puts columns in order
    np.testing.assert_array_equal(loaded.predict(reordered), model.predict(frame))
    np.testing.assert_array_equal(loaded.scores(frame), model.predict_proba(frame))
    assert (
        loaded.predict(frame.head(3).to_dict("list")).tolist()
        == model.predict(frame.head(3)).tolist()
    )
    with pytest.raises(InvalidInputError, match="missing column 'visits'"):
        loaded.predict(frame.drop(columns=["visits"]))


def test_load_package_leaves_verified_files_in_a_folder(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, training_frame=frame)
    load_package(artifacts, package.id, OPTIONS, folder=tmp_path / "out")
    for entry in package.manifest.files:
        data = (tmp_path / "out" / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256


@pytest.mark.parametrize("path", ["model.skops", EXAMPLE_FILE, HOLDOUT_FILE, PROFILE_FILE])
def test_a_tampered_file_is_refused_by_its_path(artifacts: ArtifactStore, path: str) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, training_frame=frame)
    entry = package.manifest.file(path)
    original = artifacts.get_bytes(entry.sha256)
    _overwrite(artifacts, entry.sha256, original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(
        ArtifactIntegrityError, match=rf"^Artifact '{path}' is corrupted: expected sha256"
    ):
        load_package(artifacts, package.id, OPTIONS)


def test_a_tampered_manifest_is_refused(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, training_frame=frame)
    data = artifacts.get_bytes(package.id)
    _overwrite(artifacts, package.id, data.replace(b"sklearn", b"sklearm", 1))
    with pytest.raises(ArtifactIntegrityError, match=rf"^Artifact '{MANIFEST_NAME}' is corrupted"):
        load_package(artifacts, package.id, OPTIONS)


# -- refusals ---------------------------------------------------------------------------------


def test_no_training_frame_and_no_signature_is_refused(artifacts: ArtifactStore) -> None:
    model, _ = _classifier()
    with pytest.raises(
        InvalidInputError, match=r"pass no_signature=True .* - at training_frame$"
    ) as caught:
        save_package(model, artifacts)
    assert "training_frame=" in str(caught.value)


def test_no_signature_packages_the_model_alone(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    package = save_package(model, artifacts, no_signature=True)
    manifest = package.manifest
    assert manifest.signature is None
    assert [f.path for f in manifest.files] == ["model.skops"]
    assert (manifest.input_example, manifest.holdout, manifest.profile) == (None, None, None)
    loaded = load_package(artifacts, package.id, OPTIONS)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    with pytest.raises(InvalidInputError, match="no held-out rows"):
        read_holdout(artifacts, manifest)


def test_a_given_signature_needs_no_training_frame(artifacts: ArtifactStore) -> None:
    model, frame = _classifier()
    signature = infer_signature(frame)
    package = save_package(model, artifacts, signature=signature)
    assert package.manifest.signature == signature
    assert package.manifest.holdout is None
    loaded = load_package(artifacts, package.id, OPTIONS)
    with pytest.raises(InvalidInputError, match="unexpected column 'extra'"):
        loaded.predict(frame.assign(extra=1))


def test_a_model_that_fails_on_its_training_rows_is_a_model_error(
    artifacts: ArtifactStore,
) -> None:
    model, frame = _classifier()
    # the frame lacks a column the model was fitted on: predict_proba raises
    with pytest.raises(ModelError, match="failed to predict on its own training rows: ") as caught:
        save_package(model, artifacts, training_frame=frame.drop(columns=["visits"]))
    assert isinstance(caught.value.__cause__, ValueError)


class _Broken(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Fits, but cannot predict."""

    def fit(self, features: pd.DataFrame, labels: np.ndarray) -> _Broken:
        self.classes_ = np.unique(labels)
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("weights are NaN")


def test_an_unknown_model_type_is_refused(artifacts: ArtifactStore) -> None:
    frame, labels = _data()
    with pytest.raises(InvalidInputError, match=r"No flavor stores a .*_Broken.* - at model"):
        save_package(_Broken().fit(frame, labels), artifacts, training_frame=frame)
    with pytest.raises(ModelError, match="weights are NaN"):
        save_package(
            _Broken().fit(frame, labels), artifacts, training_frame=frame, flavor="sklearn"
        )


def test_a_numpy_training_frame_is_packaged(artifacts: ArtifactStore) -> None:
    frame, labels = _data()
    array = frame.to_numpy()
    model = LogisticRegression().fit(array, labels)
    package = save_package(model, artifacts, training_frame=array)
    assert package.manifest.signature is not None
