"""Store URLs: telling local paths from URLs, and keeping credentials out of output.

This is the one place that masks secrets: every URL or settings object that is
printed, logged or put in an error message goes through ``redact_url`` or
``redact_text``. A credential is the password of ``user:password@`` and the value of
any query or fragment parameter whose name looks like a secret (``password``,
``token``, ``key``, ``sig``, ``secret``, ``X-Amz-Signature``, ``sas``, ...); the rest
of the URL is kept so it can still be recognised.

>>> redact_url("postgresql+psycopg://alice:s3cret@db.internal:5432/ml")
'postgresql+psycopg://alice:***@db.internal:5432/ml'
>>> redact_url("s3://KEY:SECRET@bucket/prefix")
's3://KEY:***@bucket/prefix'
>>> redact_url("postgresql://u:pa/ss@word@db/ml")
'postgresql://u:***@db/ml'
>>> redact_url("postgresql://bob@db/ml?password=hunter2&sslmode=require")
'postgresql://bob@db/ml?password=***&sslmode=require'
>>> redact_url("https://b.s3.amazonaws.com/m.onnx?X-Amz-Expires=60&X-Amz-Signature=abc")
'https://b.s3.amazonaws.com/m.onnx?X-Amz-Expires=60&X-Amz-Signature=***'
>>> redact_url("/tmp/artifacts")
'/tmp/artifacts'
>>> redact_text("could not connect to postgresql://bob:hunter2@h/db", "postgresql://bob:hunter2@h/db")
'could not connect to postgresql://bob:***@h/db'
>>> url_origin("https://hooks.example.com/services/T000/B000/XXXX?token=abc")
'https://hooks.example.com'
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit

__all__ = ["MASK", "is_local_path", "is_secret_name", "redact_text", "redact_url", "url_origin"]

#: what a secret is replaced with
MASK = "***"

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# The password runs to the LAST "@": a raw "/" or "@" in it must not end it early (that
# would leak the rest). Over-hiding a path that holds "@" is the safe side to err on.
_USERINFO = re.compile(rf"^(?P<scheme>{_SCHEME})(?P<user>[^:@/]*):(?P<pw>.*)@", re.DOTALL)
# a URL inside free text runs to the next whitespace
_URL_IN_TEXT = re.compile(rf"{_SCHEME}\S*")
_TRAILING = re.compile(r"(.*?)([.,;:!'\")\]}>]*)", re.DOTALL)
# parts of parameter names that mark a secret: password, passwd, pwd, secret, token,
# api_key / apikey / AccessKeyId, sig / signature (Azure SAS, S3 presigned), sas,
# credential, auth, session (X-Amz-Security-Token, sessionToken)
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|sig|sas|credential|auth|session", re.I)
# ``name=value`` pairs outside URLs (libpq connection strings, driver messages)
_SECRET_PAIR = re.compile(
    r"(?P<name>\b[\w.\-]*(?:password|passwd|pwd|secret|token|api_?key|signature)[\w.\-]*)"
    r"(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,)]+)",
    re.I,
)


def is_local_path(url: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def is_secret_name(name: str) -> bool:
    """True for a parameter name that looks like it holds a credential.

    >>> [is_secret_name(n) for n in ("password", "X-Amz-Signature", "sslmode", "region")]
    [True, True, False, False]
    """
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def _redact_params(params: str) -> str:
    """``a=1&token=x`` with the values of secret-named parameters masked."""
    out = []
    for part in re.split(r"([&;])", params):
        name, eq, value = part.partition("=")
        out.append(f"{name}={MASK}" if eq and value and is_secret_name(name) else part)
    return "".join(out)


def redact_url(url: str) -> str:
    """The URL with its password and secret query/fragment values replaced by ``***``.

    Never raises, whatever the text: it is used while reporting other errors.
    """
    match = _USERINFO.match(url)
    if match:
        head = f"{match['scheme']}{match['user']}:{MASK}@"
        rest = url[match.end() :]
    else:
        scheme = re.match(_SCHEME, url)
        head = scheme.group(0) if scheme else ""
        rest = url[len(head) :]
    if not head:
        return url  # a plain path: no query to speak of
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    return (
        head
        + rest
        + (qmark + _redact_params(query) if qmark else "")
        + (hash_ + _redact_params(fragment) if hash_ else "")
    )


def _secrets_of(url: str) -> set[str]:
    """The credentials in ``url`` as written and as a driver would decode them."""
    raw: list[str] = []
    match = _USERINFO.match(url)
    if match and match["pw"]:
        raw.append(match["pw"])
    tail = url[match.end() :] if match else url
    for params in (tail.partition("#")[2], tail.partition("#")[0].partition("?")[2]):
        for part in re.split(r"[&;]", params):
            name, eq, value = part.partition("=")
            if eq and value and is_secret_name(name):
                raw.append(value)
    found = set()
    for secret in raw:
        found |= {secret, unquote(secret), unquote_plus(secret)}
    return {s for s in found if s}


def _redact_match(match: re.Match[str]) -> str:
    # punctuation that ends a sentence or a quote is not part of the URL
    url, tail = _TRAILING.fullmatch(match.group(0)).groups()  # type: ignore[union-attr]
    return redact_url(url) + tail


def redact_text(text: str, *urls: str) -> str:
    """``text`` with the credentials of ``urls``, and of any URL in it, replaced by ``***``.

    A driver may echo a password without its URL, so the secrets of ``urls`` are
    replaced wherever they appear (as written and decoded); URLs found in the text are
    masked as ``redact_url`` does, and so are ``password=...``-style pairs.
    """
    text = _URL_IN_TEXT.sub(_redact_match, text)
    text = _SECRET_PAIR.sub(
        lambda m: m.group(0) if m["value"] == MASK else f"{m['name']}{m['eq']}{MASK}", text
    )
    secrets = set().union(*(_secrets_of(url) for url in urls)) if urls else set()
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` only, for URLs whose path may be the secret (webhooks).

    Never raises: a URL that does not parse is shown as its scheme alone.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" of an IPv6 host, or in a password
        scheme = re.match(_SCHEME, url)
        return f"{scheme.group(0)}?" if scheme else "?"
    if not parts.scheme:
        return "?"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        port = None
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{port}" if port else "")
