from __future__ import annotations

import gc
import hashlib
import random
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.config import Settings
from modelyard.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError, StorageError
from modelyard.store.artifacts import ArtifactRef, ArtifactStore, check_artifact_path
from modelyard.tracking.client import TrackingClient

SEED = 20261128


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """An empty artifact store: a local folder, then fsspec's in-memory filesystem."""
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    memory = ArtifactStore(f"memory://modelyard-test-{uuid.uuid4().hex}")
    yield memory
    if memory.fs.exists(memory.root):
        memory.fs.rm(memory.root, recursive=True)


def _objects(store: ArtifactStore) -> list[str]:
    """Every stored object; the layout is objects/<2 hex>/<62 hex>."""
    root = f"{store.root}/objects"
    return sorted(store.fs.find(root)) if store.fs.exists(root) else []


def _temp_files(store: ArtifactStore) -> list[str]:
    root = f"{store.root}/tmp"
    return list(store.fs.find(root)) if store.fs.exists(root) else []


def _object_of(store: ArtifactStore, sha256: str) -> str:
    return f"{store.root}/objects/{sha256[:2]}/{sha256[2:]}"


def _corrupt(store: ArtifactStore, sha256: str, data: bytes = b"flipped bits") -> None:
    path = _object_of(store, sha256)
    assert store.fs.exists(path)
    store.fs.pipe_file(path, data)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- round trips -----------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096))
def test_put_get_round_trip(store: ArtifactStore, data: bytes) -> None:
    ref = store.put_bytes(data)
    assert ref == ArtifactRef(_sha(data), len(data))
    assert store.exists(ref.sha256)
    assert store.get_bytes(ref.sha256) == data
    assert store.fs.cat_file(_object_of(store, ref.sha256)) == data


def test_put_file_streams_large_files_in_chunks(store: ArtifactStore, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = rng.randbytes(5 * (1 << 20) // 2)  # 2.5 MiB: more than two read chunks
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    ref = store.put_file(source)
    assert ref == ArtifactRef(_sha(data), len(data)), f"seed {SEED}"
    assert store.get_bytes(ref.sha256) == data
    # the same content through put_bytes lands at the same address
    assert store.put_bytes(data) == ref
    assert len(_objects(store)) == 1


def test_identical_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"same")
    (tmp_path / "b.txt").write_bytes(b"same")
    refs = {
        store.put_bytes(b"same"),
        store.put_file(tmp_path / "a.txt"),
        store.put_file(tmp_path / "b.txt"),
        store.put_bytes(b"same"),
    }
    assert refs == {ArtifactRef(_sha(b"same"), 4)}
    store.put_bytes(b"different")
    assert _objects(store) == sorted(
        [_object_of(store, _sha(b"same")), _object_of(store, _sha(b"different"))]
    )
    assert _temp_files(store) == []


def test_the_empty_artifact_is_stored(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"")
    assert ref == ArtifactRef(_sha(b""), 0)
    assert store.get_bytes(ref.sha256) == b""


def test_get_file_writes_the_verified_content(store: ArtifactStore, tmp_path: Path) -> None:
    data = random.Random(SEED).randbytes(3000)
    ref = store.put_bytes(data)
    dest = tmp_path / "out" / "nested" / "model.bin"
    assert store.get_file(ref.sha256, dest) == dest
    assert dest.read_bytes() == data
    # only the file itself is left in the folder: no partial download beside it
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]


# -- integrity -------------------------------------------------------------------------


def test_corrupted_bytes_are_refused_naming_the_artifact(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"the real weights")
    _corrupt(store, ref.sha256)
    with pytest.raises(
        ArtifactIntegrityError,
        match=rf"Artifact 'models/model\.pkl' is corrupted: expected sha256 {ref.sha256}, "
        rf"the stored bytes hash to {_sha(b'flipped bits')}",
    ):
        store.get_bytes(ref.sha256, name="models/model.pkl")
    with pytest.raises(
        ArtifactIntegrityError, match=rf"Artifact {ref.sha256[:12]}\.\.\. is corrupted"
    ):
        store.get_bytes(ref.sha256)


def test_get_file_of_corrupted_bytes_leaves_the_destination_untouched(
    store: ArtifactStore, tmp_path: Path
) -> None:
    ref = store.put_bytes(b"the real weights")
    _corrupt(store, ref.sha256)
    dest = tmp_path / "out" / "model.pkl"
    dest.parent.mkdir()
    dest.write_bytes(b"previous download")
    with pytest.raises(ArtifactIntegrityError, match=r"Artifact 'model\.pkl' is corrupted"):
        store.get_file(ref.sha256, dest, name="model.pkl")
    assert dest.read_bytes() == b"previous download"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.pkl"]
    fresh = tmp_path / "fresh" / "model.pkl"
    with pytest.raises(ArtifactIntegrityError):
        store.get_file(ref.sha256, fresh, name="model.pkl")
    assert list(fresh.parent.iterdir()) == []


