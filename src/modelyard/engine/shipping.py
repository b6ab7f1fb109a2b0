"""Settings shipped to a Ray task without their secrets.

A task's arguments are stored by Ray (the GCS, the object store, the dashboard's task
list), so :func:`ship_settings` puts only the settings with their secrets masked in
them: the password and secret query values of ``db_url``, ``artifacts`` and
``features.online_store`` (``redact_url``) and each alert's ``webhook`` (its origin
only). The secrets travel beside the task as environment variables of its Ray
``runtime_env`` (:func:`secret_env`, set by :func:`modelyard.engine.task_options` and
by :func:`modelyard.engine.connect_ray` for the job), under the names a project already
reads them from: ``MODELYARD_DB_URL``, ``MODELYARD_ARTIFACTS``,
``MODELYARD_ONLINE_STORE`` and ``MODELYARD_ALERT_WEBHOOK_<i>`` (``i`` the alert's
position). :func:`unship_settings` on the worker reads them back from its environment,
so a worker started with these variables set (a cluster's own secret store) needs
nothing shipped. A restored value must be the shipped URL once masked: a worker never
silently uses another database than the driver's.

>>> from pathlib import Path
>>> from modelyard.config import Settings
>>> s = Settings(project_dir=Path("/p"), name="p", db_url="postgresql://me:pw@h/db",
...              artifacts="/p/a")
>>> shipped = ship_settings(s)
>>> shipped.settings.db_url
'postgresql://me:***@h/db'
>>> secret_env(s)
{'MODELYARD_DB_URL': 'postgresql://me:pw@h/db'}
>>> unship_settings(shipped, environ=secret_env(s)) == s
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.store.urls import MASK, redact_url, url_origin

__all__ = ["ShippedSettings", "secret_env", "ship_settings", "unship_settings"]

#: the environment variable each store URL is restored from on a worker
URL_VARIABLES = {
    "db_url": "MODELYARD_DB_URL",
    "artifacts": "MODELYARD_ARTIFACTS",
    "features.online_store": "MODELYARD_ONLINE_STORE",
}


class ShippedSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings with their secrets masked, and where each masked value comes back from."""

    settings: Settings
    #: (field, environment variable) for each masked value, e.g. ("db_url", "MODELYARD_DB_URL")
    restore: tuple[tuple[str, str], ...] = ()


def _webhook_variable(index: int) -> str:
    return f"MODELYARD_ALERT_WEBHOOK_{index}"


def _masked_webhook(url: str) -> str:
    return f"{url_origin(url)}/{MASK}"


def _urls(settings: Settings) -> dict[str, str]:
    return {
        "db_url": settings.db_url,
        "artifacts": settings.artifacts,
        "features.online_store": settings.features.online_store,
    }


def secret_env(settings: Settings) -> dict[str, str]:
    """The environment variables a worker needs to restore ``settings``' secrets.

    Empty when the settings hold none (URLs without passwords: a ``.pgpass``, IAM roles).
    """
    env: dict[str, str] = {}
    for field, url in _urls(settings).items():
        if redact_url(url) != url:
            env[URL_VARIABLES[field]] = url
    for index, rule in enumerate(settings.monitoring.alerts):
        if rule.webhook is not None:
            env[_webhook_variable(index)] = rule.webhook
    return env


def ship_settings(settings: Settings) -> ShippedSettings:
    """What goes into a task's arguments: ``settings`` with every secret masked."""
    restore: list[tuple[str, str]] = []
    urls = {field: redact_url(url) for field, url in _urls(settings).items()}
    for field, url in _urls(settings).items():
        if urls[field] != url:
            restore.append((field, URL_VARIABLES[field]))
    alerts = []
    for index, rule in enumerate(settings.monitoring.alerts):
        shipped_rule = rule
        if rule.webhook is not None:
            restore.append((f"monitoring.alerts[{index}].webhook", _webhook_variable(index)))
            shipped_rule = msgspec.structs.replace(rule, webhook=_masked_webhook(rule.webhook))
        alerts.append(shipped_rule)
    masked = msgspec.structs.replace(
        settings,
        db_url=urls["db_url"],
        artifacts=urls["artifacts"],
        features=msgspec.structs.replace(
            settings.features, online_store=urls["features.online_store"]
        ),
        monitoring=msgspec.structs.replace(settings.monitoring, alerts=tuple(alerts)),
    )
    return ShippedSettings(settings=masked, restore=tuple(restore))


def _restored(field: str, variable: str, shipped: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable)
    if not value:
        raise InvalidInputError(
            f"Expected the environment variable {variable} on this Ray worker to hold the "
            f"secret of {field} ({shipped}), got none: connect with "
            "modelyard.engine.connect_ray / task_options, or set it on the cluster's nodes",
            loc=field,
        )
    masked = _masked_webhook(value) if field.endswith(".webhook") else redact_url(value)
    if masked != shipped:
        raise InvalidInputError(
            f"Expected {variable} on this Ray worker to be {shipped} with its secret, got "
            f"{masked}: the worker's environment names another store than the driver's",
            loc=field,
        )
    return value


def unship_settings(
    shipped: ShippedSettings, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """On the worker: the settings with their secrets restored from the environment.

    ``environ`` defaults to ``os.environ`` (where the task's ``runtime_env`` put them).
    """
    env = os.environ if environ is None else environ
    settings = shipped.settings
    values = dict(shipped.restore)
    urls = _urls(settings)
    for field in urls:
        if field in values:
            urls[field] = _restored(field, values[field], urls[field], env)
    alerts = []
    for index, rule in enumerate(settings.monitoring.alerts):
        field = f"monitoring.alerts[{index}].webhook"
        restored_rule = rule
        if field in values and rule.webhook is not None:
            restored_rule = msgspec.structs.replace(
                rule, webhook=_restored(field, values[field], rule.webhook, env)
            )
        alerts.append(restored_rule)
    return msgspec.structs.replace(
        settings,
        db_url=urls["db_url"],
        artifacts=urls["artifacts"],
        features=msgspec.structs.replace(
            settings.features, online_store=urls["features.online_store"]
        ),
        monitoring=msgspec.structs.replace(settings.monitoring, alerts=tuple(alerts)),
    )
