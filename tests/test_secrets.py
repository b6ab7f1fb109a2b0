"""Credentials are masked wherever a URL or the settings are shown.

One masking function (``modelyard.store.urls``) hides the password of ``user:password@``
and the values of secret-named query and fragment parameters; webhook URLs are shown
as their origin only. Generated URLs put random credentials in every position: the
shown text never holds a secret (as written or decoded), and keeps everything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote, unquote, unquote_plus

import pytest
from fsspec.registry import _registry as fsspec_classes
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from modelyard.cli.app import main
from modelyard.config import AlertRule, init_project, load_settings
from modelyard.errors import ModelyardError
from modelyard.features import Entity, Feature, FeatureView, FileSource
from modelyard.features.online import open_online_store
from modelyard.monitoring.alerts import safe_url
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import open_database
from modelyard.store.urls import MASK, is_secret_name, redact_text, redact_url, url_origin

# Every secret holds an upper-case Z, which no generated non-secret part does, so a
# secret found in the output can only have leaked
_RAW = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="Z"), max_size=12
)
SECRETS = st.builds(lambda a, b: f"{a}Z{b}Z", _RAW, _RAW)
_WORD = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
SECRET_NAMES = st.sampled_from(
    [
        "password",
        "Password",
        "passwd",
        "pwd",
        "token",
        "access_token",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "X-Amz-Credential",
        "AWSAccessKeyId",
        "sig",
        "sas",
        "api_key",
        "apikey",
        "client_secret",
        "secret",
        "key",
        "auth",
    ]
)
PLAIN_NAMES = st.sampled_from(["sslmode", "region", "db", "timeout", "x-amz-date", "version"])
SCHEMES = st.sampled_from(
    ["postgresql+psycopg", "postgresql", "redis", "rediss", "s3", "gs", "https", "http", "abfs"]
)


def _forms(written: str) -> set[str]:
    """A secret as written in a URL, and as a driver or a server would decode it."""
    return {written, unquote(written), unquote_plus(written)}


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, set[str], list[str]]:
    """A URL with credentials in random positions: (url, its secrets, its plain parts)."""
    scheme = draw(SCHEMES)
    user = draw(st.one_of(st.just(""), _WORD))
    password = draw(st.one_of(st.none(), SECRETS))
    host = draw(_WORD) + draw(st.sampled_from(["", ".internal", ".example.com"]))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    path = "/".join(draw(st.lists(_WORD, max_size=3)))
    secrets: set[str] = set()
    plain = [f"{scheme}://", host, path]
    userinfo = ""
    if password is not None:
        userinfo = f"{user}:{password}@"
        secrets |= _forms(password)
        plain.append(user)
    elif user:
        userinfo = f"{user}@"
        plain.append(user)
    params = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            secret = draw(SECRETS)
            params.append(f"{draw(SECRET_NAMES)}={quote(secret, safe='')}")
            secrets |= _forms(quote(secret, safe=""))  # as written, and decoded
        else:
            pair = f"{draw(PLAIN_NAMES)}={draw(_WORD)}"
            params.append(pair)
            plain.append(pair)
    fragment = ""
    if draw(st.booleans()):
        secret = draw(SECRETS)
        fragment = f"#{draw(SECRET_NAMES)}={quote(secret, safe='')}"
        secrets |= _forms(quote(secret, safe=""))  # as written, and decoded
    netloc = f"{userinfo}{host}" + (f":{port}" if port else "")
    if port:
        plain.append(f"{host}:{port}")
    url = f"{scheme}://{netloc}/{path}" + (f"?{'&'.join(params)}" if params else "") + fragment
    return url, secrets, plain


def _leaks(text: str, secrets: set[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


# -- the masking function ---------------------------------------------------------------------


@settings(max_examples=300)
@given(urls())
def test_redact_url_hides_every_secret_and_keeps_the_rest(
    generated: tuple[str, set[str], list[str]],
) -> None:
    url, secrets, plain = generated
    shown = redact_url(url)
    assert not _leaks(shown, secrets), (url, shown)
    for part in plain:
        assert part in shown, (part, shown)
    if secrets:
        assert MASK in shown
    else:
        assert shown == url  # nothing to hide: the URL is untouched
    assert redact_url(shown) == shown  # masking twice changes nothing


@settings(max_examples=200)
@given(urls(), st.text(max_size=40), st.text(max_size=40))
def test_redact_text_hides_the_secrets_of_urls_in_any_message(
    generated: tuple[str, set[str], list[str]], before: str, after: str
) -> None:
    url, secrets, _plain = generated
    assume(not _leaks(before + after, secrets))  # the message itself holds no secret
    message = f"{before} {url} {after}"
    assert not _leaks(redact_text(message), secrets)
    # a driver may echo the password alone, without its URL
    echoed = f"{before} password {' and '.join(sorted(secrets))} rejected {after}"
    assert not _leaks(redact_text(echoed, url), secrets)


@given(SECRET_NAMES)
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)
    assert is_secret_name(quote(name))


@given(PLAIN_NAMES)
def test_plain_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_masking_never_raises(text: str) -> None:
    # it runs while reporting other errors: any text at all must go through
    redact_url(text)
    redact_text(text, text)
    assert url_origin(text) == "?" or "://" in url_origin(text)


@given(urls())
def test_a_webhook_is_shown_as_its_origin(generated: tuple[str, set[str], list[str]]) -> None:
    url, secrets, _ = generated
    shown = safe_url(url)
    assert not _leaks(shown, secrets)
    # no path (a webhook's path is its secret); "?" for a host that does not parse
    assert shown.endswith("?") or "/" not in shown.split("://", 1)[1], shown


def test_examples() -> None:
    assert redact_url("postgresql://bob@db/ml?password=hunter2&sslmode=require") == (
        "postgresql://bob@db/ml?password=***&sslmode=require"
    )
    assert redact_url("redis://:r3dis@cache:6379/0") == "redis://:***@cache:6379/0"
    presigned = (
        "https://b.s3.amazonaws.com/m.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261206&X-Amz-Signature=abc123"
    )
    assert redact_url(presigned) == (
        "https://b.s3.amazonaws.com/m.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=***&X-Amz-Signature=***"
    )
    assert redact_url("abfs://c@acct.dfs.core.windows.net/x?sv=2022&sig=Zzz&se=2026") == (
        "abfs://c@acct.dfs.core.windows.net/x?sv=2022&sig=***&se=2026"
    )
    assert redact_text("host=db user=ana password=Sekrit dbname=ml") == (
        "host=db user=ana password=*** dbname=ml"
    )
    assert url_origin("http://h:99999/x") == "http://h"
    assert safe_url("https://hooks.slack.com/services/T0/B0/XXXX") == "https://hooks.slack.com"


# -- settings ---------------------------------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    init_project(root)
    return root


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(db=urls(), artifacts=urls(), online=urls(), hook_secret=SECRETS)
def test_settings_never_show_a_secret(
    tmp_path: Path,
    db: tuple[str, set[str], list[str]],
    artifacts: tuple[str, set[str], list[str]],
    online: tuple[str, set[str], list[str]],
    hook_secret: str,
) -> None:
    root = tmp_path / "proj"
    if not root.exists():
        init_project(root)
    env = {
        "MODELYARD_DB_URL": db[0],
        "MODELYARD_ARTIFACTS": artifacts[0],
        "MODELYARD_ONLINE_STORE": online[0],
    }
    loaded = load_settings(root, environ=env)
    # a Slack-style webhook: the path is the secret
    webhook = f"https://hooks.example.com/services/{quote(hook_secret, safe='')}"
    rule = AlertRule(name="drift", signal="prediction_drift", webhook=webhook)
    loaded = type(loaded)(
        **{f: getattr(loaded, f) for f in loaded.__struct_fields__ if f != "monitoring"},
        monitoring=type(loaded.monitoring)(alerts=(rule,)),
    )
    secrets = db[1] | artifacts[1] | online[1] | _forms(quote(hook_secret, safe=""))
    for shown in (repr(loaded), str(loaded), pretty_repr(loaded), repr(loaded.describe())):
        assert not _leaks(shown, secrets), shown
    assert "webhook='https://hooks.example.com/***'" in repr(loaded)
    assert loaded.db_url == db[0]  # the settings keep the real URL: the store needs it


def test_settings_repr_masks_each_url(tmp_path: Path) -> None:
    root = _project(tmp_path)
    env = {
        "MODELYARD_DB_URL": "postgresql+psycopg://ana@db/ml?password=Sekrit1",
        "MODELYARD_ARTIFACTS": "s3://AKIA:Sekrit2@bucket/prefix",
        "MODELYARD_ONLINE_STORE": "redis://:Sekrit3@cache:6379/0",
    }
    shown = repr(load_settings(root, environ=env))
    assert "db_url='postgresql+psycopg://ana@db/ml?password=***'" in shown
    assert "artifacts='s3://AKIA:***@bucket/prefix'" in shown
    assert "online_store='redis://:***@cache:6379/0'" in shown
    assert "Sekrit" not in shown


# -- stores and commands ----------------------------------------------------------------------

_CLOSED = "127.0.0.1:1"  # nothing listens on port 1: every connection is refused at once


@settings(max_examples=15, deadline=None)
@given(SECRETS, SECRETS, st.booleans())
def test_metadata_store_errors_never_show_a_secret(pw: str, query_pw: str, debug: bool) -> None:
    url = f"postgresql+psycopg://ana:{quote(pw, safe='')}@{_CLOSED}/ml"
    url += f"?password={quote(query_pw, safe='')}&sslmode=disable"
    with pytest.raises(ModelyardError) as info:
        open_database(url)
    message = str(info.value)
    assert not _leaks(message, _forms(pw) | _forms(query_pw) | _forms(quote(pw, safe="")))
    assert "ana:***@127.0.0.1:1/ml" in message and "sslmode=disable" in message


@settings(max_examples=15, deadline=None)
@given(SECRETS)
def test_redis_online_store_errors_never_show_a_secret(pw: str) -> None:
    url = f"redis://user:{quote(pw, safe='')}@{_CLOSED}/0?password={quote(pw, safe='')}"
    with pytest.raises(ModelyardError) as info:
        store = open_online_store(url)
        store.read(_VIEW, [("a",)])  # the client connects on first use
    assert not _leaks(str(info.value), _forms(pw) | _forms(quote(pw, safe="")))


_VIEW = FeatureView(
    "v",
    entities=[Entity("e", join_keys=["e"])],
    source=FileSource("x.parquet", timestamp_field="ts"),
    features=[Feature("f", "float")],
)


def test_an_unknown_online_store_scheme_is_masked() -> None:
    with pytest.raises(ModelyardError) as info:
        open_online_store("http://u:Sekrit@h/x?token=Sekrit2")
    assert "Sekrit" not in str(info.value)


def test_artifact_store_repr_and_errors_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    # an earlier test may have imported it: fsspec then keeps the class in its registry
    monkeypatch.delitem(fsspec_classes, "s3", raising=False)
    with pytest.raises(ModelyardError) as info:
        ArtifactStore("s3://AKIA:Sekrit@bucket/p?X-Amz-Security-Token=Sekrit2")
    assert "Sekrit" not in str(info.value)
    store = ArtifactStore("memory://u:Sekrit@bucket/p?token=Sekrit2")
    assert "Sekrit" not in repr(store)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(db=urls())
def test_modelyard_config_shows_no_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db: tuple[str, set[str], list[str]],
) -> None:
    root = tmp_path / "proj"
    if not root.exists():
        init_project(root)
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_DB_URL", db[0])
    monkeypatch.setenv("MODELYARD_ARTIFACTS", "s3://AKIA:ZSekritZ@bucket/p")
    capsys.readouterr()
    assert main(["--project", str(root), "config", "--json"]) == 0
    assert main(["--project", str(root), "config"]) == 0
    out, err = capsys.readouterr()
    assert not _leaks(out + err, db[1] | {"ZSekritZ"})
    assert redact_url(db[0]) in out
