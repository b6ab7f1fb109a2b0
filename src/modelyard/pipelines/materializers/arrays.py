"""NumPy arrays and scalars as ``.npy`` files, written and read with ``allow_pickle=False``.

Every dtype NumPy writes without pickle comes back bit for bit (NaN payloads and
``-0.0`` too), with its shape (0-d and empty included) and memory order (a Fortran-order
array stays Fortran-order). A NumPy scalar (``np.float32(1.5)``) is stored as a 0-d
array and loads as the same scalar type. Arrays of Python objects are refused: ``.npy``
can hold them only by pickling. Subclasses of ``ndarray`` (masked arrays, matrices) are
not handled: ``.npy`` would drop what makes them a subclass (a mask).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InvalidInputError

__all__ = ["NumpyMaterializer"]

FILE = "array.npy"


class NumpyMaterializer:
    """``numpy.ndarray`` (exactly) and NumPy scalars, as ``array.npy``."""

    name = "numpy.npy"
    version = 1

    def handles(self, tp: Any) -> bool:
        if tp is np.ndarray:
            return True
        if getattr(tp, "__origin__", None) is np.ndarray:  # npt.NDArray[np.float64]
            return True
        return isinstance(tp, type) and issubclass(tp, np.generic)

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        scalar = isinstance(value, np.generic)
        array = np.asarray(value) if scalar else value
        if array.dtype.hasobject:
            raise InvalidInputError(
                f"Expected a numpy array of numbers, strings, bytes or times, got dtype "
                f"{array.dtype} (Python objects): .npy stores those only by pickling, which "
                "modelyard never does. Convert it (arr.astype(str), a DataFrame, a list)",
                loc="output",
            )
        with open(folder / FILE, "wb") as handle, warnings.catch_warnings():
            # non-ASCII field names need format 3.0 (NumPy >= 1.17): nothing to warn about
            warnings.filterwarnings("ignore", "Stored array in format 3.0", UserWarning)
            np.save(handle, array, allow_pickle=False)
        return {"scalar": True} if scalar else {}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        array = np.load(folder / FILE, allow_pickle=False)
        return array[()] if meta.get("scalar") else array