def test_a_missing_object_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    absent = _sha(b"never stored")
    assert not store.exists(absent)
    with pytest.raises(
        NotFoundError, match=rf"Artifact 'data\.csv' \(sha256 {absent[:12]}\.\.\.\) is missing"
    ):
        store.get_bytes(absent, name="data.csv")
    with pytest.raises(NotFoundError, match=r"is missing from "):
        store.get_file(absent, tmp_path / "out" / "data.csv")
    assert not (tmp_path / "out" / "data.csv").exists()


@pytest.mark.parametrize("sha256", ["", "abc", "../" * 21 + "x", "A" * 64, "g" * 64, "0" * 65])
def test_an_address_that_is_not_a_sha256_is_refused(store: ArtifactStore, sha256: str) -> None:
    with pytest.raises(InvalidInputError, match=r"Expected a sha256 hex digest, .* - at sha256$"):
        store.get_bytes(sha256)
    with pytest.raises(InvalidInputError, match=r"- at sha256$"):
        store.exists(sha256)


# -- failed writes ---------------------------------------------------------------------


def test_a_failed_write_leaves_nothing_behind(store: ArtifactStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first half of the file, "
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="the source went away"):
        store._put(chunks())
    assert _temp_files(store) == []
    assert _objects(store) == []


def test_put_file_of_a_missing_path_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"No file at .*missing\.bin"):
        store.put_file(tmp_path / "missing.bin")
    assert _temp_files(store) == []
    assert _objects(store) == []


def test_a_storage_failure_is_a_storage_error_and_releases_the_source(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts" / "tmp").write_text("a file where the temp folder belongs")
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StorageError, match=r"Artifact store .*artifacts failed: "):
            store.put_file(source)
        gc.collect()
    assert [w.message for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _objects(store) == []


# -- logical paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a/b/..",
        "..",
        "..\\x",
        "C:\\x",
        "c:x",
        "\\\\server\\share",
    ],
)
def test_paths_that_could_escape_are_refused(path: str) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"Expected a relative path inside the store, .* - at artifact_path$",
    ):
        check_artifact_path(path)


@pytest.mark.parametrize("path", ["", ".", "./", "a\x00b", "\x00"])
def test_empty_paths_and_nul_bytes_are_refused(path: str) -> None:
    with pytest.raises(
        InvalidInputError, match=r"Expected a non-empty relative path, .* - at where$"
    ):
        check_artifact_path(path, loc="where")


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("model.pkl", "model.pkl"),
        ("models/v1/model.pkl", "models/v1/model.pkl"),
        ("models\\v1\\model.pkl", "models/v1/model.pkl"),
        ("a//b/./c/", "a/b/c"),
        ("./plots/roc.png", "plots/roc.png"),
        ("..hidden/file", "..hidden/file"),
        ("résumé ü/数据.csv", "résumé ü/数据.csv"),
    ],
)
def test_safe_paths_are_normalised(path: str, normal: str) -> None:
    assert check_artifact_path(path) == normal


@given(st.text(min_size=1, max_size=40))
def test_an_accepted_path_stays_inside_the_store(path: str) -> None:
    try:
        normal = check_artifact_path(path)
    except InvalidInputError:
        return
    root = Path("/store/root")
    assert (root / normal).resolve().is_relative_to(root)
    assert normal and "\x00" not in normal and not normal.startswith("/")
    assert check_artifact_path(normal) == normal


def test_repr_hides_credentials() -> None:
    store = ArtifactStore("memory://KEY:" + "SECRET" + "@bucket/prefix")
    assert repr(store) == "ArtifactStore('memory://KEY:***@bucket/prefix')"


# -- a run's artifacts through the tracking client -----------------------------------------


