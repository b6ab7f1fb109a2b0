"""A testing hook: kill the agent's own process at a named point of a stage.

Every stage of ``modelyard agent`` is written so that a process killed anywhere leaves
either the old state (the stage runs again and finds its effect done) or the new one.
The crash-safety tests prove it by killing the process at each of these points, named
in the order a retrain reaches them:

``incident-opened``, ``action-created``, ``retrain-mid``, ``retrain-done``,
``candidate-recorded``, ``gates-stored``, ``canary-alias-set``, ``look-computed``,
``decided``, ``production-moved``, ``finished``.

``checkpoint(name)`` sends SIGKILL to its own process when the environment variable
``MODELYARD_AGENT_CRASH_AT`` equals ``name``; otherwise it does nothing (one lookup of
the environment). Never set it outside a test.

>>> checkpoint("decided")  # MODELYARD_AGENT_CRASH_AT is not set: nothing happens
"""

from __future__ import annotations

import os
import signal

__all__ = ["CHECKPOINTS", "CRASH_ENV", "checkpoint"]

#: the environment variable naming the checkpoint to die at
CRASH_ENV = "MODELYARD_AGENT_CRASH_AT"

#: every checkpoint, in the order one retrain reaches them
CHECKPOINTS = (
    "incident-opened",
    "action-created",
    "retrain-mid",
    "retrain-done",
    "candidate-recorded",
    "gates-stored",
    "canary-alias-set",
    "look-computed",
    "decided",
    "production-moved",
    "finished",
)


def checkpoint(name: str) -> None:
    """SIGKILL this process when ``MODELYARD_AGENT_CRASH_AT == name`` (a testing hook)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
