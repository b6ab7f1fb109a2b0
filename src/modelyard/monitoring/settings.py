"""``DriftSettings``: when a column counts as drifted, every threshold overridable.

A column drifts when both hold:

1. its test (KS for numbers, chi-square for categories) is significant at ``alpha`` after
   correcting across columns (``correction``: Holm by default; ``"bonferroni"``, ``"bh"``);
2. its effect size exceeds ``max(calibrated, practical minimum)``. The calibrated part is
   the ``null_quantile`` (99th percentile) of the effect between two samples of the
   reference itself at the window's size, from ``resamples`` draws; the practical minimum
   is ``min_wasserstein`` (0.1: a tenth of a robust standard deviation moved) for numbers
   and ``min_jensenshannon`` (0.1 base-2 JS distance, the common industry default) for
   categories. Small windows are then held back by noise, large ones by relevance.

The missing rate is a cause of its own: a 2x2 chi-square test, corrected in the same
family, and an absolute change of at least ``min_missing_change`` (0.05).

>>> DriftSettings(alpha=0.01).correction
'holm'
>>> DriftSettings(alpha=2.0)
Traceback (most recent call last):
...
modelyard.errors.InvalidInputError: Expected a number in (0, 1), got 2.0 - at settings.alpha
"""

from __future__ import annotations

import msgspec

from modelyard.errors import InvalidInputError
from modelyard.monitoring.stats import PSI_EPSILON, Correction

__all__ = ["DriftSettings"]


class DriftSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the drift engine; see the module docstring for how they combine."""

    alpha: float = 0.05
    correction: Correction = "holm"
    min_wasserstein: float = 0.1
    """Practical minimum of the Wasserstein distance divided by the robust scale."""
    min_jensenshannon: float = 0.1
    """Practical minimum of the base-2 Jensen-Shannon distance."""
    min_missing_change: float = 0.05
    """Practical minimum of ``|missing_current - missing_reference|``."""
    null_quantile: float = 0.99
    resamples: int = 200
    calibration_size: int = 500
    """Largest resample drawn; larger windows extrapolate by ``sqrt(1/n + 1/m)``."""
    psi_epsilon: float = PSI_EPSILON
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("alpha", "null_quantile", "psi_epsilon"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise InvalidInputError(
                    f"Expected a number in (0, 1), got {value!r}", loc=f"settings.{name}"
                )
        for name in ("min_wasserstein", "min_jensenshannon", "min_missing_change"):
            if not getattr(self, name) >= 0.0:
                raise InvalidInputError(
                    f"Expected a number >= 0, got {getattr(self, name)!r}", loc=f"settings.{name}"
                )
        for name in ("resamples", "calibration_size"):
            if getattr(self, name) < 10:
                raise InvalidInputError(
                    f"Expected an integer >= 10, got {getattr(self, name)!r}",
                    loc=f"settings.{name}",
                )
        if self.correction not in ("bonferroni", "holm", "bh"):
            raise InvalidInputError(
                f"Expected 'bonferroni', 'holm' or 'bh', got {self.correction!r}",
                loc="settings.correction",
            )
