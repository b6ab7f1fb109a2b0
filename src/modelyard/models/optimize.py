"""ONNX export, parity and latency: the fastest way to run a package that gives its answers.

``optimize_package`` exports a registered version to ONNX where its flavor allows
(skl2onnx for scikit-learn, pipelines included; onnxmltools for XGBoost and LightGBM;
``torch.onnx`` for PyTorch), runs every candidate on the held-out rows stored with the
package and compares its scores with the native model's, measures the latency of every
candidate that passed, and records the table in a new manifest whose serving runtime is
the fastest passing one. A conversion that fails parity keeps its reason in the table and
never serves.

Parity tolerance: ``atol`` (default ``1e-5``) is absolute on class probabilities. A float32
graph of a tree ensemble or a linear model lands within about 1e-7 of scikit-learn, while a
real mismatch (a threshold crossed, a categorical split ignored) moves a probability by a
whole leaf value, so 1e-5 separates the two by orders of magnitude. For regressions the
tolerance is scaled by the largest absolute native prediction (at least 1): a float32 graph
keeps about 7 significant digits, not a fixed number of decimals. The native runtime itself
must reproduce the scores stored at packaging exactly (tolerance 0).

A label flips when the class a runtime ranks first has a native probability below the
native top by more than ``atol``: a tie (ten trees each way) is not a flip.

Known traps, each caught by parity rather than avoided by hope: a float64 graph of a
scikit-learn forest (scikit-learn compares float32 features with its thresholds);
HistGradientBoosting with ``categorical_features`` (skl2onnx ignores the categorical
splits); a float32 scaler before a tree (rounding moves rows across thresholds); XGBoost
with pandas category columns (no numeric feed for them: an error, never a guess).

>>> import numpy as np
>>> class Halves:
...     name = "halves"
...     def scores(self, inputs):
...         return np.array([[0.5, 0.5], [0.1, 0.9]])
>>> native = np.array([[0.5, 0.5], [0.9, 0.1]])
>>> from modelyard.models.runtimes import Inputs
>>> rows = Inputs(names=("x",), columns=(np.zeros(2),), matrix=np.zeros((2, 1)))
>>> check_parity(Halves(), rows, native, classification=True).reason
'max |diff| 0.8 > 1e-05; 1 of 2 labels flip'
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import numpy as np

from modelyard.errors import InvalidInputError, MissingExtraError, ModelError
from modelyard.models.manifest import FileEntry, Manifest, RuntimeResult, encode_manifest
from modelyard.models.mlflow_import import read_input_example
from modelyard.models.package import (
    HOLDOUT_FILE,
    HOLDOUT_ROWS,
    SCORE_PREFIX,
    PackagedModel,
    read_holdout,
    read_manifest,
)
from modelyard.models.runtimes import (
    NUMERIC,
    Inputs,
    NativeRuntime,
    OnnxRuntime,
    Runtime,
    build_inputs,
    lightgbm_booster,
    native_fast_paths,
    xgboost_booster,
)
from modelyard.models.signature import Signature
from modelyard.store.artifacts import ArtifactStore

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_PRECISIONS",
    "Evaluated",
    "Precision",
    "check_parity",
    "evaluate_runtimes",
    "export_onnx",
    "fastest",
    "measure_latency",
    "optimize_package",
    "read_parity_rows",
    "require_onnx_extra",
    "call_times_ns",
    "one_thread",
]

Precision = Literal["float32", "float64"]

#: absolute tolerance on class probabilities (scaled for regressions, see the module doc)
DEFAULT_ATOL = 1e-5
#: graph precisions tried in order until one passes parity
DEFAULT_PRECISIONS: tuple[Precision, ...] = ("float32", "float64")
#: timed calls per measurement (after a warm-up): enough for a stable median, few enough
#: that a 12 ms native forest is measured in under a second
LATENCY_REPEATS = (30, 5)
#: supplied parity rows beyond this many are sampled (seed 0): parity runs every candidate
PARITY_MAX_ROWS = 10_000
#: onnxmltools caps the opset it writes tree ensembles with for XGBoost and LightGBM
ONNXMLTOOLS_OPSET = 15


# -- export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _converter_warnings() -> Iterator[None]:
    # skl2onnx writes the booleans of HistGradientBoosting's missing-value tracks into an
    # int list; protobuf 6 warns (and protobuf 7 refuses, hence protobuf<7). The values are
    # 0/1 either way, so this one warning is silenced here and nowhere else.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"Field onnx\.AttributeProto\.ints: Expected an int, got a boolean",
            category=DeprecationWarning,
        )
        yield


def _signature(manifest: Manifest) -> Signature:
    if manifest.signature is None:
        raise InvalidInputError(
            "The package has no signature, so its inputs cannot be laid out for another "
            "runtime; log the model with a training frame",
            loc="signature",
        )
    return manifest.signature


def _text_columns(signature: Signature) -> list[str]:
    return [c.name for c in signature.columns if c.dtype not in NUMERIC]


def _has_column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    if isinstance(model, ColumnTransformer):
        return True
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    return any(isinstance(value, ColumnTransformer) for value in params.values())


def _sklearn_onnx(model: Any, manifest: Manifest, precision: Precision) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    signature = _signature(manifest)
    number = FloatTensorType if precision == "float32" else DoubleTensorType
    if _text_columns(signature) or _has_column_transformer(model):
        # one (rows, 1) input per column, named after it: how a ColumnTransformer finds
        # its columns by name, and how text reaches a OneHotEncoder as strings
        types = [
            (c.name, number([None, 1]) if c.dtype in NUMERIC else StringTensorType([None, 1]))
            for c in signature.columns
        ]
    else:
        types = [("X", number([None, len(signature.columns)]))]
    options = {id(model): {"zipmap": False}} if manifest.task == "classification" else None
    with _converter_warnings():
        graph = convert_sklearn(model, initial_types=types, options=options)
    return bytes(graph.SerializeToString())


def _numeric_only(signature: Signature, library: str, *, hint: str = "") -> None:
    text = _text_columns(signature)
    if text:
        one = len(text) == 1
        raise ModelError(
            f"{library} exports take one numeric matrix, but {', '.join(map(repr, text))} "
            f"{'is a' if one else 'are'} text or category column{'' if one else 's'}{hint}: "
            "the graph has no feed for them, so the model serves natively"
        )


def _float32_only(precision: Precision, library: str) -> None:
    if precision != "float32":
        raise ModelError(f"onnxmltools exports {library} as float32 graphs only")


def _xgboost_onnx(model: Any, manifest: Manifest, precision: Precision) -> bytes:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    signature = _signature(manifest)
    _float32_only(precision, "XGBoost")
    _numeric_only(signature, "XGBoost", hint=" (a model trained with enable_categorical)")
    # onnxmltools reads split features by name and only understands f0, f1, ...: a copy
    # without names splits on positions, which is what the graph's matrix input holds
    unnamed = copy.deepcopy(xgboost_booster(model))
    unnamed.feature_names = None
    types = [("X", FloatTensorType([None, len(signature.columns)]))]
    with _converter_warnings():
        graph = convert_xgboost(unnamed, initial_types=types, target_opset=ONNXMLTOOLS_OPSET)
    return bytes(graph.SerializeToString())


def _lightgbm_onnx(model: Any, manifest: Manifest, precision: Precision) -> bytes:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    signature = _signature(manifest)
    _float32_only(precision, "LightGBM")
    _numeric_only(signature, "LightGBM")
    types = [("X", FloatTensorType([None, len(signature.columns)]))]
    with _converter_warnings():
        graph = convert_lightgbm(
            lightgbm_booster(model),
            initial_types=types,
            target_opset=ONNXMLTOOLS_OPSET,
            zipmap=False,
        )
    return bytes(graph.SerializeToString())


def _torch_onnx(model: Any, manifest: Manifest, precision: Precision) -> bytes:
    import tempfile
    from pathlib import Path

    import onnx
    import torch

    signature = _signature(manifest)
    _numeric_only(signature, "PyTorch")
    dtype = torch.float32 if precision == "float32" else torch.float64
    example = torch.zeros((1, len(signature.columns)), dtype=dtype)
    module = getattr(model, "module", model)  # the flavor's wrapper holds the ScriptModule
    module.eval()
    with tempfile.TemporaryDirectory(prefix="modelyard-torch-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        # the TorchScript exporter: the torch.export one needs onnxscript, which is not a
        # dependency. It is deprecated, and says so; that warning is expected here.
        with warnings.catch_warnings():
            for message in (
                r"You are using the legacy TorchScript",
                r"The feature will be removed",
            ):
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["X"],
                output_names=["output"],
                dynamic_axes={"X": {0: "rows"}, "output": {0: "rows"}},
                dynamo=False,
            )
        # loaded by path, so weights an exporter put in a side .onnx.data file come along
        return bytes(onnx.load(str(path)).SerializeToString())


#: per flavor, the modules its ONNX export and check import; all ship in the onnx extra
ONNX_MODULES: dict[str, tuple[str, ...]] = {
    "sklearn": ("skl2onnx", "onnx", "onnxruntime"),
    "xgboost": ("onnxmltools", "onnx", "onnxruntime"),
    "lightgbm": ("onnxmltools", "onnx", "onnxruntime"),
    "torch": ("onnx", "onnxruntime"),
    "onnx": ("onnx", "onnxruntime"),
}


def require_onnx_extra(flavor: str) -> None:
    """Refuse, before anything is written, when the onnx extra is not installed.

    Without it every export would fail the same way and the package would be rewritten
    with a table of ``No module named ...`` rows: that is a missing install, not a finding
    about the model. Flavors with no converter need nothing (their row says so).
    """
    for module in ONNX_MODULES.get(flavor, ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(
                f"Optimizing a {flavor} model (ONNX export with {module})", "onnx"
            ) from exc


_EXPORTERS: dict[str, Callable[[Any, Manifest, Precision], bytes]] = {
    "sklearn": _sklearn_onnx,
    "xgboost": _xgboost_onnx,
    "lightgbm": _lightgbm_onnx,
    "torch": _torch_onnx,
}


def _exporter(model: Any, manifest: Manifest) -> Callable[[Any, Manifest, Precision], bytes]:
    """The converter for the package's flavor, else for the model's library."""
    library = type(model).__module__.split(".")[0]
    exporter = _EXPORTERS.get(manifest.flavor) or _EXPORTERS.get(library)
    if exporter is None:
        raise ModelError(
            f"No ONNX converter for {manifest.model_class} (flavor {manifest.flavor}); "
            f"converters exist for {', '.join(_EXPORTERS)}"
        )
    return exporter


def export_onnx(model: Any, manifest: Manifest, *, precision: Precision = "float32") -> bytes:
    """The model as a serialized ONNX graph, its numeric inputs in ``precision``.

    Classifiers output class probabilities as a plain tensor (no ZipMap). The graph takes
    one numeric matrix named ``X`` in signature order, or, for pipelines that select
    columns by name or take text, one ``(rows, 1)`` input per column named after it.
    Nothing here checks the graph: that is ``check_parity``'s job.
    """
    return _exporter(model, manifest)(model, manifest, precision)


# -- parity ---------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    """One line of an exception, short enough for a table (converters dump whole graphs)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 240:
        first = first[:237] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _label_flips(got: np.ndarray, want: np.ndarray, atol: float) -> int:
    if want.shape[1] == 1:  # one probability per row: the label is p >= 0.5
        decided = np.abs(want[:, 0] - 0.5) > atol
        return int(((got[:, 0] >= 0.5) != (want[:, 0] >= 0.5))[decided].sum())
    picked = got.argmax(axis=1)
    chosen = want[np.arange(len(want)), picked]
    return int((chosen < want.max(axis=1) - atol).sum())


