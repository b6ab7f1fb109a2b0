from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import yaml

from modelyard.config import (
    CONFIG_FILE,
    STATE_DIR,
    PipelinesSettings,
    Settings,
    TrackingSettings,
    find_project,
    init_project,
    load_settings,
)
from modelyard.errors import InvalidInputError, NotFoundError

ALLOWED = (
    "Allowed keys: name, db_url, artifacts, "
    "tracking.{flush_points, flush_interval_ms, heartbeat_timeout_s}, "
    "models.{trusted_types, trust_code}, features.{modules, online_store}"
)


def _project(tmp_path: Path, text: str | None = None, name: str = "proj") -> Path:
    root = tmp_path / name
    init_project(root)
    if text is not None:
        (root / CONFIG_FILE).write_text(text)
    return root


def test_init_project_writes_the_file_and_the_state_folder(tmp_path: Path) -> None:
    root = tmp_path / "churn-model"
    path = init_project(root)
    assert path == root.resolve() / CONFIG_FILE
    assert path.is_file()
    assert (root / STATE_DIR).is_dir()
    # the state folder keeps itself out of git
    assert (root / STATE_DIR / ".gitignore").read_text() == "*\n"
    raw = yaml.safe_load(path.read_text())
    assert raw["name"] == "churn-model"
    # the template documents every default: loading it equals the built-in defaults
    assert TrackingSettings(**raw["tracking"]) == TrackingSettings()
    settings = load_settings(root, environ={})
    assert settings.name == "churn-model"
    assert settings.db_url == f"sqlite:///{root.resolve() / STATE_DIR / 'modelyard.db'}"
    assert settings.artifacts == str(root.resolve() / STATE_DIR / "artifacts")


def test_init_project_keeps_an_existing_file(tmp_path: Path) -> None:
    root = _project(tmp_path, "name: mine\n")
    init_project(root, name="other")
    assert (root / CONFIG_FILE).read_text() == "name: mine\n"
    assert load_settings(root, environ={}).name == "mine"


def test_init_project_uses_the_given_name(tmp_path: Path) -> None:
    init_project(tmp_path / "folder", name="fraud")
    assert load_settings(tmp_path / "folder", environ={}).name == "fraud"


def test_find_project_walks_up_from_a_nested_folder(tmp_path: Path) -> None:
    root = _project(tmp_path)
    nested = root / "src" / "deep" / "er"
    nested.mkdir(parents=True)
    assert find_project(nested) == root.resolve()
    assert find_project(root) == root.resolve()
    assert find_project(tmp_path) is None


def test_find_project_picks_the_nearest(tmp_path: Path) -> None:
    outer = _project(tmp_path, name="outer")
    inner = _project(outer, name="inner")
    (inner / "sub").mkdir()
    assert find_project(inner / "sub") == inner.resolve()


def test_find_project_ignores_a_folder_named_like_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).mkdir()
    assert find_project(tmp_path) is None


def test_load_settings_finds_the_project_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, "name: churn\n")
    nested = root / "notebooks" / "eda"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    settings = load_settings(environ={})
    assert settings.project_dir == root.resolve()
    assert settings.name == "churn"
    assert find_project() == root.resolve()


def test_a_relative_project_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_settings("proj", environ={}).project_dir == root.resolve()


def test_modelyard_project_overrides_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _project(tmp_path, "name: here\n", name="here")
    there = _project(tmp_path, "name: there\n", name="there")
    monkeypatch.chdir(here)
    assert load_settings(environ={}).name == "here"
    settings = load_settings(environ={"MODELYARD_PROJECT": str(there)})
    assert settings.name == "there"
    assert settings.project_dir == there.resolve()
    # an explicit project (the --project flag) wins over the variable
    assert load_settings(here, environ={"MODELYARD_PROJECT": str(there)}).name == "here"


