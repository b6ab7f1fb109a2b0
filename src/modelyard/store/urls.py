"""Store URLs: telling local paths from URLs, and keeping credentials out of output.

>>> redact_url("postgresql+psycopg://alice:s3cret@db.internal:5432/ml")
'postgresql+psycopg://alice:***@db.internal:5432/ml'
>>> redact_url("s3://KEY:SECRET@bucket/prefix")
's3://KEY:***@bucket/prefix'
>>> redact_url("postgresql://u:pa/ss@word@db/ml")
'postgresql://u:***@db/ml'
>>> redact_url("/tmp/artifacts")
'/tmp/artifacts'
>>> redact_text("could not connect to postgresql://bob:hunter2@h/db", "postgresql://bob:hunter2@h/db")
'could not connect to postgresql://bob:***@h/db'
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["is_local_path", "redact_text", "redact_url"]

# The password runs to the LAST "@": a raw "/" or "@" in it must not end it early (that
# would leak the rest). Over-hiding a path that holds "@" is the safe side to err on.
_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<pw>.*)@", re.DOTALL
)
_ANY_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>\S*)@"
)


def is_local_path(url: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact_text(text: str, *urls: str) -> str:
    """``text`` with the passwords of ``urls``, and of any URL in it, replaced by ``***``."""
    for url in urls:
        match = _USERINFO.match(url)
        if match and match["pw"]:
            # drivers see the decoded password, so hide it in both forms
            for secret in sorted({match["pw"], unquote(match["pw"])}, key=len, reverse=True):
                text = text.replace(secret, "***")
    return _ANY_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