def check_parity(
    runtime: Runtime,
    inputs: Inputs,
    native_scores: np.ndarray,
    *,
    classification: bool,
    atol: float = DEFAULT_ATOL,
    file: str | None = None,
) -> RuntimeResult:
    """``runtime``'s scores on ``inputs`` against the native scores: a ``RuntimeResult``.

    Status ``ok`` when the largest absolute difference is within tolerance and no label
    flips; ``failed_parity`` with the numbers in ``reason`` when not; ``error`` with the
    exception when the runtime fails on the rows.
    """
    rows = inputs.rows
    try:
        got = runtime.scores(inputs)
    except Exception as exc:  # a runtime's failure on the rows is a verdict, not a crash
        return RuntimeResult(
            name=runtime.name, status="error", reason=_error_text(exc), rows_checked=rows
        )
    want = np.asarray(native_scores, dtype=np.float64).reshape(rows, -1)
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        return RuntimeResult(
            name=runtime.name,
            status="failed_parity",
            reason=f"output shape {got.shape} differs from the native {want.shape}",
            rows_checked=rows,
        )
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    diff = np.where(same, 0.0, np.abs(got - want))
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
    scale = 1.0
    if not classification and want.size and np.isfinite(want).any():
        scale = max(1.0, float(np.nanmax(np.abs(want[np.isfinite(want)]))))
    allowed = atol * scale
    flips = _label_flips(got, want, atol) if classification and rows else None
    problems = []
    if not max_diff <= allowed:
        problems.append(f"max |diff| {max_diff:.2g} > {allowed:.3g}")
    if flips:
        problems.append(f"{flips} of {rows} labels flip")
    return RuntimeResult(
        name=runtime.name,
        status="failed_parity" if problems else "ok",
        reason="; ".join(problems) or None,
        file=None if problems else file,
        max_abs_diff=max_diff if np.isfinite(max_diff) else None,
        label_flips=flips,
        rows_checked=rows,
    )


