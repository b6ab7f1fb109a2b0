"""Where heavy work runs: ``local`` (this machine's processes) or ``ray`` (a cluster).

``engine: local | ray`` in ``modelyard.yaml`` picks the default and ``--engine`` (or an
``engine=`` argument) overrides it (:func:`engine_for`). The ``ray`` engine connects
with :func:`connect_ray`, ships settings to tasks without their secrets
(:func:`ship_settings` / :func:`unship_settings`) and sizes each task with
:func:`task_options`. Tasks read and write the project's own metadata database and
artifact store, so :func:`check_shared_state` refuses stores only the driver's machine
can reach when the cluster spans several.
"""

from __future__ import annotations

from modelyard.engine.ray_session import (
    ENGINES,
    EngineName,
    check_shared_state,
    cluster_hosts,
    connect_ray,
    engine_for,
    import_ray,
    task_options,
)
from modelyard.engine.shipping import ShippedSettings, secret_env, ship_settings, unship_settings
from modelyard.engine.worker import fresh_project_code

__all__ = [
    "ENGINES",
    "EngineName",
    "ShippedSettings",
    "check_shared_state",
    "cluster_hosts",
    "connect_ray",
    "engine_for",
    "fresh_project_code",
    "import_ray",
    "secret_env",
    "ship_settings",
    "task_options",
    "unship_settings",
]
