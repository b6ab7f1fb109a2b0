"""``modelyard.engine`` without a cluster: choosing the engine, shipping settings without
their secrets, the shared-state check, task options and step resources."""

from __future__ import annotations

import logging
import pickle
import socket
import sys
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.config import (
    CONFIG_FILE,
    AlertRule,
    MonitoringSettings,
    RaySettings,
    Settings,
    init_project,
    load_settings,
)
from modelyard.engine import (
    check_shared_state,
    connect_ray,
    engine_for,
    secret_env,
    ship_settings,
    task_options,
    unship_settings,
)
from modelyard.errors import InvalidInputError, MissingExtraError, PipelineDefinitionError
from modelyard.pipelines import step
from modelyard.store.urls import redact_url


def _settings(**fields: object) -> Settings:
    base = Settings(
        project_dir=Path("/srv/project"),
        name="p",
        db_url="postgresql+psycopg://me@db.internal:5432/ml",
        artifacts="s3://bucket/prefix",
    )
    return msgspec.structs.replace(base, **fields)


def _with_online(settings: Settings, url: str) -> Settings:
    return msgspec.structs.replace(
        settings, features=msgspec.structs.replace(settings.features, online_store=url)
    )


# -- engine_for ------------------------------------------------------------------------------


def test_engine_for_takes_the_override_else_the_project_setting() -> None:
    assert engine_for(_settings()) == "local"
    assert engine_for(_settings(engine="ray")) == "ray"
    assert engine_for(_settings(engine="ray"), "local") == "local"
    assert engine_for(_settings(), "ray") == "ray"


@pytest.mark.parametrize("bad", ["spark", "", "Ray", "local "])
def test_engine_for_names_the_option_and_the_choices(bad: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        engine_for(_settings(), bad)
    assert str(caught.value) == (f"Expected an engine (local or ray), got {bad!r} - at --engine")
    with pytest.raises(InvalidInputError, match=r"- at engine$"):
        engine_for(_settings(), bad, loc="engine")


# -- shipping --------------------------------------------------------------------------------

# passwords as users write them: any printable text, percent-encoded in the URL (a
# marker in front, so a secret cannot turn up in the rest of the URL by chance)
_passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=24
).map(lambda text: "Zq9!" + text)
_users = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_hosts = st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z]{2,5})?", fullmatch=True)


@st.composite
def _secret_settings(draw: st.DrawFn) -> tuple[Settings, list[str]]:
    """Settings with a password in db_url, an S3 key in artifacts, and a Redis password."""
    secrets = [draw(_passwords) for _ in range(3)]
    user, host = draw(_users), draw(_hosts)
    db = f"postgresql+psycopg://{user}:{quote(secrets[0], safe='')}@{host}:5432/ml"
    if draw(st.booleans()):
        db += f"?sslmode=require&password={quote(secrets[0], safe='')}"
    artifacts = f"s3://AKIA{user.upper()}:{quote(secrets[1], safe='')}@bucket/p"
    online = f"redis://:{quote(secrets[2], safe='')}@{host}:6379/0"
    settings = _with_online(_settings(db_url=db, artifacts=artifacts), online)
    return settings, secrets


@given(_secret_settings())
def test_shipped_settings_hold_no_secret_and_come_back_whole(
    case: tuple[Settings, list[str]],
) -> None:
    settings, secrets = case
    shipped = ship_settings(settings)
    # the arguments as Ray stores them: no password, in any spelling
    blobs = (pickle.dumps(shipped), msgspec.json.encode(shipped, enc_hook=str))
    for secret in secrets:
        for spelling in (secret, quote(secret, safe=""), quote(secret)):
            for blob in blobs:
                assert spelling.encode() not in blob
    assert shipped.settings.db_url == redact_url(settings.db_url)
    assert shipped.settings.artifacts == redact_url(settings.artifacts)
    assert shipped.settings.features.online_store == redact_url(settings.features.online_store)
    assert dict(shipped.restore) == {
        "db_url": "MODELYARD_DB_URL",
        "artifacts": "MODELYARD_ARTIFACTS",
        "features.online_store": "MODELYARD_ONLINE_STORE",
    }
    # on the worker: from the runtime_env's variables, exactly the driver's settings
    assert unship_settings(shipped, environ=secret_env(settings)) == settings