# -- latency --------------------------------------------------------------------------------


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """OpenMP and BLAS pools pinned to one thread, as in a serving worker."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:  # scikit-learn brings it; without it the pools stay as they are
        yield
        return
    with threadpoolctl.threadpool_limits(limits=1):
        yield


def call_times_ns(
    runtime: Runtime,
    batches: Sequence[Inputs],
    *,
    warmup: int = 2,
    max_seconds: float | None = None,
    min_calls: int = 1,
) -> np.ndarray:
    """Nanoseconds of one ``runtime.scores`` call on each of ``batches``, in order.

    ``warmup`` untimed calls on the first batch come first (first calls allocate and fill
    caches). With ``max_seconds``, timing stops once that much time was spent on timed
    calls and at least ``min_calls`` were made: fewer times than batches come back.
    """
    for _ in range(warmup):
        runtime.scores(batches[0])
    times = []
    spent = 0
    limit = None if max_seconds is None else int(max_seconds * 1e9)
    for batch in batches:
        start = time.perf_counter_ns()
        runtime.scores(batch)
        took = time.perf_counter_ns() - start
        times.append(took)
        spent += took
        if limit is not None and spent >= limit and len(times) >= min_calls:
            break
    return np.asarray(times, dtype=np.int64)


def _median_us(runtime: Runtime, inputs: Inputs, repeats: int) -> float:
    return float(statistics.median(call_times_ns(runtime, [inputs] * repeats).tolist())) / 1000.0


def measure_latency(
    runtime: Runtime,
    inputs_1: Inputs,
    inputs_1000: Inputs,
    *,
    repeats: tuple[int, int] = LATENCY_REPEATS,
) -> tuple[float, float]:
    """Median microseconds of one call on 1 row and one call on 1000 rows, one thread."""
    with one_thread():
        return (
            _median_us(runtime, inputs_1, repeats[0]),
            _median_us(runtime, inputs_1000, repeats[1]),
        )


# -- optimize -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluated:
    """One candidate runtime: its measured result and, for a converted one, its graph."""

    result: RuntimeResult
    onnx: bytes | None = None


def _latency_sets(holdout: Inputs) -> tuple[Inputs, Inputs]:
    return holdout.take([0]), holdout.take(np.arange(1000) % holdout.rows)


def evaluate_runtimes(
    model: Any,
    manifest: Manifest,
    holdout: Inputs,
    native_scores: np.ndarray,
    *,
    scores: Callable[[Any, Any], np.ndarray],
    atol: float = DEFAULT_ATOL,
    precisions: Sequence[Precision] = DEFAULT_PRECISIONS,
    progress: Callable[[str], None] | None = None,
) -> list[Evaluated]:
    """Parity and latency of the native model, its fast paths and its ONNX exports.

    ``native_scores`` are the scores stored at packaging; ``scores`` is the flavor's own
    scoring function (the native baseline). ONNX graphs are tried in ``precisions`` order
    until one passes parity; every attempt stays in the table.
    """
    # one thread throughout, as in a serving worker: OpenMP pools spinning up for 500 rows
    # cost more than they save, and on a busy machine far more
    with one_thread():
        return _evaluate(
            model, manifest, holdout, native_scores, scores, atol, precisions, progress
        )


def _evaluate(
    model: Any,
    manifest: Manifest,
    holdout: Inputs,
    native_scores: np.ndarray,
    scores: Callable[[Any, Any], np.ndarray],
    atol: float,
    precisions: Sequence[Precision],
    progress: Callable[[str], None] | None,
) -> list[Evaluated]:
    say = progress or (lambda message: None)
    signature = _signature(manifest)
    if holdout.rows == 0:
        raise InvalidInputError("The package's held-out rows are empty", loc="holdout")
    classification = manifest.task == "classification"
    # in table order; a runtime that could not be built has None in place of the runtime
    table: list[tuple[Runtime | None, Evaluated]] = []

    def check(runtime: Runtime, tolerance: float, *, file: str | None = None) -> RuntimeResult:
        say(f"parity of {runtime.name} on {holdout.rows} held-out rows")
        return check_parity(
            runtime,
            holdout,
            native_scores,
            classification=classification,
            atol=tolerance,
            file=file,
        )

    native = NativeRuntime(model, signature, scores)
    table.append((native, Evaluated(check(native, 0.0))))  # the model itself: exact
    fast_paths = native_fast_paths(
        model, signature, flavor=manifest.flavor, classification=classification
    )
    for fast in fast_paths:
        table.append((fast, Evaluated(check(fast, atol))))
    if manifest.flavor == "onnx":  # already a graph, run by onnxruntime natively
        precisions = ()
    else:
        try:
            _exporter(model, manifest)
        except ModelError as exc:
            table.append((None, _failed("onnxruntime", str(exc))))
            precisions = ()
    for precision in precisions:
        name = f"onnxruntime-{precision}"
        say(f"exporting {name}")
        try:
            graph = export_onnx(model, manifest, precision=precision)
        except Exception as exc:  # any converter failure is recorded, never raised
            table.append((None, _failed(name, f"export failed: {_error_text(exc)}")))
            continue
        try:
            onnx_runtime = OnnxRuntime(
                graph, signature.names, classification=classification, name=name
            )
        except Exception as exc:  # an invalid graph: same
            reason = f"onnxruntime cannot load it: {_error_text(exc)}"
            table.append((None, _failed(name, reason)))
            continue
        result = check(onnx_runtime, atol, file=f"model-{precision}.onnx")
        table.append((onnx_runtime, Evaluated(result, graph)))
        if result.status == "ok":
            break
    one, thousand = _latency_sets(holdout)
    done = []
    for runtime, candidate in table:
        if runtime is None or candidate.result.status != "ok":
            done.append(candidate)
            continue
        say(f"latency of {runtime.name}")
        single, batch = measure_latency(runtime, one, thousand)
        timed = msgspec.structs.replace(
            candidate.result, latency_1_row_us=single, latency_1000_rows_us=batch
        )
        done.append(Evaluated(timed, candidate.onnx))
    return done


def _failed(name: str, reason: str) -> Evaluated:
    return Evaluated(RuntimeResult(name=name, status="error", reason=reason))


def fastest(results: Sequence[RuntimeResult]) -> str:
    """The passing runtime with the lowest 1-row latency (then 1000-row); else native."""
    passed = [r for r in results if r.status == "ok" and r.latency_1_row_us is not None]
    if not passed:
        return "native"
    best = min(
        passed,
        key=lambda r: (r.latency_1_row_us or 0.0, r.latency_1000_rows_us or 0.0),
    )
    return best.name


class _Version(Protocol):
    @property
    def ref(self) -> str: ...

    @property
    def package_id(self) -> str: ...


class PackageRegistry(Protocol):
    """What optimizing needs from the registry (the registry layer sits above this one)."""

    @property
    def artifacts(self) -> ArtifactStore: ...

    def get_version(self, ref: str) -> _Version: ...

    def load_package(self, package_id: str, *, trust: bool = ...) -> PackagedModel: ...

    def record_package(self, package_id: str, manifest: Manifest) -> None: ...

    def set_package(self, ref: str, package_id: str, *, reason: str) -> object: ...


def read_parity_rows(path: str | Path) -> Any:
    """Rows of a Parquet or CSV file (``models optimize --data``) as a pandas frame."""
    import pandas as pd

    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise InvalidInputError(
            f"Expected a Parquet (.parquet) or CSV (.csv) file of input rows, got {str(file)!r}",
            loc="--data",
        )
    if not file.is_file():
        raise InvalidInputError(
            f"Expected a file of input rows, got no file at {file}", loc="--data"
        )
    try:
        return pd.read_csv(file) if suffix == ".csv" else pd.read_parquet(file)
    except Exception as exc:  # any reader failure is a bad file, named as such
        raise InvalidInputError(f"Cannot read {file}: {_error_text(exc)}", loc="--data") from exc


def _supplied_rows(signature: Signature, data: Any, where: str) -> Any:
    """The signature's columns of ``data``, checked, at most ``PARITY_MAX_ROWS`` of them."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        raise InvalidInputError(
            f"Expected a pandas frame of input rows, got {type(data).__name__}", loc=where
        )
    present = [name for name in signature.names if name in set(map(str, data.columns))]
    frame = data.set_axis([str(c) for c in data.columns], axis=1)[present]
    if len(frame) == 0:
        raise InvalidInputError(f"Expected at least one parity row, got none ({where})", loc=where)
    try:
        signature.check_frame(frame)
    except InvalidInputError as exc:
        raise InvalidInputError(f"The parity rows ({where}) do not fit the signature: {exc}",
                                loc=where, problems=exc.problems) from exc  # fmt: skip
    if len(frame) > PARITY_MAX_ROWS:
        frame = frame.sample(PARITY_MAX_ROWS, random_state=0)
    return frame[signature.names].reset_index(drop=True)


