"""``modelyard gc``: stale temporary files and unreferenced blobs go; nothing referenced does.

A real ``log_model`` is SIGKILLed mid-write and the collector removes what it left; the
store-level and project-level properties are generated (hypothesis) over random sets of
referenced and unreferenced blobs, and after every collection every registered model
still loads and every run artifact still downloads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from modelyard.cli.app import main
from modelyard.config import init_project, load_settings
from modelyard.errors import InvalidInputError, ModelError, StorageError
from modelyard.registry.client import ModelRegistry
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.gc import collect_garbage, parse_grace
from modelyard.tracking.client import TrackingClient

OLD = 10 * 24 * 3600.0  # older than the default grace period (24 h)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _age_tree(root: Path, seconds: float) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            _age(path, seconds)


def _objects(store: ArtifactStore) -> set[str]:
    root = Path(store.root) / "objects"
    return {p.parent.name + p.name for p in root.rglob("*") if p.is_file()}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(COLUMNS="200", **extra)
    return env


# -- a killed log_model ------------------------------------------------------------------

_LOGGER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from sklearn.tree import DecisionTreeRegressor
    from modelyard.config import load_settings
    from modelyard.registry.client import ModelRegistry

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x": rng.normal(size=200_000)})
    model = DecisionTreeRegressor(random_state=0).fit(X, rng.normal(size=200_000))
    print("fitted", model.tree_.node_count, flush=True)
    with ModelRegistry(load_settings(sys.argv[1])) as registry:
        registry.log_model(model, name="big", training_frame=X.head(200))
    print("logged", flush=True)
    """
)


def _leftovers(scratch: Path, store_tmp: Path) -> list[Path]:
    found = [p for p in scratch.rglob("*") if p.is_file()]
    if store_tmp.exists():
        found += [p for p in store_tmp.rglob("*") if p.is_file()]
    return found


