"""Step outputs: how each value is stored as files, content-addressed, and read back.

Built-in materializers, in lookup order: JSON values (``json``), pandas, polars and
pyarrow tables (``pandas.parquet``, ``polars.parquet``, ``arrow.parquet``), NumPy arrays
(``numpy.npy``), paths (``path.file``, ``path.folder``) and models (``model.package``).
Materializers the user registers are tried first. See :mod:`.base` for the contract.
"""

from __future__ import annotations

from modelyard.pipelines.materializers.arrays import NumpyMaterializer
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
from modelyard.pipelines.materializers.base import _register_builtin as _builtin
from modelyard.pipelines.materializers.frames import (
    ArrowMaterializer,
    PandasMaterializer,
    PolarsMaterializer,
)
from modelyard.pipelines.materializers.models import ModelMaterializer, load_options
from modelyard.pipelines.materializers.paths import FileMaterializer, FolderMaterializer
from modelyard.pipelines.materializers.values import JsonMaterializer

for _m in (
    JsonMaterializer(),
    PandasMaterializer(),
    PolarsMaterializer(),
    ArrowMaterializer(),
    NumpyMaterializer(),
    FileMaterializer(),
    FolderMaterializer(),
    ModelMaterializer(),
):
    _builtin(_m)

__all__ = [
    "AUTO",
    "Materializer",
    "StoredOutput",
    "canonical_json",
    "default_cache_dir",
    "get_materializer",
    "load_options",
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