@pytest.fixture
def tracked(settings: Settings, store: ArtifactStore) -> Iterator[TrackingClient]:
    """A tracking client on each metadata backend and each artifact store."""
    c = TrackingClient(settings, artifacts=store)
    yield c
    c.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_run_artifacts_round_trip(tracked: TrackingClient, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    src = tmp_path / "src"
    files = {
        "model.pkl": rng.randbytes(2048),
        "plots/roc.png": rng.randbytes(512),
        "plots/pr.png": rng.randbytes(512),
        "data/splits/train.csv": b"a,b\n1,2\n",
        "data/splits/copy.csv": b"a,b\n1,2\n",  # same bytes as train.csv
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    with tracked.start_run("churn") as run:
        single = tracked.log_artifact(run.id, src / "model.pkl", "models/model.pkl")
        logged = tracked.log_artifacts(run.id, src / "plots", "figures")
        logged += tracked.log_artifacts(run.id, src / "data")
    assert (single.path, single.sha256, single.size) == (
        "models/model.pkl",
        _sha(files["model.pkl"]),
        2048,
    )
    expected = {"models/model.pkl": files["model.pkl"]}
    expected |= {f"figures/{n}": files[f"plots/{n}"] for n in ("roc.png", "pr.png")}
    expected |= {n.removeprefix("data/"): files[n] for n in files if n.startswith("data/")}
    listed = tracked.list_artifacts(run.id)
    assert [e.path for e in listed] == sorted(expected)
    assert {e.path: (e.sha256, e.size) for e in listed} == {
        p: (_sha(d), len(d)) for p, d in expected.items()
    }
    assert len(logged) == 4
    # identical files share one object
    assert len(_objects(tracked.artifacts)) == len(set(expected.values()))

    out = tracked.download_artifacts(run.id, tmp_path / "all")
    assert _tree(out) == expected
    figures = tracked.download_artifacts(run.id, tmp_path / "some", "figures")
    assert figures == tmp_path / "some" / "figures"
    assert _tree(tmp_path / "some") == {
        p: d for p, d in expected.items() if p.startswith("figures/")
    }
    assert tracked.load_artifact_bytes(run.id, "models/model.pkl") == files["model.pkl"]


def test_logging_a_path_again_replaces_it(tracked: TrackingClient, tmp_path: Path) -> None:
    source = tmp_path / "metrics.json"
    with tracked.start_run("churn") as run:
        source.write_bytes(b'{"auc": 0.8}')
        tracked.log_artifact(run.id, source)
        source.write_bytes(b'{"auc": 0.9}')
        tracked.log_artifact(run.id, source)
    [entry] = tracked.list_artifacts(run.id)
    assert (entry.path, entry.sha256) == ("metrics.json", _sha(b'{"auc": 0.9}'))
    assert tracked.load_artifact_bytes(run.id, "metrics.json") == b'{"auc": 0.9}'


def test_a_corrupted_run_artifact_fails_download_naming_its_path(
    tracked: TrackingClient, tmp_path: Path
) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights")
    with tracked.start_run("churn") as run:
        entry = tracked.log_artifact(run.id, source, "models/model.pkl")
    _corrupt(tracked.artifacts, entry.sha256)
    with pytest.raises(ArtifactIntegrityError, match=r"Artifact 'models/model\.pkl' is corrupted"):
        tracked.download_artifacts(run.id, tmp_path / "out")
    assert not (tmp_path / "out" / "models" / "model.pkl").exists()
    with pytest.raises(ArtifactIntegrityError, match=r"Artifact 'models/model\.pkl' is corrupted"):
        tracked.load_artifact_bytes(run.id, "models/model.pkl")


def test_a_deleted_run_artifact_is_not_found(tracked: TrackingClient, tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights")
    with tracked.start_run("churn") as run:
        entry = tracked.log_artifact(run.id, source)
    tracked.artifacts.fs.rm(_object_of(tracked.artifacts, entry.sha256))
    with pytest.raises(NotFoundError, match=r"Artifact 'model\.pkl' \(sha256 .*\) is missing"):
        tracked.download_artifacts(run.id, tmp_path / "out")


def test_run_artifact_paths_are_checked(tracked: TrackingClient, tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights")
    with tracked.start_run("churn") as run:
        with pytest.raises(InvalidInputError, match=r"got '\.\./escape\.pkl' - at artifact_path"):
            tracked.log_artifact(run.id, source, "../escape.pkl")
        with pytest.raises(InvalidInputError, match=r"got '/abs' - at artifact_path"):
            tracked.log_artifacts(run.id, tmp_path, "/abs")
        with pytest.raises(NotFoundError, match=r"No file at .*nope\.pkl"):
            tracked.log_artifact(run.id, tmp_path / "nope.pkl")
    assert tracked.list_artifacts(run.id) == []
    with pytest.raises(NotFoundError, match=r"has no artifact at 'missing'"):
        tracked.download_artifacts(run.id, tmp_path / "out", "missing")


def test_put_file_of_a_folder_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(InvalidInputError, match="Expected a file, got the folder"):
        store.put_file(tmp_path)
