"""The Ray engine's driver cuts each scored block into runs of one input file, in order.

``_split_by_path`` runs on the driver for every block; it finds the runs in Arrow. Checked
against a brute-force walk over generated blocks (several chunks, runs of any length,
a file seen again after another), with the names the caller gave the files.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.batch.ray_engine import ACTOR_COLUMN, PATH_COLUMN, _split_by_path
from modelyard.batch.stats import PoolStats


def _brute(paths: list[str], rows: list[int]) -> list[tuple[str, list[int]]]:
    runs: list[tuple[str, list[int]]] = []
    for path, row in zip(paths, rows, strict=True):
        if runs and runs[-1][0] == path:
            runs[-1][1].append(row)
        else:
            runs.append((path, [row]))
    return runs


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.sampled_from(["/d/a.parquet", "/d/b.csv", "/d/c.parquet"]),
                            st.integers(1, 40)), min_size=1, max_size=12),
    chunk=st.integers(1, 50),
)  # fmt: skip
def test_runs_of_one_file_in_order(runs: list[tuple[str, int]], chunk: int) -> None:
    paths = [path for path, length in runs for _ in range(length)]
    rows = list(range(len(paths)))
    actors = ["actor-1"] * len(paths)
    table = pa.Table.from_batches(
        pa.table({"row": rows, PATH_COLUMN: paths, ACTOR_COLUMN: actors}).to_batches(chunk)
    )
    names = {p: f"given:{Path(p).name}" for p in ("/d/a.parquet", "/d/b.csv")}
    stats = PoolStats()
    got = [(name, part.column("row").to_pylist()) for name, part in
           _split_by_path(table, names, stats)]  # fmt: skip
    want = [(names.get(p, p), r) for p, r in _brute(paths, rows)]
    assert got == want
    assert stats.actors == {"actor-1"} and stats.batches == 1
    assert all(PATH_COLUMN not in part.column_names for _, part in
               _split_by_path(table, names, PoolStats()))  # fmt: skip


def test_an_empty_block_gives_nothing() -> None:
    table = pa.table(
        {"row": pa.array([], pa.int64()), PATH_COLUMN: pa.array([], pa.string()),
         ACTOR_COLUMN: pa.array([], pa.string())}
    )  # fmt: skip
    assert list(_split_by_path(table, {}, PoolStats())) == []
