"""Reading the prediction log back: 14,000 rows from segments, then compacted to Parquet.

One run on the same records: written with a rotation every ``--rotate`` records (as a
server compacting every interval leaves them) or into one segment, read with
``read_predictions`` before and after ``compact`` (small files merged, the merged
inputs gone as they are once their grace is over); both reads must return the same
record ids and rows. Exits 1 when they differ or when reading compacted rows is not at
least ``--min-ratio`` times faster.

    .venv/bin/python benchmarks/serving/log_read.py [--rows 14000] [--rotate 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from modelyard.store.predlog import PredictionLog, PredictionRecord, compact, read_predictions
from modelyard.store.predlog.merging import merge_small_files


def _record(i: int) -> PredictionRecord:
    return PredictionRecord(
        record_id=f"r{i}",
        request_id=f"c{i % 100}",  # reused client ids
        time_us=1_700_000_000_000_000 + i * 1000,
        model="churn",
        version=1,
        rows=1,
        inputs={"amount": [i * 0.5], "age": [30 + i % 50], "plan": ["pro"], "city": ["oslo"]},
        outputs={"label": ["1"], "proba_0": [0.3], "proba_1": [0.7]},
        latency_us=800,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=14_000)
    parser.add_argument("--rotate", type=int, default=0, help="records per segment (0: one)")
    parser.add_argument("--min-ratio", type=float, default=3.0)
    args = parser.parse_args()
    # warm up: the first Arrow timestamp with a zone imports pandas (0.5 s), once per
    # process; a server has imported it long before it reads its log
    warm = tempfile.mkdtemp(prefix="modelyard-log-warm-")
    with PredictionLog(warm) as log:
        log.append_blocking(_record(0))
    read_predictions(warm)
    root = tempfile.mkdtemp(prefix="modelyard-log-read-")
    with PredictionLog(root, durable=False) as log:
        for i in range(args.rows):
            log.append_blocking(_record(i))
            if args.rotate and i % args.rotate == args.rotate - 1:
                log.rotate()
    started = time.perf_counter()
    before = read_predictions(root)
    segments_s = time.perf_counter() - started
    result = compact(root, merge=False)
    started = time.perf_counter()
    unmerged = read_predictions(root)
    unmerged_s = time.perf_counter() - started
    # the merged inputs are deleted once their grace is over: read the steady state
    merged = merge_small_files(root, grace_s=0)
    files = sum(1 for _ in Path(root).rglob("*.parquet"))
    started = time.perf_counter()
    after = read_predictions(root)
    parquet_s = time.perf_counter() - started
    keys = ["record_id", "row"]
    order = [(key, "ascending") for key in keys]
    same = all(
        before.num_rows == table.num_rows == args.rows
        and before.select(keys).sort_by(order).equals(table.select(keys).sort_by(order))
        for table in (unmerged, after)
    )
    ratio = segments_s / parquet_s
    print(f"rows                 {args.rows}")
    print(f"segments read        {segments_s:.3f} s")
    print(f"compacted read       {unmerged_s:.3f} s  ({len(result.files)} Parquet files)")
    print(f"merged read          {parquet_s:.3f} s  ({merged} files merged, {files} left)")
    print(f"segments / merged    {ratio:.1f}x")
    print(f"same rows            {same}")
    if not same:
        return 1
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