def test_environment_overrides_the_store_urls(tmp_path: Path) -> None:
    root = _project(tmp_path, "db_url: sqlite:///from-file.db\nartifacts: file-artifacts\n")
    env = {
        "MODELYARD_DB_URL": "postgresql+psycopg://alice@db.internal/ml",
        "MODELYARD_ARTIFACTS": "s3://bucket/prefix",
    }
    settings = load_settings(root, environ=env)
    assert settings.db_url == env["MODELYARD_DB_URL"]
    assert settings.artifacts == env["MODELYARD_ARTIFACTS"]
    # without the variables the file's values apply
    settings = load_settings(root, environ={})
    assert settings.db_url == f"sqlite:///{root.resolve() / 'from-file.db'}"
    assert settings.artifacts == str(root.resolve() / "file-artifacts")


def test_environ_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    monkeypatch.setenv("MODELYARD_DB_URL", "sqlite:////srv/meta.db")
    monkeypatch.setenv("MODELYARD_ARTIFACTS", "memory://bucket")
    settings = load_settings(root)
    assert (settings.db_url, settings.artifacts) == ("sqlite:////srv/meta.db", "memory://bucket")


@pytest.mark.parametrize(
    ("db_url", "expected"),
    [
        ("sqlite:///meta/runs.db", "sqlite:///{root}/meta/runs.db"),
        ("sqlite:////var/lib/runs.db", "sqlite:////var/lib/runs.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_relative_sqlite_paths_resolve_against_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str, expected: str
) -> None:
    root = _project(tmp_path, f"db_url: '{db_url}'\n")
    monkeypatch.chdir(tmp_path)  # not the project folder: the result must not depend on it
    assert load_settings(root, environ={}).db_url == expected.format(root=root.resolve())
    # a relative URL in the environment is relative to the project too
    from_env = load_settings(root, environ={"MODELYARD_DB_URL": db_url}).db_url
    assert from_env == expected.format(root=root.resolve())


@pytest.mark.parametrize(
    ("artifacts", "expected"),
    [
        ("store/artifacts", "{root}/store/artifacts"),
        ("/srv/artifacts", "/srv/artifacts"),
        ("file:///srv/artifacts", "file:///srv/artifacts"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("memory://scratch", "memory://scratch"),
    ],
)
def test_relative_artifact_paths_resolve_against_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifacts: str, expected: str
) -> None:
    root = _project(tmp_path, f"artifacts: '{artifacts}'\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(root, environ={}).artifacts == expected.format(root=root.resolve())


def test_tracking_settings_are_read_from_the_file(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        "tracking:\n  flush_points: 7\n  flush_interval_ms: 250\n  heartbeat_timeout_s: 2.5\n",
    )
    assert load_settings(root, environ={}).tracking == TrackingSettings(
        flush_points=7, flush_interval_ms=250, heartbeat_timeout_s=2.5
    )


def test_an_empty_file_means_every_default(tmp_path: Path) -> None:
    root = _project(tmp_path, "")
    settings = load_settings(root, environ={})
    assert settings.name == "proj"
    assert settings.tracking == TrackingSettings()


def test_unknown_top_level_key_names_the_key_the_file_and_the_allowed_keys(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path, "name: churn\ncolour: red\n")
    path = root.resolve() / CONFIG_FILE
    with pytest.raises(InvalidInputError, match=re.escape(ALLOWED)) as info:
        load_settings(root, environ={})
    assert "`colour`" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_tracking_key_names_the_key_and_its_section(tmp_path: Path) -> None:
    root = _project(tmp_path, "tracking:\n  flush_pionts: 10\n")
    with pytest.raises(
        InvalidInputError, match=r"unknown field `flush_pionts` - at `\$\.tracking`"
    ) as info:
        load_settings(root, environ={})
    assert str(root.resolve() / CONFIG_FILE) in str(info.value)
    assert ALLOWED in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected", "got", "loc"),
    [
        ("tracking:\n  flush_points: many\n", "int", "str", "$.tracking.flush_points"),
        ("tracking:\n  flush_points: true\n", "int", "bool", "$.tracking.flush_points"),
        ("tracking:\n  flush_interval_ms: 1.5\n", "int", "float", "$.tracking.flush_interval_ms"),
        (
            "tracking:\n  heartbeat_timeout_s: soon\n",
            "float",
            "str",
            "$.tracking.heartbeat_timeout_s",
        ),
        ("name: [a, b]\n", "str | null", "array", "$.name"),
        ("tracking: null\n", "object", "null", "$.tracking"),
        ("- just\n- a list\n", "object", "array", None),
    ],
)
def test_a_bad_value_type_names_the_field(
    tmp_path: Path, text: str, expected: str, got: str, loc: str | None
) -> None:
    root = _project(tmp_path, text)
    message = f"Expected `{expected}`, got `{got}`" + (f" - at `{loc}`" if loc else ".")
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        load_settings(root, environ={})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("flush_points", "0"),
        ("flush_points", "-5"),
        ("flush_interval_ms", "0"),
        ("heartbeat_timeout_s", "-0.5"),
        ("heartbeat_timeout_s", "0.0"),
        ("heartbeat_timeout_s", ".nan"),
        ("heartbeat_timeout_s", ".inf"),
    ],
)
def test_a_non_positive_or_non_finite_value_names_the_field(
    tmp_path: Path, key: str, value: str
) -> None:
    root = _project(tmp_path, f"tracking:\n  {key}: {value}\n")
    with pytest.raises(
        InvalidInputError, match=rf"Expected {key} .*> 0, got .* - at `\$\.tracking`"
    ):
        load_settings(root, environ={})


