"""The ``ray`` engine of batch scoring: Ray Data with a pool of scoring actors.

The files are read by Ray Data (``read_parquet`` / ``read_csv`` with the same text
conversion as the local engine, ``include_paths`` so each row knows its file), scored by
``map_batches`` on an actor pool (each actor loads and verifies the model once, with its
native thread pools limited to the CPUs it reserved; onnxruntime runs one thread per
call as in serving) and streamed back to the driver in input order
(``preserve_order``), which writes the predictions, the rejects and the log exactly as
the local engine does. Settings reach the actors through
:func:`modelyard.engine.ship_settings`, never with their secrets.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from modelyard.batch.inputs import InputFile, csv_convert_options
from modelyard.batch.scoring import BatchScorer
from modelyard.batch.stats import PoolStats
from modelyard.config import Settings
from modelyard.engine import (
    ShippedSettings,
    connect_ray,
    import_ray,
    ship_settings,
    task_options,
    unship_settings,
)
from modelyard.errors import InvalidInputError

__all__ = ["ACTOR_COLUMN", "PATH_COLUMN", "RayBatchScorer", "score_on_ray"]

#: the column Ray Data's ``include_paths`` adds
PATH_COLUMN = "path"
#: read tasks reserve a quarter CPU, and the actors together reserve at most half the
#: cluster's CPUs, however many there are: a pool holding (nearly) every CPU left Ray Data
#: scheduling no read, and so the actors waiting for ever (2 actors on 2 CPUs hung)
_READ: dict[str, Any] = {"num_cpus": 0.25}
#: blocks of about one default batch (65,536 rows of a dozen numbers): the first batches
#: are scored and written while the rest is read, and the actors share the work evenly
#: (Ray Data's default of 128 MiB made two blocks of a 2,000,000-row file, so the driver
#: waited for one actor to score a million rows before it wrote anything)
_BLOCK_BYTES = 8 * 2**20
#: the share of the cluster's CPUs the actor pool may reserve
_POOL_SHARE = 0.5
#: the column naming the actor that scored a batch (read by the driver, not written)
ACTOR_COLUMN = "_actor"


class RayBatchScorer:
    """One actor of the pool: the model loaded once, batches scored with their file paths."""

    def __init__(self, shipped: ShippedSettings, threads: int, **scorer_args: Any) -> None:
        threadpool_limits(limits=max(1, threads))  # the CPUs this actor reserved
        self.scorer = BatchScorer(unship_settings(shipped), **scorer_args)
        self.actor = str(import_ray().get_runtime_context().get_actor_id())

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column(PATH_COLUMN)
        scored = self.scorer(batch.drop_columns([PATH_COLUMN]))
        actor = pa.repeat(pa.scalar(self.actor, type=pa.string()), scored.num_rows)
        return scored.append_column(PATH_COLUMN, paths).append_column(ACTOR_COLUMN, actor)


def _actors(settings: Settings, workers: int | None) -> int:
    if workers is not None:
        return workers
    if settings.ray.max_actors is not None:
        return settings.ray.max_actors
    ray = import_ray()
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int((cpus * _POOL_SHARE) // settings.ray.num_cpus))


def _dataset(files: Sequence[InputFile], columns: Sequence[str]) -> Any:
    """One Ray dataset over the files, in their order (runs of one format unioned)."""
    ray = import_ray()
    parts: list[Any] = []
    run: list[InputFile] = []

    def flush() -> None:
        if not run:
            return
        paths = [str(f.path.resolve()) for f in run]
        if run[0].kind == "parquet":
            # every column is read (the actors take the key and signature columns only):
            # a select_columns step would be a task of its own, waiting for a CPU
            parts.append(ray.data.read_parquet(paths, include_paths=True, **_READ))
        else:
            header = list(dict.fromkeys(c for f in run for c in f.columns))
            convert = csv_convert_options(header)
            convert.include_columns = list(columns)
            parts.append(
                ray.data.read_csv(paths, convert_options=convert, include_paths=True, **_READ)
            )
        run.clear()

    for item in files:
        if run and run[0].kind != item.kind:
            flush()
        run.append(item)
    flush()
    dataset = parts[0]
    return dataset.union(*parts[1:]) if len(parts) > 1 else dataset


def _split_by_path(
    table: pa.Table, names: dict[str, str], stats: PoolStats
) -> Iterator[tuple[str, pa.Table]]:
    """Consecutive rows of one file, named as the caller named the file."""
    paths = table.column(PATH_COLUMN)
    stats.actors.update(table.column(ACTOR_COLUMN).unique().to_pylist())
    stats.batches += 1
    table = table.drop_columns([PATH_COLUMN, ACTOR_COLUMN])
    if table.num_rows == 0:
        return
    # where the file changes, found in Arrow (no Python object per row)
    n = len(paths)
    changed = pc.not_equal(paths.slice(1), paths.slice(0, n - 1))
    cuts = [0, *(pc.indices_nonzero(changed).to_numpy() + 1).tolist(), n]
    for start, end in itertools.pairwise(cuts):
        raw = str(paths[start].as_py())
        yield (
            names.get(raw, names.get(str(Path(raw).resolve()), raw)),
            table.slice(start, end - start),
        )


def score_on_ray(
    settings: Settings,
    files: Sequence[InputFile],
    columns: Sequence[str],
    scorer_args: dict[str, Any],
    batch_rows: int,
    workers: int | None,
    stats: PoolStats,
) -> Iterator[tuple[str, pa.Table]]:
    """``(file, scored table)`` in input order, scored by an actor pool on the cluster;
    ``stats`` counts the actors that scored (each loaded the model once) and the batches."""
    for item in files:
        if PATH_COLUMN in item.columns:
            raise InvalidInputError(
                f"{item.path} has a column {PATH_COLUMN!r}, which Ray Data uses for the "
                "file of each row: rename it, or use --engine local",
                loc="--engine",
            )
    connect_ray(settings)
    with warnings.catch_warnings():
        # Ray Data warns about its own deprecated settings while it builds its context
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
        # a small input gives fewer blocks than actors: fewer actors score, nothing is lost
        warnings.filterwarnings(
            "ignore", message=r"The minimum number of concurrent actors", category=UserWarning
        )
        ray = import_ray()
        context = ray.data.DataContext.get_current()
        saved = (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            context.target_max_block_size,
        )
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.target_max_block_size = _BLOCK_BYTES
        options = task_options(settings)
        actors = _actors(settings, workers)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        wanted = float(options.get("num_cpus", 1.0))
        # a reservation, not a limit: each actor still runs ``threads`` threads
        options["num_cpus"] = max(0.01, min(wanted, cpus * _POOL_SHARE / actors))
        threads = int(max(1.0, wanted))
        names = {str(f.path.resolve()): str(f.path) for f in files}
        scored = _dataset(files, columns).map_batches(
            RayBatchScorer,
            fn_constructor_kwargs={
                "shipped": ship_settings(settings),
                "threads": threads,
                **scorer_args,
            },
            batch_size=batch_rows,
            batch_format="pyarrow",
            concurrency=actors,
            zero_copy_batch=True,
            **options,
        )
        try:
            for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from _split_by_path(table, names, stats)
        finally:  # the driver's other Ray Data work keeps its own settings
            (
                context.execution_options.preserve_order,
                context.enable_progress_bars,
                context.target_max_block_size,
            ) = saved
