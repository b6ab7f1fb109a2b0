"""Choosing the engine, connecting to Ray, and what each Ray task asks of the cluster.

``ray`` is an optional extra: this module imports it only when the ``ray`` engine is
used, so ``engine: local`` (the default) needs nothing more installed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Collection
from types import ModuleType
from typing import Any, Literal

from modelyard.config import Settings
from modelyard.engine.shipping import secret_env
from modelyard.errors import InvalidInputError, MissingExtraError
from modelyard.store.urls import is_local_path, redact_url

__all__ = [
    "ENGINES",
    "EngineName",
    "check_shared_state",
    "cluster_hosts",
    "connect_ray",
    "engine_for",
    "import_ray",
    "task_options",
]

log = logging.getLogger(__name__)

EngineName = Literal["local", "ray"]
#: the engines a command may be told to use
ENGINES: tuple[EngineName, ...] = ("local", "ray")

_lock = threading.Lock()
#: hosts that name this machine in Ray's node table
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def engine_for(
    settings: Settings, override: str | None = None, *, loc: str = "--engine"
) -> EngineName:
    """The engine to run on: ``override`` (``--engine`` / ``engine=``) else ``settings.engine``.

    >>> from pathlib import Path
    >>> s = Settings(project_dir=Path("/p"), name="p", db_url="sqlite://", artifacts="/a")
    >>> engine_for(s), engine_for(s, "ray")
    ('local', 'ray')
    >>> engine_for(s, "spark")
    Traceback (most recent call last):
    ...
    modelyard.errors.InvalidInputError: Expected an engine (local or ray), got 'spark' - at --engine
    """
    if override is None:
        return settings.engine
    if override not in ENGINES:
        raise InvalidInputError(
            f"Expected an engine (local or ray), got {override!r}",
            loc=loc,
        )
    return "ray" if override == "ray" else "local"


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`MissingExtraError` naming the ``ray`` extra."""
    try:
        import ray  # the optional extra: only the ray engine needs it
    except ImportError as exc:
        raise MissingExtraError("The ray engine", "ray") from exc
    return ray


def _same_machine(host: str) -> str:
    """A host of Ray's node table, with this machine's names folded into one."""
    if host in _LOOPBACK or host in {socket.gethostname(), socket.getfqdn()}:
        return "127.0.0.1"
    return host


def check_shared_state(
    settings: Settings, node_hosts: Collection[str], *, also: Collection[str] = ()
) -> None:
    """Refuse stores only one machine can reach when the cluster's nodes are on several.

    A SQLite metadata database (``db_url``) or a local-folder artifact store
    (``artifacts``) is only the driver's: tasks on another host would write records
    nobody reads, or fail. ``also`` adds ``"online_store"`` (a SQLite online store, for
    materialization) and ``"prediction_log"`` (the serving log folder, read by
    backfills; shipped logs in object storage are fine) for the callers that use them.
    One host (every node on 127.0.0.1 or this machine's name) is always allowed.
    """
    hosts = {_same_machine(h) for h in node_hosts}
    if len(hosts) <= 1:
        return
    problems: list[tuple[str, str]] = []
    if settings.db_url.startswith("sqlite"):
        problems.append(("db_url", f"a SQLite database ({redact_url(settings.db_url)})"))
    if is_local_path(settings.artifacts):
        problems.append(("artifacts", f"a local folder ({settings.artifacts})"))
    if "online_store" in also and settings.features.online_store.startswith("sqlite"):
        store = redact_url(settings.features.online_store)
        problems.append(("features.online_store", f"a SQLite online store ({store})"))
    if "prediction_log" in also and is_local_path(settings.artifacts):
        problems.append(
            ("serving.log_dir", f"a local prediction log ({settings.prediction_log_dir})")
        )
    if problems:
        field, what = problems[0]
        more = "".join(f"; {f} is {w}" for f, w in problems[1:])
        raise InvalidInputError(
            f"The Ray cluster has nodes on {len(hosts)} hosts ({', '.join(sorted(hosts))}) "
            f"but {field} is {what}{more}, which only this machine can reach: use PostgreSQL "
            "for db_url and object storage (s3://...) for artifacts, or a one-machine cluster",
            loc=field,
        )


def cluster_hosts() -> set[str]:
    """The hosts of the connected cluster's live nodes."""
    ray = import_ray()
    return {
        str(node.get("NodeManagerAddress") or node.get("NodeManagerHostname"))
        for node in ray.nodes()
        if node.get("Alive")
    }


def connect_ray(settings: Settings) -> None:
    """Connect this process to the cluster of ``settings.ray`` (idempotent), then check it.

    The address is ``ray.address``, else ``$RAY_ADDRESS``, else a local cluster started
    for this process. An already connected process keeps its connection. The job's
    ``runtime_env`` carries the secrets of ``settings`` as environment variables (see
    :mod:`modelyard.engine.shipping`); :func:`task_options` adds them per task too, so
    tasks of another project's settings in the same job restore theirs.
    """
    ray = import_ray()
    with _lock:
        if not ray.is_initialized():
            address = settings.ray.address or os.environ.get("RAY_ADDRESS") or None
            env = secret_env(settings)
            ray.init(
                address=address,
                namespace=settings.ray.namespace,
                log_to_driver=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env} if env else None,
            )
    check_shared_state(settings, cluster_hosts())


def _cluster_gpus() -> float:
    ray = import_ray()
    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def _check_amount(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidInputError(f"Expected {name} to be a number >= 0, got {value!r}", loc=name)


def task_options(
    settings: Settings,
    *,
    num_cpus: float | None = None,
    memory: int | None = None,
    num_gpus: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a Ray task's or actor's ``.options(...)``.

    CPUs and memory default to ``ray.num_cpus`` / ``ray.memory``; GPUs are asked for only
    when the connected cluster has some (a step declaring a GPU runs on CPUs elsewhere,
    logged). The ``runtime_env`` carries the settings' secrets (never the arguments).
    """
    for name, value in (("num_cpus", num_cpus), ("memory", memory), ("num_gpus", num_gpus)):
        _check_amount(name, value)
    options: dict[str, Any] = {"num_cpus": settings.ray.num_cpus if num_cpus is None else num_cpus}
    reserved = settings.ray.memory if memory is None else memory
    if reserved:
        options["memory"] = int(reserved)
    if num_gpus:
        if _cluster_gpus() > 0:
            options["num_gpus"] = num_gpus
        else:
            log.warning("the Ray cluster has no GPU: the task runs on CPUs")
    env = secret_env(settings)
    if env:
        options["runtime_env"] = {"env_vars": env}
    return options
