"""What every flavor provides: saving a model in a safe format and loading it back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Flavor", "LoadOptions", "SavedModel"]


@dataclass(frozen=True)
class SavedModel:
    """What ``Flavor.save`` wrote: the model file, its task and classes."""

    model_file: str
    model_class: str
    task: str
    classes: list[str] | None = None
    needs_trust: bool = False
    feature_importance: dict[str, float] | None = None
    extra_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadOptions:
    """What the project allows a load to do."""

    trusted_types: tuple[str, ...]
    trust_code: bool = False


class Flavor(Protocol):
    """A family of models (scikit-learn, XGBoost, ...) and how to store them safely."""

    name: str

    @property
    def requirements(self) -> tuple[str, ...]:
        """Distributions whose versions the package pins (read from the interpreter)."""
        ...

    def handles(self, model: Any) -> bool:
        """True when ``model`` is of this flavor."""
        ...

    def save(self, model: Any, folder: Path, feature_names: list[str]) -> SavedModel:
        """Write ``model`` into ``folder`` in a safe format."""
        ...

    def load(self, folder: Path, saved: SavedModel, options: LoadOptions) -> Any:
        """Read the model back from ``folder`` (verified files only)."""
        ...

    def scores(self, model: Any, features: Any) -> np.ndarray:
        """The model's numeric output on ``features``: class probabilities or predictions."""
        ...
