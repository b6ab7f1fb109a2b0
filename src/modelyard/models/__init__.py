"""The model package: flavors, signature, reference profile, ONNX export and parity."""

from __future__ import annotations
