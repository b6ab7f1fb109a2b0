"""What a running step sees: :func:`current_step`.

Inside a step (in any executor) ``current_step()`` says which step run this is and lets
the step record an input the runner cannot see, such as the feature set a training set
was built from; the runner writes it to ``pipeline_inputs`` with the step's outputs.

>>> current_step()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelyard.errors.NotFoundError: No pipeline step is running here: ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = [
    "RecordedInput",
    "StepContext",
    "current_step",
    "keying",
    "project_settings",
    "step_context",
]

#: the kinds of input a step may record itself ("output" inputs are the runner's)
RECORDABLE_KINDS = ("features", "file", "data")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/\- ]{0,254}")
_DIGEST = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class RecordedInput:
    """An input a step recorded with :meth:`StepContext.record_input`."""

    name: str
    digest: str
    kind: str
    description: str | None


@dataclass
class StepContext:
    """The step run in progress: its run ids, name and the project's settings."""

    run_id: str
    pipeline_run_id: str
    step: str
    settings: Settings
    #: argument names already recorded by the runner (an input name is unique per step)
    input_names: frozenset[str] = frozenset()
    recorded: list[RecordedInput] = field(default_factory=list)

    def record_input(
        self, name: str, digest: str, *, kind: str = "features", description: str | None = None
    ) -> None:
        """Record that this step read ``name`` with content ``digest`` (for lineage).

        ``kind`` is one of ``features``, ``file``, ``data``; ``digest`` a lowercase hex
        digest (sha256). Recording the same input twice with the same digest is a no-op.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInputError(
                f"Expected an input name of 1-255 letters, digits, '_ . : / -' or spaces, "
                f"got {name!r}",
                loc="record_input.name",
            )
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidInputError(
                f"Expected a lowercase hex digest of 8-64 characters, got {digest!r}",
                loc="record_input.digest",
            )
        if kind not in RECORDABLE_KINDS:
            raise InvalidInputError(
                f"Expected a kind ({', '.join(RECORDABLE_KINDS)}), got {kind!r}",
                loc="record_input.kind",
            )
        if description is not None and not isinstance(description, str):
            raise InvalidInputError(
                f"Expected a description string, got {type(description).__name__}",
                loc="record_input.description",
            )
        if name in self.input_names:
            raise ConflictError(
                f"Step {self.step!r} already has an input named {name!r} (one of its "
                "arguments); record this one under another name"
            )
        for seen in self.recorded:
            if seen.name == name:
                if seen.digest == digest and seen.kind == kind:
                    return
                raise ConflictError(
                    f"Step {self.step!r} already recorded input {name!r} with digest "
                    f"{seen.digest[:12]}...; cannot record it again as {digest[:12]}..."
                )
        self.recorded.append(RecordedInput(name, digest, kind, description))


_current: ContextVar[StepContext | None] = ContextVar("modelyard_current_step", default=None)
#: the settings of the pipeline run whose cache keys are being computed (for fingerprints)
_keying: ContextVar[Settings | None] = ContextVar("modelyard_keying_settings", default=None)


def current_step() -> StepContext:
    """The step running in this context; ``NotFoundError`` outside a pipeline step."""
    found = _current.get()
    if found is None:
        raise NotFoundError(
            "No pipeline step is running here: current_step() works only inside a @step "
            "function run by a pipeline (Pipeline.run or `modelyard pipeline run`)"
        )
    return found


@contextmanager
def step_context(context: StepContext) -> Iterator[StepContext]:
    """Make ``context`` the current step for the block."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextmanager
def keying(settings: Settings) -> Iterator[None]:
    """The runner computes cache keys in this block: fingerprints see ``settings``."""
    token = _keying.set(settings)
    try:
        yield
    finally:
        _keying.reset(token)


def project_settings() -> Settings | None:
    """The settings of the pipeline run at hand, or None outside one.

    Inside a step: its project's; in a step's ``fingerprint`` hook (run by the runner
    before the step, in the runner's process): the run's, so a hook reads the same
    stores the step will.
    """
    found = _current.get()
    return found.settings if found is not None else _keying.get()