@pytest.mark.parametrize(
    "kwargs",
    [{"flush_points": 0}, {"flush_interval_ms": -1}, {"heartbeat_timeout_s": float("nan")}],
)
def test_tracking_settings_validate_when_built_in_code(kwargs: dict[str, float]) -> None:
    key = next(iter(kwargs))
    with pytest.raises(InvalidInputError, match=rf"Expected {key} "):
        TrackingSettings(**kwargs)  # type: ignore[arg-type]


def test_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path, "name: [unclosed\ntracking: {\n")
    with pytest.raises(
        InvalidInputError, match=r"(?s)modelyard\.yaml is not valid YAML: .*line \d+, column \d+"
    ):
        load_settings(root, environ={})


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / CONFIG_FILE).write_bytes(b"name: caf\xe9\n")
    with pytest.raises(InvalidInputError, match=r"modelyard\.yaml is not valid YAML"):
        load_settings(root, environ={})


def test_a_utf8_file_loads_whatever_the_locale(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / CONFIG_FILE).write_bytes("name: modèle-Ω\n".encode())
    assert load_settings(root, environ={}).name == "modèle-Ω"


def test_a_missing_project_suggests_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(
        NotFoundError, match=r"No modelyard\.yaml in .*nowhere\. Run `modelyard init "
    ):
        load_settings(missing, environ={})
    with pytest.raises(
        NotFoundError, match=r"No modelyard\.yaml in .*nowhere\. Run `modelyard init "
    ):
        load_settings(environ={"MODELYARD_PROJECT": str(missing)})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        NotFoundError, match=r"No modelyard project in .* Run `modelyard init` here"
    ):
        load_settings(environ={})


@pytest.mark.parametrize("variable", ["MODELYARD_DB_URL", "MODELYARD_ARTIFACTS"])
def test_a_blank_store_url_names_the_setting(tmp_path: Path, variable: str) -> None:
    root = _project(tmp_path)
    key = "db_url" if variable == "MODELYARD_DB_URL" else "artifacts"
    with pytest.raises(
        InvalidInputError, match=rf"Expected a URL, got an empty string - at {key}$"
    ):
        load_settings(root, environ={variable: "   "})


