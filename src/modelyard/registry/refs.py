"""References to model versions: ``churn/3``, ``churn@production``, ``churn@latest``.

>>> ModelRef.parse("churn@production")
ModelRef(name='churn', version=None, alias='production')
>>> str(ModelRef.parse("churn/3"))
'churn/3'
>>> ModelRef.parse("churn").alias
'latest'
>>> ModelRef.parse("churn/three")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a model ref like name/3, ... got 'churn/three' - at ref
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.errors import InvalidInputError

__all__ = ["LATEST", "ModelRef", "check_alias", "check_model_name"]

LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_REF = re.compile(r"^(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@]+))?$")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            "Expected a model name of letters, digits, '_', '-' and '.', starting with a "
            f"letter or digit, got {name!r}",
            loc="name",
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidInputError(
            "Expected an alias of letters, digits, '_' and '-', starting with a letter, "
            f"got {alias!r}",
            loc="alias",
        )
    if alias == LATEST:
        raise InvalidInputError(
            "'latest' always means the newest active version; it cannot be set", loc="alias"
        )
    return alias


@dataclass(frozen=True)
class ModelRef:
    """A model name with a version number or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidInputError(
                f"Expected a model ref like name/3, name@alias or name@latest, got {text!r}",
                loc="ref",
            )
        name = check_model_name(match["name"])
        if match["version"] is not None:
            return cls(name, version=int(match["version"]))
        return cls(name, alias=match["alias"] or LATEST)

    def __str__(self) -> str:
        return (
            f"{self.name}/{self.version}"
            if self.version is not None
            else f"{self.name}@{self.alias}"
        )
