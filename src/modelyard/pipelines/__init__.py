"""Training pipelines: steps, pipelines, the step cache, runs and tuning."""

from __future__ import annotations