def _parity_source(packaged: PackagedModel, data: Any) -> tuple[Any, str] | None:
    """Rows supplied for parity: ``data``, else an imported MLflow model's input example."""
    if data is not None:
        return data, "--data"
    imported = packaged.manifest.lineage.imported_from or ""
    if packaged.manifest.holdout is None and imported.startswith("mlflow:"):
        folder = Path(imported.removeprefix("mlflow:"))
        if folder.is_dir():
            example = read_input_example(folder)
            if example is not None:
                return example, f"the MLflow input example of {folder}"
    return None


def _holdout_entry(artifacts: ArtifactStore, frame: Any, scores: np.ndarray) -> FileEntry:
    """Supplied rows stored as the package's held-out rows (what serving warms up on)."""
    import io

    held = frame.head(HOLDOUT_ROWS).copy()
    width = scores.reshape(len(frame), -1)
    for i in range(width.shape[1]):
        held[f"{SCORE_PREFIX}{i}"] = width[: len(held), i]
    buffer = io.BytesIO()
    held.to_parquet(buffer, index=False)
    stored = artifacts.put_bytes(buffer.getvalue())
    return FileEntry(path=HOLDOUT_FILE, sha256=stored.sha256, size=stored.size)


def optimize_package(
    registry: PackageRegistry,
    ref: str,
    *,
    data: Any = None,
    atol: float = DEFAULT_ATOL,
    precisions: Sequence[Precision] = DEFAULT_PRECISIONS,
    trust: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Measure every runtime of the version ``ref`` names and serve the fastest verified one.

    Parity runs on ``data`` (a pandas frame of input rows: ``models optimize --data FILE``)
    when given, else on the held-out rows stored with the package, else (a model imported
    from MLflow) on the MLflow directory's saved input example; the native model scores the
    supplied rows here. A package without held-out rows keeps the supplied rows (at most
    ``HOLDOUT_ROWS``, with their native scores) as its held-out rows, so serving can warm
    up on them and check parity again.

    Raises ``MissingExtraError`` (nothing written) when the onnx extra is not installed.
    Writes a new package (the same files, the passing ONNX graphs, the runtime table and
    the serving runtime), records it and points the version at it, audited as a
    ``repackage``. Returns the new manifest; its package id is ``encode_manifest(m)[1]``.
    """
    say = progress or (lambda message: None)
    version = registry.get_version(ref)
    # a missing extra is refused before anything loads or is written
    require_onnx_extra(read_manifest(registry.artifacts, version.package_id).flavor)
    say(f"loading {version.ref}")
    packaged = registry.load_package(version.package_id, trust=trust)
    manifest = packaged.manifest
    signature = _signature(manifest)
    supplied = _parity_source(packaged, data)
    new_holdout: FileEntry | None = None
    if supplied is not None:
        frame = _supplied_rows(signature, supplied[0], supplied[1])
        try:
            stored = np.asarray(packaged.flavor.scores(packaged.native, frame), dtype=np.float64)
        except Exception as exc:  # the user's model on the user's rows: theirs to see
            raise ModelError(
                f"The native model failed on the parity rows ({supplied[1]}): {_error_text(exc)}"
            ) from exc
        stored = stored.reshape(len(frame), -1)
        if manifest.holdout is None:
            new_holdout = _holdout_entry(registry.artifacts, frame, stored)
    elif manifest.holdout is None:
        raise InvalidInputError(
            "The package has no held-out rows to check parity on (it was logged without a "
            "training frame, or imported); supply input rows with --data FILE (Parquet or "
            "CSV), or data= in Python",
            loc="data",
        )
    else:
        frame, stored = read_holdout(registry.artifacts, manifest)
    holdout = build_inputs(signature, frame)
    evaluated = evaluate_runtimes(
        packaged.native,
        manifest,
        holdout,
        stored,
        scores=packaged.flavor.scores,
        atol=atol,
        precisions=precisions,
        progress=say,
    )
    replaced = {r.file for r in manifest.runtimes if r.file}
    files = [entry for entry in manifest.files if entry.path not in replaced]
    if new_holdout is not None:
        files = [entry for entry in files if entry.path != HOLDOUT_FILE] + [new_holdout]
        manifest = msgspec.structs.replace(manifest, holdout=HOLDOUT_FILE)
    for candidate in evaluated:
        result = candidate.result
        if candidate.onnx is not None and result.status == "ok" and result.file:
            stored_graph = registry.artifacts.put_bytes(candidate.onnx)
            files.append(
                FileEntry(path=result.file, sha256=stored_graph.sha256, size=stored_graph.size)
            )
    results = [candidate.result for candidate in evaluated]
    serving = fastest(results)
    new = msgspec.structs.replace(manifest, files=files, runtimes=results, serving_runtime=serving)
    data_bytes, package_id = encode_manifest(new)
    written = registry.artifacts.put_bytes(data_bytes)
    if written.sha256 != package_id:  # pragma: no cover - the store addresses by sha256
        raise ModelError(f"The artifact store stored the manifest as {written.sha256}")
    registry.record_package(package_id, new)
    registry.set_package(version.ref, package_id, reason=f"optimize: serving runtime {serving}")
    say(f"{version.ref} now serves with {serving}")
    return new
