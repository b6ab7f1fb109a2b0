"""Step outputs: how each value is stored as files, content-addressed, and read back.

Built-in materializers, in lookup order: JSON values (``json``), pandas, polars and
pyarrow tables (``pandas.parquet``, ``polars.parquet``, ``arrow.parquet``), NumPy arrays
(``numpy.npy``), paths (``path.file``, ``path.folder``) and models (``model.package``).
Materializers the user registers are tried first. See :mod:`.base` for the contract.
"""

from __future__ import annotations

from modelyard.pipelines.materializers import arrays, frames, values  # noqa: F401 - registers
from modelyard.pipelines.materializers.base import (
    AUTO,
    Materializer,
    StoredOutput,
    canonical_json,
    default_cache_dir,
    get_materializer,
    load_output,
    matches_type,
    materializer_for,
    materializer_for_value,
    register_materializer,
    registered_materializers,
    save_output,
    type_name,
    unregister_materializer,
)

__all__ = [
    "AUTO",
    "Materializer",
    "StoredOutput",
    "canonical_json",
    "default_cache_dir",
    "get_materializer",
    "load_output",
    "materializer_for",
    "materializer_for_value",
    "matches_type",
    "register_materializer",
    "registered_materializers",
    "save_output",
    "type_name",
    "unregister_materializer",
]