def test_settings_without_secrets_ship_as_they_are() -> None:
    settings = _settings()
    shipped = ship_settings(settings)
    assert shipped.settings == settings
    assert shipped.restore == ()
    assert secret_env(settings) == {}
    assert unship_settings(shipped, environ={}) == settings


def test_a_worker_without_the_secret_says_which_variable_it_needs() -> None:
    settings = _settings(db_url="postgresql://me:pw@db/ml")
    shipped = ship_settings(settings)
    with pytest.raises(InvalidInputError) as caught:
        unship_settings(shipped, environ={})
    message = str(caught.value)
    assert "MODELYARD_DB_URL" in message
    assert message.endswith("- at db_url")
    assert "pw" not in message.replace("postgresql://me:***@db/ml", "")


def test_a_worker_whose_variable_names_another_store_is_refused() -> None:
    settings = _settings(db_url="postgresql://me:pw@db/ml")
    shipped = ship_settings(settings)
    other = {"MODELYARD_DB_URL": "postgresql://me:pw@elsewhere/ml"}
    with pytest.raises(InvalidInputError, match="names another store") as caught:
        unship_settings(shipped, environ=other)
    assert ":pw@" not in str(caught.value)
    # the worker's own variable for the same store (a cluster's secret store) is taken
    same = {"MODELYARD_DB_URL": "postgresql://me:pw@db/ml"}
    assert unship_settings(shipped, environ=same) == settings


def test_alert_webhooks_travel_as_variables_too() -> None:
    rule = AlertRule(
        name="drift",
        signal="prediction_drift",
        webhook="https://hooks.example.com/services/T0/B0/SECRETPATH",
    )
    settings = _settings(monitoring=MonitoringSettings(alerts=(rule,)))
    shipped = ship_settings(settings)
    assert b"SECRETPATH" not in pickle.dumps(shipped)
    assert shipped.settings.monitoring.alerts[0].webhook == "https://hooks.example.com/***"
    assert secret_env(settings) == {"MODELYARD_ALERT_WEBHOOK_0": rule.webhook}
    assert unship_settings(shipped, environ=secret_env(settings)) == settings


# -- the shared-state check ------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts",
    [
        set(),
        {"127.0.0.1"},
        {"10.0.0.5"},
        {"127.0.0.1", "localhost"},
        {"127.0.0.1", socket.gethostname()},
    ],
)
def test_one_machine_may_use_sqlite_and_a_local_folder(hosts: set[str]) -> None:
    settings = _settings(db_url="sqlite:////srv/p/.modelyard/modelyard.db", artifacts="/srv/a")
    check_shared_state(settings, hosts, also=("online_store", "prediction_log"))


def test_several_hosts_refuse_sqlite_naming_db_url() -> None:
    settings = _settings(db_url="sqlite:////srv/p/.modelyard/modelyard.db")
    with pytest.raises(InvalidInputError) as caught:
        check_shared_state(settings, {"10.0.0.5", "10.0.0.6"})
    message = str(caught.value)
    assert message.endswith("- at db_url")
    assert "2 hosts (10.0.0.5, 10.0.0.6)" in message
    assert "PostgreSQL" in message
    assert "object storage" in message


def test_several_hosts_refuse_a_local_artifact_folder_naming_artifacts() -> None:
    settings = _settings(artifacts="/srv/artifacts")
    with pytest.raises(InvalidInputError, match=r"- at artifacts$"):
        check_shared_state(settings, {"10.0.0.5", "10.0.0.6"})
    settings = _settings(artifacts="file:///srv/artifacts")
    with pytest.raises(InvalidInputError, match=r"- at artifacts$"):
        check_shared_state(settings, {"10.0.0.5", "127.0.0.1"})


