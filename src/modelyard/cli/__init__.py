"""The ``modelyard`` command line."""

from __future__ import annotations
