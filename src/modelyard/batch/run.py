"""``predict_batch``: score files with a model version, locally or on Ray, with a manifest.

The output folder receives ``predictions.parquet`` (the key columns, the outputs,
``model`` and ``version``; plus ``record_id`` and ``row`` when logged),
``rejects.parquet`` (``file``, ``row``, ``column``, ``reason`` and the row's ``values`` as
JSON) and ``manifest.json`` (the input files with their SHA-256 and row counts, the
package id, version and runtime, rows scored, rejected and total, start and end). Every
input row is either scored or rejected; the counts are checked to add up before the
manifest is written.

The ``local`` engine reads each file as a stream of ``batch_rows``-row batches and scores
them on a pool of threads (the serving runtimes release the GIL: onnxruntime with one
thread per call, as in serving), keeping at most two batches per thread in flight, so
memory is bounded whatever the input size. A native scikit-learn runtime is called from
one thread: the library parallelises itself.
"""

from __future__ import annotations

import collections
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelyard.batch.inputs import InputFile, describe_inputs, find_inputs, iter_batches, sha256_of
from modelyard.batch.scoring import BatchScorer
from modelyard.batch.stats import PoolStats
from modelyard.batch.writer import PREDICTIONS, REJECTS, BatchWriter
from modelyard.config import ServingRuntime, Settings, load_settings
from modelyard.engine import engine_for
from modelyard.errors import InvalidInputError, ModelError
from modelyard.models.manifest import Manifest
from modelyard.registry.client import ModelRegistry
from modelyard.store.predlog import PredictionLog

__all__ = ["DEFAULT_BATCH_ROWS", "MANIFEST", "BatchResult", "InputSummary", "predict_batch"]

DEFAULT_BATCH_ROWS = 65_536
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class InputSummary:
    """One input file as the manifest records it."""

    path: str
    sha256: str
    rows: int
    scored: int
    rejected: int


@dataclass(frozen=True)
class BatchResult:
    """What a batch scoring run did; ``manifest.json`` holds the same."""

    output: str
    model: str
    version: int
    package_id: str
    runtime: str
    engine: str
    batch_rows: int
    rows_total: int
    rows_scored: int
    rows_rejected: int
    inputs: list[InputSummary]
    files: list[str]
    started_at: str
    finished_at: str
    seconds: float
    logged_records: int = 0
    log_dir: str | None = None
    key_columns: list[str] = field(default_factory=list)
    #: processes that loaded (and verified) the model: 1 locally, one per Ray actor used
    model_loads: int = 1
    #: threads (local) or actors (ray) that scored
    workers: int = 1

    @property
    def rows_per_second(self) -> float:
        return self.rows_total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _check_batch_rows(batch_rows: int) -> None:
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(
            f"Expected a number of rows >= 1, got {batch_rows!r}", loc="--batch-rows"
        )


def _output_dir(output: str | Path) -> Path:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"Expected a folder, got the file {out}", loc="--output")
    for name in (MANIFEST, PREDICTIONS, REJECTS):
        if (out / name).exists():
            raise InvalidInputError(
                f"Expected an output folder without an earlier run, got {out / name}; "
                "choose another folder or remove it",
                loc="--output",
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"Cannot create {out}: {exc}", loc="--output") from exc
    return out


def expected_runtime(manifest: Manifest, choice: ServingRuntime) -> str:
    """The runtime ``open_serving_runtime`` opens for ``manifest`` under ``choice``."""
    if choice == "native" or manifest.signature is None:
        return "native"
    return manifest.serving_runtime