def test_several_hosts_accept_postgres_and_object_storage() -> None:
    check_shared_state(_settings(), {"10.0.0.5", "10.0.0.6", "10.0.0.7"})


def test_the_online_store_is_checked_only_when_asked() -> None:
    settings = _with_online(_settings(), "sqlite:////srv/p/online.db")
    hosts = {"10.0.0.5", "10.0.0.6"}
    check_shared_state(settings, hosts)
    with pytest.raises(InvalidInputError, match=r"- at features\.online_store$"):
        check_shared_state(settings, hosts, also=("online_store",))
    check_shared_state(_with_online(_settings(), "redis://h:6379/0"), hosts, also=("online_store",))


def test_the_refusal_never_shows_a_password() -> None:
    settings = _settings(db_url="sqlite:////srv/p/db.sqlite?password=hunter2")
    with pytest.raises(InvalidInputError) as caught:
        check_shared_state(settings, {"a", "b"})
    assert "hunter2" not in str(caught.value)


# -- task options ------------------------------------------------------------------------------


def test_task_options_default_to_the_ray_settings() -> None:
    settings = _settings(ray=RaySettings(num_cpus=2.0, memory=2**30))
    assert task_options(settings) == {"num_cpus": 2.0, "memory": 2**30}
    assert task_options(settings, num_cpus=0.5, memory=100) == {"num_cpus": 0.5, "memory": 100}
    assert task_options(_settings()) == {"num_cpus": 1.0}


def test_task_options_carry_secrets_in_the_runtime_env_only() -> None:
    settings = _settings(db_url="postgresql://me:pw@db/ml")
    options = task_options(settings)
    assert options["runtime_env"] == {"env_vars": {"MODELYARD_DB_URL": settings.db_url}}
    assert set(options) == {"num_cpus", "runtime_env"}


def test_a_gpu_is_asked_for_only_where_the_cluster_has_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import ray

    if ray.is_initialized():  # another module connected: the test clusters have no GPU
        assert not ray.cluster_resources().get("GPU")
    with caplog.at_level(logging.WARNING, logger="modelyard.engine.ray_session"):
        options = task_options(_settings(), num_gpus=1)
    assert "num_gpus" not in options
    assert "no GPU" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_cpus", -1), ("memory", -5), ("num_gpus", float("nan")), ("num_cpus", True)],
)
def test_task_options_refuse_bad_amounts(key: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=rf"- at {key}$"):
        task_options(_settings(), **{key: value})  # type: ignore[arg-type]


def test_connect_ray_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(MissingExtraError) as caught:
        connect_ray(_settings(engine="ray"))
    assert "pip install 'modelyard[ray]'" in str(caught.value)


# -- step resources ------------------------------------------------------------------------------


def test_steps_declare_their_resources() -> None:
    @step(num_cpus=2, memory=2**30, num_gpus=0.5)
    def fit(x: int) -> int:
        return x

    assert (fit.resources.num_cpus, fit.resources.memory, fit.resources.num_gpus) == (
        2,
        2**30,
        0.5,
    )

    @step
    def plain(x: int) -> int:
        return x

    assert plain.resources.num_cpus is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_cpus", -1), ("num_cpus", "2"), ("memory", 0), ("memory", 1.5), ("num_gpus", True)],
)
def test_bad_step_resources_are_refused_naming_them(key: str, value: object) -> None:
    def fn(x: int) -> int:
        return x

    with pytest.raises(PipelineDefinitionError, match=key):
        step(**{key: value})(fn)  # type: ignore[arg-type]


# -- the pipelines' default executor -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "local"),
        ("engine: ray\n", "ray"),
        ("engine: ray\npipelines:\n  executor: inline\n", "inline"),
        ("engine: ray\npipelines:\n  executor: local\n", "local"),
        ("pipelines:\n  executor: ray\n", "ray"),
    ],
)
def test_pipelines_follow_the_engine_unless_their_executor_is_set(
    tmp_path: Path, text: str, expected: str
) -> None:
    init_project(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(text)
    assert load_settings(tmp_path, environ={}).pipeline_executor == expected
