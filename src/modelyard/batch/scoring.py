"""One model version loaded for batch scoring, and a batch scored into one Arrow table.

:class:`BatchScorer` opens the serving runtime the package names (the one ``models
optimize`` chose, via :meth:`modelyard.registry.ModelRegistry.open_runtime`, as the
server does) and checks it against the native model's scores on the package's held-out
rows (recorded when the package was written) before scoring anything. When that runtime
is a graph (ONNX), only the manifest, the graph and the held-out rows are read, each
checked against its hash, and the native model is not loaded at all: its library's
imports (seconds for scikit-learn with skops) would be paid again by every actor of the
``ray`` engine. Otherwise the whole package is loaded, every file checked. Each engine
builds one per process (the ``ray`` engine one per actor) and calls it on record
batches; it is safe to call from several threads.

The table it returns has one row per input row, in order: the key columns, the outputs
(null on a rejected row), ``model`` and ``version``, then the private columns
``_reject_column``, ``_reject_reason`` and ``_reject_values`` (the rejected row as JSON)
and, when logging, ``_input.<name>`` per signature column. The writer splits it into
predictions and rejects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from modelyard.batch.checks import ValueChecks, check_batch
from modelyard.config import ServingRuntime, Settings
from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.manifest import Manifest
from modelyard.models.outputs import outputs_from_scores
from modelyard.models.package import read_holdout
from modelyard.models.runtimes import Runtime, build_inputs
from modelyard.models.serving_model import SERVING_PARITY_ATOL as PARITY_ATOL
from modelyard.models.serving_model import check_parity
from modelyard.models.signature import Signature
from modelyard.registry.client import ModelRegistry

__all__ = [
    "INPUT_PREFIX",
    "PARITY_ATOL",
    "REJECT_COLUMN",
    "REJECT_REASON",
    "REJECT_VALUES",
    "BatchScorer",
    "output_type",
]

REJECT_COLUMN = "_reject_column"
REJECT_REASON = "_reject_reason"
REJECT_VALUES = "_reject_values"
INPUT_PREFIX = "_input."
_HOLDOUT_ROWS = 64
_ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(), "bool": pa.bool_()}


def output_type(dtype: str) -> pa.DataType:
    """The Arrow type an output of ``dtype`` is written as."""
    return _ARROW_TYPES.get(dtype, pa.string())


def _verify(runtime: Runtime, registry: ModelRegistry, manifest: Manifest, where: str) -> None:
    """The runtime's scores on the held-out rows equal the recorded native scores."""
    if manifest.holdout is None:
        if runtime.name != "native":  # pragma: no cover - optimize always records rows
            raise ModelError(
                f"{where}: the package has no held-out rows to verify {runtime.name!r} on"
            )
        return  # the native model itself: nothing to compare it with
    assert manifest.signature is not None
    data, expected = read_holdout(registry.artifacts, manifest)
    data, expected = data.head(_HOLDOUT_ROWS), expected[:_HOLDOUT_ROWS]
    if len(data) == 0:
        return
    with np.errstate(all="ignore"):
        got = runtime.scores(build_inputs(manifest.signature, data))
    check_parity(runtime.name, got, expected, where=where, refusal="not scoring with it")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):  # JSON has no NaN
        return None
    return value


class BatchScorer:
    """A verified model version that turns record batches into scored tables."""

    def __init__(
        self,
        settings: Settings,
        *,
        package_id: str,
        name: str,
        version: int,
        keys: Sequence[str],
        log_inputs: bool = False,
        runtime: ServingRuntime = "auto",
        trust: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.keys = list(keys)
        self.log_inputs = log_inputs
        self.value_checks: ValueChecks = settings.serving.value_checks
        with ModelRegistry(settings) as registry:
            manifest, self.runtime = registry.open_runtime(package_id, trust=trust, choice=runtime)
            if manifest.signature is None:
                raise InvalidInputError(
                    f"{name} v{version} has no input signature, so rows cannot be checked; "
                    "log it with a training frame (or signature=) to score it in batch",
                    loc="signature",
                )
            _verify(self.runtime, registry, manifest, f"{name} v{version}")
        self.manifest = manifest
        self.signature: Signature = manifest.signature

    @property
    def runtime_name(self) -> str:
        return str(self.runtime.name)

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Score ``batch``: one output row per input row, rejected rows explained."""
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
            if batch is None:
                return self.empty()
        checked = check_batch(self.signature, batch, self.value_checks)
        good = checked.good
        rows = batch.num_rows
        count = int(good.sum())
        outputs: dict[str, np.ndarray] = {}
        if count:
            chosen = {n: v if count == rows else v[good] for n, v in checked.columns.items()}
            inputs = build_inputs(self.signature, chosen)
            with np.errstate(all="ignore"):  # overflow inside the model is a value, not a crash
                scores = self.runtime.scores(inputs)
            outputs = outputs_from_scores(
                self.manifest.outputs,
                scores,
                task=self.manifest.task,
                classes=self.manifest.classes,
            )
        arrays: dict[str, pa.Array] = {k: batch.column(k) for k in self.keys}
        rejected = ~good
        for spec in self.manifest.outputs:
            kind = output_type(spec.dtype)
            if not count:
                arrays[spec.name] = pa.nulls(rows, kind)
                continue
            values = outputs[spec.name]
            if count == rows:
                arrays[spec.name] = pa.array(values, type=kind)
                continue
            full = np.empty(rows, dtype=values.dtype)
            full[good] = values
            if values.dtype == object:
                full[rejected] = None
                arrays[spec.name] = pa.array(full, type=kind)
            else:
                arrays[spec.name] = pa.array(full, type=kind, mask=rejected)
        arrays["model"] = pa.array([self.name] * rows, type=pa.string())
        arrays["version"] = pa.array(np.full(rows, self.version, dtype=np.int64))
        arrays[REJECT_COLUMN] = pa.array(checked.reject_columns, type=pa.string())
        arrays[REJECT_REASON] = pa.array(checked.reasons, type=pa.string())
        values_json: list[str | None] = [None] * rows
        if checked.rejected:
            for i in np.flatnonzero(rejected).tolist():
                row = batch.slice(i, 1).to_pylist()[0]
                values_json[i] = json.dumps(
                    {k: _json_value(v) for k, v in row.items()}, default=str, sort_keys=False
                )
        arrays[REJECT_VALUES] = pa.array(values_json, type=pa.string())
        if self.log_inputs:
            for column_spec in self.signature.columns:
                values = checked.columns[column_spec.name]
                if values.dtype.kind == "M":
                    column = pa.array(values.astype("datetime64[us]").astype(str), type=pa.string())
                elif values.dtype == object:
                    column = pa.array(values, type=pa.string())
                else:
                    column = pa.array(values, from_pandas=True)
                arrays[INPUT_PREFIX + column_spec.name] = column
        return pa.table(arrays)

    def empty(self) -> pa.Table:
        """A table of no rows with the columns a batch gives (keys typed as text)."""
        return self.empty_of(self.manifest, self.keys)

    @staticmethod
    def empty_of(manifest: Manifest, keys: Sequence[str]) -> pa.Table:
        """:meth:`empty` of a manifest, without loading its model."""
        fields = [pa.field(k, pa.string()) for k in keys]
        fields += [pa.field(s.name, output_type(s.dtype)) for s in manifest.outputs]
        fields += [pa.field("model", pa.string()), pa.field("version", pa.int64())]
        fields += [pa.field(c, pa.string()) for c in (REJECT_COLUMN, REJECT_REASON, REJECT_VALUES)]
        return pa.schema(fields).empty_table()
