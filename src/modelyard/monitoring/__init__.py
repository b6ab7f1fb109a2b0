"""Monitoring: is production data still like the data the model was trained on?

Prepare a ``Reference`` once, from raw data or from a model package's profile, then
compare it with each window of production data; ``domain_classifier`` looks for shifts
that only show in several columns together.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> reference = Reference.from_data({"x": rng.normal(size=3000)})
>>> reference.compare({"x": rng.normal(size=1000)}).drifted_columns
[]
"""

from __future__ import annotations

from modelyard.monitoring.domain import DomainClassifierResult, domain_classifier
from modelyard.monitoring.drift import Reference
from modelyard.monitoring.report import ColumnDrift, DriftReport
from modelyard.monitoring.settings import DriftSettings

__all__ = [
    "ColumnDrift",
    "DomainClassifierResult",
    "DriftReport",
    "DriftSettings",
    "Reference",
    "domain_classifier",
]
