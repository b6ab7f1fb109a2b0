"""The parts of ``modelyard build`` that need no venv: lock, cgroup, bundle, entrypoint checks.

The lock is checked against its own oracle (``packaging``'s specifiers over the
installed distributions' metadata): every requirement of every locked distribution that
applies here is in the lock, at a version its specifier admits (what ``pip check``
checks in the image), except where the model's manifest pins another version.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from modelyard.config import ApiKeySettings, load_settings
from modelyard.deploy.bundle import (
    BUNDLE_FILE,
    read_bundle,
    restore_version,
    verify_bundle,
    write_bundle,
)
from modelyard.deploy.cgroup import cpu_limit, parse_cpu_max, plan_workers
from modelyard.deploy.context import _check_constraints, image_settings
from modelyard.deploy.entrypoint import serve_command
from modelyard.deploy.lock import _applies, _extra_needing, lock_requirements
from modelyard.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    ModelyardError,
    NotFoundError,
)
from modelyard.registry import ModelRegistry
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import open_database

from .conftest import DeployProject

# -- cgroup -----------------------------------------------------------------------------


@given(st.integers(1, 10**9), st.integers(1, 10**7))
def test_cpu_max_is_quota_over_period(quota: int, period: int) -> None:
    assert parse_cpu_max(f"{quota} {period}\n") == quota / period


@given(st.text(max_size=20).filter(lambda t: t.split()[:1] != ["max"]))
def test_bad_cpu_max_is_refused_naming_the_file_or_parsed(text: str) -> None:
    try:
        value = parse_cpu_max(text)
    except InvalidInputError as exc:
        assert "cpu.max" in str(exc)
    else:  # only well-formed positive numbers parse
        assert value is not None and value > 0


@given(
    st.one_of(st.none(), st.floats(0.01, 512, allow_nan=False)),
    st.integers(1, 256),
    st.one_of(st.none(), st.integers(1, 64)),
)
def test_workers_follow_the_limit(limit: float | None, available: int, asked: int | None) -> None:
    workers = plan_workers(limit, available=available, workers=asked)
    if asked is not None:
        assert workers == asked
        return
    usable = available if limit is None else min(available, limit)
    assert workers >= 1
    assert workers <= max(1, usable)  # never a worker per host CPU over the limit
    assert workers == max(1, math.floor(usable))


def test_cpu_limit_reads_cgroup_v2_then_v1(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_limit(tmp_path) == 0.5


# -- lock -------------------------------------------------------------------------------


def _manifest_requirements(project: DeployProject) -> dict[str, str]:
    with ModelRegistry(project.settings) as registry:
        return registry.manifest(project.ref).requirements


def test_the_lock_is_closed_and_consistent(deploy_project: DeployProject) -> None:
    requirements = _manifest_requirements(deploy_project)
    lock = lock_requirements(requirements, extras=["serve", "sklearn"])
    pins = {canonicalize_name(r.name): Version(r.version) for r in lock.requirements}
    assert "modelyard" not in pins
    for name in ("starlette", "uvicorn", "scikit-learn", "skops", "numpy", "sqlalchemy"):
        assert canonicalize_name(name) in pins, name
    for name in requirements:
        if name != "modelyard":
            assert str(pins[canonicalize_name(name)]) == requirements[name]
    checked = 0
    for locked in lock.requirements:
        dist = importlib.metadata.distribution(locked.name)
        for text in dist.requires or []:
            req = Requirement(text)
            if not _applies(req, []) or canonicalize_name(req.name) == "modelyard":
                continue
            pinned = pins.get(canonicalize_name(req.name))
            assert pinned is not None, f"{locked.name} needs {req.name}, not in the lock"
            assert req.specifier.contains(pinned, prereleases=True), (locked.name, text)
            checked += 1
    assert checked > 40


def test_the_models_own_versions_win_and_are_noted() -> None:
    lock = lock_requirements(
        {"scikit-learn": "1.4.2", "not-installed-pkg": "0.1"}, extras=["serve", "sklearn"]
    )
    pins = lock.pins()
    assert pins["scikit-learn"] == "1.4.2"
    assert pins["not-installed-pkg"] == "0.1"
    assert any("scikit-learn" in note and "1.4.2" in note for note in lock.notes)
    assert any("not-installed-pkg" in note for note in lock.notes)
    assert "# note: " in lock.text()


def test_an_unknown_extra_is_refused_naming_the_option() -> None:
    with pytest.raises(InvalidInputError, match="--extra"):
        lock_requirements({}, extras=["serve", "no-such-extra"])


# -- image settings -----------------------------------------------------------------------


def test_image_settings_hold_key_references_only(deploy_project: DeployProject) -> None:
    digest = "ab" * 32
    settings = msgspec.structs.replace(
        deploy_project.settings,
        db_url="postgresql+psycopg://u:pw-secret@h/db",
        serving=msgspec.structs.replace(
            deploy_project.settings.serving,
            api_keys=[
                ApiKeySettings(name="ci", key_env="CI_KEY"),
                ApiKeySettings(name="app", sha256=digest),
            ],
        ),
    )
    shown = image_settings(settings)
    text = yaml.safe_dump(shown)
    assert "pw-secret" not in text and "db_url" not in shown
    assert shown["serving"]["api_keys"] == [
        {"name": "ci", "scopes": ["predict"], "key_env": "CI_KEY"},
        {"name": "app", "scopes": ["predict"], "sha256": digest},
    ]
    assert shown["artifacts"] == "artifacts"


# -- bundle -----------------------------------------------------------------------------


@pytest.fixture
def baked(deploy_project: DeployProject, tmp_path: Path) -> tuple[Path, Any]:
    """An image project folder with the baked package and package.json."""
    project = tmp_path / "srv"
    with ModelRegistry(deploy_project.settings) as registry:
        version = registry.get_version(deploy_project.ref)
        bundle, _ = write_bundle(registry.artifacts, version, project / "artifacts")
    (project / BUNDLE_FILE).write_text(bundle.to_json())
    (project / "modelyard.yaml").write_text("name: shop\nartifacts: artifacts\n")
    return project, bundle


def test_restore_records_the_original_version_once(baked: tuple[Path, Any], tmp_path: Path) -> None:
    project, bundle = baked
    db = open_database(f"sqlite:///{tmp_path / 'image.db'}")
    try:
        assert restore_version(db, bundle, actor="t") is True
        assert restore_version(db, bundle, actor="t") is False  # a restart
    finally:
        db.close()
    settings = msgspec.structs.replace(
        _settings(project), db_url=f"sqlite:///{tmp_path / 'image.db'}"
    )
    with ModelRegistry(settings) as registry:
        version = registry.get_version("churn/3")
        assert version.package_id == bundle.package_id
        assert [v.version for v in registry.list_versions("churn")] == [3]
        assert registry.load("churn/3").manifest.flavor == "sklearn"
        assert "restored from the image" in (registry.history("churn")[-1].reason or "")


def _settings(project: Path) -> Any:
    return load_settings(project, environ={})


def test_a_store_holding_another_package_under_the_name_is_refused(
    baked: tuple[Path, Any], tmp_path: Path
) -> None:
    _, bundle = baked
    db = open_database(f"sqlite:///{tmp_path / 'image.db'}")
    try:
        restore_version(db, bundle, actor="t")
        changed = dataclasses.replace(bundle, package_id="0" * 64)
        with pytest.raises(ArtifactIntegrityError, match="churn/3"):
            restore_version(db, changed, actor="t")
    finally:
        db.close()


def test_package_json_that_disagrees_with_the_manifest_is_refused(baked: tuple[Path, Any]) -> None:
    project, _ = baked
    data = json.loads((project / BUNDLE_FILE).read_text())
    data["files"][0]["sha256"] = "f" * 64
    (project / BUNDLE_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactIntegrityError, match=re.escape(data["files"][0]["path"])):
        verify_bundle(read_bundle(project / BUNDLE_FILE), ArtifactStore(str(project / "artifacts")))


def test_a_missing_package_file_is_refused_by_name(baked: tuple[Path, Any]) -> None:
    project, bundle = baked
    entry = next(f for f in bundle.files if f.path == "holdout.parquet")
    (project / "artifacts" / "objects" / entry.sha256[:2] / entry.sha256[2:]).unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"holdout\.parquet"):
        verify_bundle(bundle, ArtifactStore(str(project / "artifacts")))


@pytest.mark.parametrize(
    ("field", "value"), [("version", "3"), ("package_id", None), ("files", {}), ("format", 99)]
)
def test_a_bad_package_json_field_is_named(baked: tuple[Path, Any], field: str, value: Any) -> None:
    project, _ = baked
    data = json.loads((project / BUNDLE_FILE).read_text())
    data[field] = value
    (project / BUNDLE_FILE).write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=f"{BUNDLE_FILE}:{field}"):
        read_bundle(project / BUNDLE_FILE)


# -- entrypoint -------------------------------------------------------------------------


def test_the_entrypoint_serves_the_baked_version_with_workers_from_cpu_max(
    baked: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = baked
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "cpu.max").write_text("300000 100000\n")
    for name in ("MODELYARD_DB_URL", "MODELYARD_ARTIFACTS", "MODELYARD_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELYARD_CGROUP_ROOT", str(tmp_path / "cg"))
    monkeypatch.setenv("PORT", "9099")
    monkeypatch.setattr("modelyard.deploy.entrypoint.available_cpus", lambda: 64)
    command = serve_command(project, ["--trust"])
    assert command[5:] == [
        "serve", "churn/3", "--host", "0.0.0.0", "--port", "9099", "--workers", "3", "--trust",
    ]  # fmt: skip
    monkeypatch.setenv("MODELYARD_WORKERS", "zero")
    with pytest.raises(InvalidInputError, match="MODELYARD_WORKERS"):
        serve_command(project)


@pytest.mark.postgres
def test_a_shared_store_without_the_version_is_refused(
    baked: tuple[Path, Any], pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = baked
    monkeypatch.setenv("MODELYARD_DB_URL", pg_database)
    with pytest.raises(NotFoundError, match="shared metadata store has no churn/3"):
        serve_command(project)


# -- CLI --------------------------------------------------------------------------------


def test_build_into_a_non_empty_folder_exits_2_and_writes_nothing(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("build", "churn/3", "--out", str(out))
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--out" in lines[0], result.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("args", "word"), [(["churn/9"], "churn"), (["churn/3", "--extra", "nope"], "--extra")]
)
def test_build_bad_input_exits_2_with_one_line(
    cli: Any, tmp_path: Path, args: list[str], word: str
) -> None:
    out = tmp_path / "ctx"
    result = cli("build", *args, "--out", str(out))
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], result.err
    shutil.rmtree(out, ignore_errors=True)


def test_a_constraint_that_pins_another_version_is_noted(tmp_path: Path) -> None:
    lock = lock_requirements({}, extras=["serve"])
    numpy = lock.pins()["numpy"]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"# pins\nNumPy==0.0.1  # old\nuvicorn=={lock.pins()['uvicorn']}\n")
    noted = _check_constraints(lock, constraints)
    assert noted.notes == (
        f"numpy: constraints.txt pins 0.0.1, this environment has {numpy}; the image pins {numpy}",
    )
    assert noted.pins() == lock.pins()
    assert _check_constraints(lock, tmp_path / "none.txt") is lock


def test_a_failed_build_leaves_the_folder_as_it_was(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(source: Path, target: Path) -> str:
        target.mkdir(parents=True, exist_ok=True)
        (target / "half.whl").write_bytes(b"")
        raise ModelyardError("Building modelyard's wheel from here failed: no compiler")

    monkeypatch.setattr("modelyard.deploy.context._build_wheel", broken)
    for existed in (False, True):
        out = tmp_path / f"ctx-{existed}"
        if existed:
            out.mkdir()
        result = cli("build", "churn/3", "--out", str(out))
        assert result.code == 2 and "no compiler" in result.err, result.err
        assert out.exists() == existed
        assert not existed or list(out.iterdir()) == []


def test_a_missing_requirement_names_the_extra_that_needs_it() -> None:
    assert _extra_needing("psycopg", ["postgres", "serve"]) == "postgres"
    assert _extra_needing("starlette", ["postgres", "serve"]) == "serve"
    assert _extra_needing("numpy", ["serve"]) is None  # a base requirement


def test_build_json_names_the_version_package_and_image(
    cli: Any, deploy_project: DeployProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_wheel(source: Path, target: Path) -> str:  # the real one: test_build.py
        target.mkdir(parents=True, exist_ok=True)
        (target / "modelyard-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
        return "modelyard-0.1.0-py3-none-any.whl"

    monkeypatch.setattr("modelyard.deploy.context._build_wheel", fake_wheel)
    out = tmp_path / "ctx"
    result = cli("build", "churn/3", "--out", str(out), "--json")
    assert result.code == 0, result.err
    shown = result.json()
    with ModelRegistry(deploy_project.settings) as registry:
        package_id = registry.get_version("churn/3").package_id
    assert shown["ref"] == "churn/3" and shown["package_id"] == package_id
    assert shown["image"] == "modelyard-churn:3"
    assert {"serve", "sklearn"} <= set(shown["extras"])
    bundle = read_bundle(out / "project" / BUNDLE_FILE)
    assert (bundle.ref, bundle.package_id) == ("churn/3", package_id)
    verify_bundle(bundle, ArtifactStore(str(out / "project" / "artifacts")))
    assert not (out / "project" / "artifacts" / "tmp").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        ".dockerignore", "Dockerfile", "README.md", "install.sh", "project",
        "requirements.lock", "wheels",
    ]  # fmt: skip