def _gc(project: Path, scratch: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.app", "gc", "--json", *args],
        capture_output=True,
        text=True,
        cwd=project,
        env=_env(TMPDIR=str(scratch)),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_gc_removes_what_a_sigkilled_log_model_left(tmp_path: Path) -> None:
    project = tmp_path / "project"
    init_project(project)
    settings_ = load_settings(project, environ={})
    frame = pd.DataFrame({"x": np.linspace(-1, 1, 40)})
    with ModelRegistry(settings_) as registry:
        kept = registry.log_model(
            LogisticRegression().fit(frame, frame.x > 0), name="kept", training_frame=frame
        )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store_tmp = Path(ArtifactStore(settings_.artifacts).root) / "tmp"
    log = tmp_path / "writer.log"
    with log.open("w") as output:
        writer = subprocess.Popen(
            [sys.executable, "-c", _LOGGER, str(project)],
            env=_env(TMPDIR=str(scratch), OMP_NUM_THREADS="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and writer.poll() is None:
                if sum(p.stat().st_size for p in _leftovers(scratch, store_tmp)) >= 10_000_000:
                    break
                time.sleep(0.005)
            assert writer.poll() is None, log.read_text()
            writer.send_signal(signal.SIGKILL)  # as the OOM killer or a CI timeout does
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=30)
    left = _leftovers(scratch, store_tmp)
    left_bytes = sum(p.stat().st_size for p in left)
    assert left_bytes >= 10_000_000, left  # what nothing removed before `modelyard gc`

    young = _gc(project, scratch)  # the default grace: a file this new may be a live write
    assert young["removed"] == [] and young["kept"]["younger_than_grace"] >= 1
    dry = _gc(project, scratch, "--dry-run", "--grace", "0")
    assert {i["kind"] for i in dry["would_remove"]} & {"scratch", "temp"}
    assert dry["bytes"] >= left_bytes
    assert sum(p.stat().st_size for p in _leftovers(scratch, store_tmp)) == left_bytes

    done = _gc(project, scratch, "--grace", "0")
    assert done["bytes"] == dry["bytes"]
    assert sorted(i["path"] for i in done["removed"]) == sorted(
        i["path"] for i in dry["would_remove"]
    )
    assert _leftovers(scratch, store_tmp) == []
    with ModelRegistry(settings_) as registry:
        assert registry.load("kept/1").id == kept.package_id


def test_a_live_writers_scratch_folder_is_never_removed(tmp_path: Path) -> None:
    """Old files in a scratch folder of a process that still runs (this one) stay."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    mine = tmp_path / "scratch" / f"modelyard-package-{os.getpid()}-abc"
    mine.mkdir(parents=True)
    (mine / "model.skops").write_bytes(b"x" * 1000)
    _age_tree(mine, OLD)
    _age(mine, OLD)
    report = collect_garbage(store, set(), grace_s=0, scratch_dir=tmp_path / "scratch")
    assert report.items == [] and mine.exists()


def test_a_killed_servers_scratch_folder_goes_a_live_ones_stays(tmp_path: Path) -> None:
    """``modelyard serve`` keeps its temp files in ``modelyard-serve-<pid>-*``: one of a
    process that is gone is collected like packaging's; this process's stays."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    scratch = tmp_path / "scratch"
    dead = scratch / "modelyard-serve-999999999-abc"
    live = scratch / f"modelyard-serve-{os.getpid()}-def"
    for folder in (dead, live):
        (folder / "metrics").mkdir(parents=True)
        (folder / "failures").write_bytes(b"")
        (folder / "metrics" / "counter_1.db").write_bytes(b"x" * 500)
        _age_tree(folder, OLD)
        _age(folder, OLD)
    report = collect_garbage(store, set(), grace_s=0, scratch_dir=scratch)
    assert [(i.kind, Path(i.path).name, i.bytes) for i in report.items] == [
        ("scratch", dead.name, 500)
    ]
    assert not dead.exists() and live.exists()


# -- log_model on a normal exception ----------------------------------------------------


class _Broken(DummyClassifier):
    def predict_proba(self, X: Any) -> Any:
        raise RuntimeError("this model cannot predict")


def test_log_model_that_fails_leaves_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    init_project(tmp_path / "project")
    frame = pd.DataFrame({"x": np.arange(20.0)})
    with ModelRegistry(load_settings(tmp_path / "project", environ={})) as registry:
        with pytest.raises(ModelError, match="cannot predict"):
            registry.log_model(
                _Broken().fit(frame, frame.x > 5), training_frame=frame, flavor="sklearn"
            )
        store_tmp = Path(registry.artifacts.root) / "tmp"
    assert list(scratch.iterdir()) == []
    assert not store_tmp.exists() or list(store_tmp.iterdir()) == []


# -- generated: the store alone ------------------------------------------------------------

_blob_sets = st.lists(
    st.tuples(st.binary(min_size=1, max_size=64), st.booleans(), st.booleans()),
    min_size=0,
    max_size=12,
    unique_by=lambda t: t[0],
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blobs=_blob_sets, dry_first=st.booleans())
def test_generated_blob_sets_only_unreferenced_old_blobs_go(
    tmp_path_factory: pytest.TempPathFactory,
    blobs: list[tuple[bytes, bool, bool]],
    dry_first: bool,
) -> None:
    root = tmp_path_factory.mktemp("store")
    store = ArtifactStore(str(root / "artifacts"))
    referenced, old, sizes = set(), set(), {}
    for data, is_referenced, is_old in blobs:
        ref = store.put_bytes(data)
        sizes[ref.sha256] = ref.size
        if is_referenced:
            referenced.add(ref.sha256)
        if is_old:
            old.add(ref.sha256)
            _age(Path(store._object_path(ref.sha256)), OLD)
    everything = set(sizes)
    garbage = (everything - referenced) & old
    if dry_first:
        dry = collect_garbage(store, referenced, dry_run=True, scratch_dir=root / "none")
        assert {Path(i.path).parent.name + Path(i.path).name for i in dry.items} == garbage
        assert dry.bytes == sum(sizes[s] for s in garbage)
        assert _objects(store) == everything
    report = collect_garbage(store, referenced, scratch_dir=root / "none")
    assert _objects(store) == everything - garbage
    assert report.bytes == sum(sizes[s] for s in garbage)
    assert report.kept_referenced == len(referenced)
    for sha in referenced:
        assert store.get_bytes(sha)  # verified read: every referenced blob intact


def test_a_blob_a_writer_reuses_looks_new_to_the_collector(tmp_path: Path) -> None:
    """Stored again (deduplicated) just before the collection: it is not collected."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.put_bytes(b"about to be referenced again")
    _age(Path(store._object_path(ref.sha256)), OLD)
    assert store.put_bytes(b"about to be referenced again") == ref  # a writer reuses it
    report = collect_garbage(store, set(), scratch_dir=tmp_path / "none")
    assert report.items == [] and store.exists(ref.sha256)


def test_a_blob_left_in_the_trash_by_a_killed_collection_goes_back(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.put_bytes(b"referenced")
    object_path = Path(store._object_path(ref.sha256))
    trash = Path(store.root) / "gc-trash"
    trash.mkdir()
    object_path.rename(trash / f"{ref.sha256}.deadbeef")  # killed between rename and look
    collect_garbage(store, {ref.sha256}, scratch_dir=tmp_path / "none")
    assert store.get_bytes(ref.sha256) == b"referenced"


def test_old_temporary_files_go_and_fresh_ones_stay(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    tmp = Path(store.root) / "tmp"
    tmp.mkdir()
    (tmp / "stale").write_bytes(b"s" * 2048)
    (tmp / "writing").write_bytes(b"w" * 10)
    _age(tmp / "stale", OLD)
    report = collect_garbage(store, set(), scratch_dir=tmp_path / "none")
    assert [(i.kind, Path(i.path).name, i.bytes) for i in report.items] == [("temp", "stale", 2048)]
    assert sorted(p.name for p in tmp.iterdir()) == ["writing"]


# -- generated: a whole project ------------------------------------------------------------


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModelRegistry, TrackingClient, Path]]:
    """A project on SQLite; scratch folders in the test's own temporary folder."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    root = tmp_path / "project"
    init_project(root)
    settings_ = load_settings(root, environ={})
    with ModelRegistry(settings_) as registry, TrackingClient(settings_) as tracking:
        yield registry, tracking, tmp_path


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("model"), st.booleans(), st.integers(0, 3)),  # registered?, seed
        st.tuples(st.just("artifact"), st.booleans(), st.integers(0, 3)),  # its own run?
        st.tuples(st.just("orphan"), st.booleans(), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=_actions)
def test_generated_projects_keep_everything_referenced(
    project: tuple[ModelRegistry, TrackingClient, Path], actions: list[tuple[str, bool, int]]
) -> None:
    """Models (registered or only logged), run artifacts (equal contents too) and orphans;
    then everything ages past any grace period and gc runs with none: every model loads,
    every artifact downloads, and only the orphans are gone."""
    registry, tracking, tmp = project
    frame = pd.DataFrame({"x": np.linspace(-1.0, 1.0, 12)})
    packages, versions, artifacts, orphans = [], [], [], set()
    for kind, flag, seed in actions:
        if kind == "model":
            model = DummyClassifier(strategy="prior").fit(frame, (frame.x > seed / 4).astype(int))
            logged = registry.log_model(model, name="m" if flag else None, training_frame=frame)
            packages.append(logged.package_id)
            if logged.ref is not None:
                versions.append((logged.ref, logged.package_id))
        elif kind == "artifact":
            file = tmp / f"artifact-{seed}.txt"
            file.write_text(f"artifact {seed}", encoding="utf-8")
            with tracking.start_run("gc", name=f"r{seed}-{flag}") as run:
                entry = run.log_artifact(file)
            artifacts.append((run.id, entry.sha256))
        else:
            orphans.add(registry.artifacts.put_bytes(f"orphan {seed} {flag}".encode()).sha256)
    tracking.flush()
    _age_tree(Path(registry.artifacts.root) / "objects", OLD)
    before = _objects(registry.artifacts)

    report = registry.collect_garbage(grace_s=0)
    stored = _objects(registry.artifacts)
    assert stored == before - orphans  # the orphans, and only they, are gone
    assert {Path(i.path).parent.name + Path(i.path).name for i in report.items} == orphans
    for package_id in packages:
        assert registry.load_package(package_id).id == package_id
    for ref, package_id in versions:
        assert registry.load(ref).id == package_id
    for run_id, sha in artifacts:
        assert sha in {e.sha256 for e in tracking.list_artifacts(run_id)}
        tracking.download_artifacts(run_id, tmp / "downloads" / run_id)  # verified copy
    # a second collection finds nothing more: the first left only what is referenced
    assert registry.collect_garbage(grace_s=0).items == []


def test_a_recorded_package_whose_manifest_is_gone_stops_the_collection(
    project: tuple[ModelRegistry, TrackingClient, Path],
) -> None:
    registry, _, _ = project
    frame = pd.DataFrame({"x": np.linspace(-1.0, 1.0, 12)})
    logged = registry.log_model(
        DummyClassifier().fit(frame, (frame.x > 0).astype(int)), training_frame=frame
    )
    orphan = registry.artifacts.put_bytes(b"orphan")
    _age_tree(Path(registry.artifacts.root) / "objects", OLD)
    Path(registry.artifacts._object_path(logged.package_id)).unlink()
    with pytest.raises(StorageError, match=f"Package {logged.package_id} is recorded but"):
        registry.collect_garbage(grace_s=0)
    assert registry.artifacts.exists(orphan.sha256)  # nothing removed


# -- the command line ------------------------------------------------------------------------


def test_the_gc_command_dry_run_json_and_a_bad_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "project"
    init_project(root)
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(root)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = ArtifactStore(load_settings(root, environ={}).artifacts)
    orphan = store.put_bytes(b"x" * 3000)
    _age(Path(store._object_path(orphan.sha256)), OLD)

    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Would remove 1 file(s), 2.9 KB" in out and store.exists(orphan.sha256)
    assert main(["gc", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["bytes"] == 3000 and shown["removed"][0]["kind"] == "blob"
    assert not store.exists(orphan.sha256)
    assert main(["gc", "--grace", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: Expected a duration like 30m, 24h or 7d (or seconds), got 'soon' - at grace"
    )


def test_parse_grace_refuses_what_is_not_a_duration() -> None:
    assert parse_grace("7d") == 7 * 86400
    with pytest.raises(InvalidInputError):
        parse_grace("-1h")
