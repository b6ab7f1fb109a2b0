"""Value types of experiment tracking."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArtifactEntry", "DatasetInput", "Experiment", "Metric", "Run", "RunStatus"]


class RunStatus(enum.StrEnum):
    """Where a run is in its life. A run whose process died is shown as KILLED."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    created_at: int
    description: str | None = None


@dataclass(frozen=True)
class Metric:
    """One point of a metric's history."""

    key: str
    value: float
    step: int
    timestamp: int


@dataclass(frozen=True)
class DatasetInput:
    """A data set a run read: a digest over its whole content, its schema and size."""

    name: str
    context: str
    digest: str
    schema: list[dict[str, str]]
    num_rows: int
    source: str | None


@dataclass(frozen=True)
class ArtifactEntry:
    """A file a run logged: its path inside the run and its content address."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Run:
    """A run with its params, tags and the latest value of each metric."""

    id: str
    experiment_id: str
    experiment: str
    name: str
    status: RunStatus
    start_time: int
    end_time: int | None
    parent_run_id: str | None
    git_commit: str | None
    git_dirty: bool | None
    python_version: str
    packages: dict[str, str]
    host: str
    user: str
    source: str | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        return None if self.end_time is None else (self.end_time - self.start_time) / 1000

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the run."""
        return {
            "id": self.id,
            "experiment_id": self.experiment_id,
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_s": self.duration_s,
            "parent_run_id": self.parent_run_id,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "python_version": self.python_version,
            "packages": self.packages,
            "host": self.host,
            "user": self.user,
            "source": self.source,
            "params": self.params,
            "tags": self.tags,
            "metrics": self.metrics,
        }
