"""Foundation stores: the metadata database and the content-addressed artifact store."""

from __future__ import annotations
