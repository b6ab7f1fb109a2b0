"""Training pipelines; for now the nycflights13 demo."""

from __future__ import annotations