def _local_workers(runtime: str, workers: int | None) -> int:
    if workers is not None:
        return workers
    if runtime == "native":
        return 1  # scikit-learn & co. run their own threads
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def score_locally(
    scorer: BatchScorer,
    files: Sequence[InputFile],
    columns: Sequence[str],
    batch_rows: int,
    workers: int,
) -> Iterator[tuple[str, pa.Table]]:
    """``(file, scored table)`` in input order, scored on ``workers`` threads."""
    pending: collections.deque[tuple[str, Future[pa.Table]]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelyard-batch") as pool:
        try:
            for item in files:
                for batch in iter_batches(item, columns, batch_rows):
                    pending.append((str(item.path), pool.submit(scorer, batch)))
                    while len(pending) >= 2 * workers:
                        source, done = pending.popleft()
                        yield source, done.result()
            while pending:
                source, done = pending.popleft()
                yield source, done.result()
        finally:
            for _, future in pending:
                future.cancel()


def _check_counts(result_inputs: list[InputSummary], files: Sequence[InputFile]) -> None:
    for summary, item in zip(result_inputs, files, strict=True):
        if summary.scored + summary.rejected != summary.rows:
            raise ModelError(
                f"{item.path}: {summary.scored} scored + {summary.rejected} rejected rows "
                f"!= {summary.rows} read; the output is not complete"
            )
        if item.kind == "parquet":
            stored = pq.ParquetFile(item.path).metadata.num_rows
            if stored != summary.rows:
                raise ModelError(
                    f"{item.path}: {summary.rows} rows scored or rejected, the file holds "
                    f"{stored}; the output is not complete"
                )


def predict_batch(
    ref: str,
    input: str | Path,
    output: str | Path,
    *,
    engine: str | None = None,
    log: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    keep: Sequence[str] | None = None,
    workers: int | None = None,
    runtime: ServingRuntime | None = None,
    trust: bool = False,
    project: str | Path | None = None,
    settings: Settings | None = None,
) -> BatchResult:
    """Score the Parquet/CSV files ``input`` names with ``ref`` into the folder ``output``.

    ``ref`` is ``name/3`` or ``name@alias``; ``engine`` is ``"local"``, ``"ray"`` or None
    (the project's ``engine``); ``log=True`` appends the predictions to the project's
    prediction log (route ``batch``) so monitoring covers them; ``keep`` names the
    columns carried to the output (default: every column not in the signature);
    ``workers`` is the local engine's threads or the ray engine's actors; ``runtime``
    ``"native"`` scores with the logged model instead of the package's serving runtime
    (default: ``serving.runtime``).
    """
    _check_batch_rows(batch_rows)
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InvalidInputError(
            f"Expected a number of workers >= 1, got {workers!r}", loc="workers"
        )
    settings = settings or load_settings(project)
    chosen = engine_for(settings, engine)
    choice: ServingRuntime = runtime or settings.serving.runtime
    paths = find_inputs(input)
    with ModelRegistry(settings) as registry:
        found = registry.get_version(ref)
        manifest = registry.manifest(found.ref)
    if manifest.signature is None:
        raise InvalidInputError(
            f"{found.ref} has no input signature, so rows cannot be checked; log it with a "
            "training frame (or signature=) to score it in batch",
            loc="signature",
        )
    files, keys = describe_inputs(paths, manifest.signature, keep)
    for key in keys:
        if key in {o.name for o in manifest.outputs} or key in ("model", "version"):
            raise InvalidInputError(
                f"Expected key columns that do not clash with the outputs, got {key!r}",
                loc="--keep",
            )
    out = _output_dir(output)
    digests = {str(item.path): sha256_of(item.path) for item in files}
    started, clock = _now(), time.perf_counter()
    run_id = uuid.uuid4().hex[:16]
    columns = list(dict.fromkeys([*keys, *manifest.signature.names]))
    scorer_args: dict[str, Any] = {
        "package_id": found.package_id,
        "name": found.name,
        "version": found.version,
        "keys": keys,
        "log_inputs": log,
        "runtime": choice,
        "trust": trust,
    }
    prediction_log = (
        PredictionLog(settings.prediction_log_dir, durable=settings.serving.durable_log)
        if log
        else None
    )
    writer = BatchWriter(
        out=out,
        model=found.name,
        version=found.version,
        run_id=run_id,
        outputs=[o.name for o in manifest.outputs],
        log=prediction_log,
    )
    pool = PoolStats()
    threads = 0
    try:
        if chosen == "ray":
            from modelyard.batch.ray_engine import score_on_ray  # the optional ray extra

            runtime_name = expected_runtime(manifest, choice)
            empty = BatchScorer.empty_of(manifest, keys)
            stream = score_on_ray(settings, files, columns, scorer_args, batch_rows, workers, pool)
        else:
            scorer = BatchScorer(settings, **scorer_args)
            runtime_name, empty = scorer.runtime_name, scorer.empty()
            threads = _local_workers(runtime_name, workers)
            stream = score_locally(scorer, files, columns, batch_rows, threads)
        for source, table in stream:
            writer.write(source, table)
        written = writer.finish(empty)
    except BaseException:
        writer.abort()
        raise
    finally:
        if prediction_log is not None:
            prediction_log.close()
    summaries = []
    for item in files:
        count = writer.counts.get(str(item.path))
        rows, scored, rejected = (
            (0, 0, 0) if count is None else (count.rows, count.scored, count.rejected)
        )
        summaries.append(
            InputSummary(str(item.path), digests[str(item.path)], rows, scored, rejected)
        )
    _check_counts(summaries, files)
    finished = _now()
    result = BatchResult(
        output=str(out),
        model=found.name,
        version=found.version,
        package_id=found.package_id,
        runtime=runtime_name,
        engine=chosen,
        batch_rows=batch_rows,
        rows_total=sum(s.rows for s in summaries),
        rows_scored=sum(s.scored for s in summaries),
        rows_rejected=sum(s.rejected for s in summaries),
        inputs=summaries,
        files=[*written, MANIFEST],
        started_at=started,
        finished_at=finished,
        seconds=round(time.perf_counter() - clock, 6),
        logged_records=writer.logged_records,
        log_dir=str(settings.prediction_log_dir) if log else None,
        key_columns=keys,
        model_loads=1 if chosen == "local" else len(pool.actors),
        workers=threads if chosen == "local" else len(pool.actors),
    )
    tmp = out / f".{MANIFEST}.{run_id}.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return result