def test_describe_hides_credentials(tmp_path: Path) -> None:
    root = _project(tmp_path)
    env = {
        "MODELYARD_DB_URL": "postgresql+psycopg://alice:s3cret@db.internal:5432/ml",
        "MODELYARD_ARTIFACTS": "s3://AKIAKEY:awsSECRET@bucket/prefix",
        "MODELYARD_ONLINE_STORE": "redis://default:r3dis@cache:6379/0",
    }
    settings = load_settings(root, environ=env)
    shown = settings.describe()
    assert shown == {
        "project": str(root.resolve()),
        "name": "proj",
        "db_url": "postgresql+psycopg://alice:***@db.internal:5432/ml",
        "artifacts": "s3://AKIAKEY:***@bucket/prefix",
        "online_store": "redis://default:***@cache:6379/0",
    }
    assert "s3cret" not in repr(shown) and "awsSECRET" not in repr(shown)
    assert "r3dis" not in repr(shown)
    # the settings themselves keep the real URL: the store needs it
    assert settings.db_url == env["MODELYARD_DB_URL"]


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = load_settings(_project(tmp_path), environ={})
    assert isinstance(settings, Settings)
    with pytest.raises(AttributeError):
        settings.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.tracking.flush_points = 1  # type: ignore[misc]
    changed = msgspec.structs.replace(settings, name="other")
    assert (settings.name, changed.name) == ("proj", "other")


def test_features_settings_default_and_resolve_against_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(root, environ={})
    assert settings.features.modules == ("features",)
    assert settings.features.online_store == f"sqlite:///{root.resolve() / STATE_DIR / 'online.db'}"
    (root / CONFIG_FILE).write_text(
        "features:\n  modules: [defs, extra/more.py]\n  online_store: sqlite:///on.db\n"
    )
    settings = load_settings(root, environ={})
    assert settings.features.modules == ("defs", "extra/more.py")
    assert settings.features.online_store == f"sqlite:///{root.resolve() / 'on.db'}"
    env = {"MODELYARD_ONLINE_STORE": "redis://localhost:6379/1"}
    assert load_settings(root, environ=env).features.online_store == env["MODELYARD_ONLINE_STORE"]


def test_an_unknown_features_key_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path, "features:\n  module: [x]\n")
    with pytest.raises(InvalidInputError, match=r"features\.\{modules, online_store\}"):
        load_settings(root, environ={})


def test_init_on_a_file_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInputError, match=r"Expected a folder for the project, got the file"):
        init_project(blocker)
    assert blocker.read_text() == "not a folder"


def test_a_yaml_error_does_not_quote_a_password(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "modelyard.yaml").write_text("db_url: postgresql://ana:Sekrit@db/ml\nname: [oops\n")
    with pytest.raises(InvalidInputError) as info:
        load_settings(root, environ={})
    assert "Sekrit" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_settings_repr_hides_credentials(tmp_path: Path) -> None:
    root = _project(tmp_path)
    env = {"MODELYARD_DB_URL": "postgresql+psycopg://alice@db/ml?password=s3cret"}
    settings = load_settings(root, environ=env)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert "password=***" in repr(settings)


def test_pipelines_settings_default_and_read_from_the_file(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert load_settings(root, environ={}).pipelines == PipelinesSettings()
    assert PipelinesSettings().modules is None  # pipelines.py when it exists
    (root / CONFIG_FILE).write_text(
        "pipelines:\n  modules: [flows, extra/more.py]\n  executor: inline\n  max_workers: 3\n"
    )
    assert load_settings(root, environ={}).pipelines == PipelinesSettings(
        modules=("flows", "extra/more.py"), executor="inline", max_workers=3
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pipelines:\n  max_workers: 0\n", "Expected pipelines.max_workers to be an integer >= 1"),
        ("pipelines:\n  max_workers: -2\n", "Expected pipelines.max_workers to be an integer >= 1"),
        ("pipelines:\n  max_workers: two\n", "Expected `int | null`, got `str`"),
        (
            "pipelines:\n  executor: spark\n",
            "Invalid enum value 'spark' - at `$.pipelines.executor`",
        ),
        ("pipelines:\n  modules: []\n", "Expected at least one module in pipelines.modules"),
        ("pipelines:\n  modules: ['  ']\n", "Expected a module name or a .py path"),
        ("pipelines:\n  module: [x]\n", "unknown field `module` - at `$.pipelines`"),
    ],
)
def test_a_bad_pipelines_setting_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    root = _project(tmp_path, text)
    with pytest.raises(InvalidInputError, match=re.escape(message)) as info:
        load_settings(root, environ={})
    assert "pipelines.{modules, executor, max_workers}" in str(info.value)
