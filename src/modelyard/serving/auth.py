"""API keys with scopes: ``predict`` to ask for predictions, ``admin`` to change the server.

Keys come from ``serving.api_keys`` in ``modelyard.yaml`` (each read from an environment
variable, or given only as its sha256) and from ``MODELYARD_API_KEYS``
(``key:scope+scope,...``). Only sha256 digests are kept in memory; a presented key is
hashed and compared with every known digest in constant time (``hmac.compare_digest``),
so timing reveals neither which key nor how much of it matched. Keys are never logged;
errors say only "missing", "unknown" or "lacks the scope".

With no keys configured, prediction is open (a laptop) and admin calls are refused.

>>> keys = ApiKeys.from_settings((), {"MODELYARD_API_KEYS": "s3cret:predict+admin"})
>>> keys.check("Bearer s3cret", "admin")
'env-1'
>>> keys.check(None, "predict")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.serving.auth.Unauthorized: Missing API key: send it as ...
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from modelyard.config import ApiKeySettings
from modelyard.errors import InvalidInputError, ModelyardError

__all__ = ["ApiKeys", "Forbidden", "Unauthorized"]

SCOPES = ("predict", "admin")


class Unauthorized(ModelyardError):
    status: ClassVar[int] = 401
    type: ClassVar[str] = "unauthorized"


class Forbidden(ModelyardError):
    status: ClassVar[int] = 403
    type: ClassVar[str] = "forbidden"


@dataclass(frozen=True)
class _Key:
    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The server's keys, as digests."""

    def __init__(self, keys: Sequence[_Key]) -> None:
        self._keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @classmethod
    def from_settings(
        cls, configured: Sequence[ApiKeySettings], environ: Mapping[str, str]
    ) -> ApiKeys:
        keys: list[_Key] = []
        for spec in configured:
            if spec.key_env is not None:
                value = environ.get(spec.key_env, "")
                if not value:
                    raise InvalidInputError(
                        f"API key {spec.name!r} is read from ${spec.key_env}, which is not set",
                        loc=f"serving.api_keys.{spec.name}",
                    )
                digest = _digest(value)
            else:
                assert spec.sha256 is not None  # ApiKeySettings checks one of the two
                digest = bytes.fromhex(spec.sha256)
            keys.append(_Key(spec.name, digest, frozenset(spec.scopes)))
        raw = environ.get("MODELYARD_API_KEYS", "")
        for i, item in enumerate(p for p in raw.split(",") if p.strip()):
            key, _, scopes = item.strip().rpartition(":")
            wanted = frozenset(s for s in scopes.split("+") if s)
            if not key or not wanted or not wanted <= set(SCOPES):
                raise InvalidInputError(
                    f"Expected MODELYARD_API_KEYS entries like KEY:predict or KEY:predict+admin; "
                    f"entry {i + 1} does not parse (the key itself is not shown)",
                    loc="MODELYARD_API_KEYS",
                )
            keys.append(_Key(f"env-{i + 1}", _digest(key), wanted))
        return cls(keys)

    def _match(self, presented: str) -> _Key | None:
        digest = _digest(presented)
        found = None
        for key in self._keys:  # every key is compared: no early exit on a match
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def check(self, header: str | None, scope: str) -> str | None:
        """The name of the key allowed ``scope``; 401 or 403 otherwise.

        ``header`` is the ``Authorization`` value (``Bearer KEY``) or an ``X-API-Key``
        value. Without keys configured, ``predict`` is open and ``admin`` is refused.
        """
        if not self._keys:
            if scope == "predict":
                return None
            raise Forbidden(
                "Admin calls need an API key with the 'admin' scope, and none is configured "
                "(serving.api_keys in modelyard.yaml or MODELYARD_API_KEYS)"
            )
        if not header:
            raise Unauthorized(
                "Missing API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            )
        presented = header[7:] if header[:7].lower() == "bearer " else header
        key = self._match(presented.strip())
        if key is None:
            raise Unauthorized("Unknown API key")
        if scope not in key.scopes and "admin" not in key.scopes:
            raise Forbidden(f"This API key lacks the {scope!r} scope")
        return key.name
