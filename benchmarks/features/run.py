"""Features benchmark: modelyard against Feast on the same generated data, in one run.

The data (``--entities`` drivers, ``--rows`` feature rows over ``--days`` days with four
float features, an event and a created timestamp, as Parquet; ``--entity-rows`` entity
rows spread over the same days) is written once and read by both sides:

1. Historical retrieval with a 1-day ttl (best of ``--repeats``).
2. Historical retrieval with no ttl (Feast: ``ttl=timedelta(0)``, its "lives forever").
3. Materialization of the whole range into a fresh SQLite online store (one run each),
   by each tool's top-level ``FeatureStore.materialize``. A failure fails the run.
4. In-process online lookups of 1 and of 100 random entities: p50 and p99 over
   ``--calls`` calls, each tool's top level (modelyard
   ``FeatureStore.get_online_features``, Feast
   ``FeatureStore.get_online_features(...).to_dict()``); modelyard's bare
   ``store.read`` is printed below the table for reference.

Feast runs with its DuckDB offline store (its default file/Dask store is known to drop
entity rows at this size) and its SQLite online store. The run checks that both tools
return the same historical values (cells compared by entity row) and the same online
values for every entity, prints a table with Feast's figure, modelyard's, the ratio
Feast / modelyard and the target, and writes ``benchmarks/features/results/latest.json``.
It exits 1 when a check fails or a target is missed (a side that fails exits non-zero too).

Run it with the project's python (``make bench-features`` does)::

    .venv/bin/python benchmarks/features/run.py [--plain] [--keep] [--rows 1000000] ...

Feast never enters the project's venv: the first run installs ``feast[duckdb]`` (0.6x)
and ``pandas<3`` into ``~/.cache/modelyard-bench/feast-venv`` (set
``MODELYARD_BENCH_CACHE`` to put it elsewhere); later runs reuse it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ENTITY_FILE, ENTITY_KEY, FEATURE_FILE, FEATURES, MARKER  # noqa: E402
from feast_env import QUIET_ENV, ensure_feast_venv  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
START = "2025-01-01T00:00:00+00:00"


def write_data(folder: Path, args: argparse.Namespace) -> None:
    """Feature rows and entity rows, seconds-resolution event times (so ties occur)."""
    rng = np.random.default_rng(20240601)
    start = pd.Timestamp(START)
    span = args.days * 86_400
    n = args.rows
    event = start + pd.to_timedelta(rng.integers(0, span, n), unit="s")
    # distinct created times (microseconds) so ties on event time have one winner
    created = event + pd.to_timedelta(rng.integers(0, 3_600_000_000, n), unit="us")
    features = pd.DataFrame(
        {
            ENTITY_KEY: rng.integers(0, args.entities, n, dtype=np.int64),
            "event_timestamp": event.astype("datetime64[us, UTC]"),
            "created": created.astype("datetime64[us, UTC]"),
            **{name: rng.normal(size=n) for name in FEATURES},
        }
    )
    features.to_parquet(folder / FEATURE_FILE, index=False)
    m = args.entity_rows
    entities = pd.DataFrame(
        {
            "row_id": np.arange(m, dtype=np.int64),
            ENTITY_KEY: rng.integers(0, args.entities, m, dtype=np.int64),
            "event_timestamp": (start + pd.to_timedelta(rng.integers(0, span, m), unit="s")).astype(
                "datetime64[us, UTC]"
            ),
        }
    )
    entities.to_parquet(folder / ENTITY_FILE, index=False)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEAST_", "MODELYARD_"))}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return {**env, **QUIET_ENV}


def run_side(python: str, script: str, argv: list[str], work: Path) -> dict[str, Any]:
    """One side in a fresh subprocess; its results line, plus its wall time."""
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [python, str(HERE / script), *argv, "--work", str(work)],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise SystemExit(f"{script} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result["load_before"] = load
    result["wall_s"] = time.perf_counter() - start
    return result


def mismatches(left: Path, right: Path, key: str) -> dict[str, Any]:
    """Cells that differ between two frames aligned on ``key`` (both null counts as equal)."""
    a = pd.read_parquet(left).set_index(key).sort_index()
    b = pd.read_parquet(right).set_index(key).sort_index()
    only_a = int((~a.index.isin(b.index)).sum())
    only_b = int((~b.index.isin(a.index)).sum())
    dup_a, dup_b = int(a.index.duplicated().sum()), int(b.index.duplicated().sum())
    a = a[~a.index.duplicated()]
    b = b[~b.index.duplicated()]
    common = a.index.intersection(b.index)
    a, b = a.loc[common, FEATURES].astype(float), b.loc[common, FEATURES].astype(float)
    same = (a.isna() & b.isna()) | np.isclose(a, b, rtol=0, atol=1e-12)
    return {
        "cells": int(same.size),
        "mismatching_cells": int((~same).to_numpy().sum()),
        "rows_only_modelyard": only_a,
        "rows_only_feast": only_b,
        "duplicate_rows_modelyard": dup_a,
        "duplicate_rows_feast": dup_b,
        "nulls_modelyard": int(a.isna().to_numpy().sum()),
        "nulls_feast": int(b.isna().to_numpy().sum()),
    }


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _rows(my: dict[str, Any], fe: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each benchmark row: both figures, the ratio, the target, PASS/MISS."""
    e, r = f"{args.entity_rows:,}", f"{args.rows:,}"
    out = []
    for key, label, target in (
        ("hist_ttl_s", f"historical, ttl 1 day ({e} x {r})", 1.5),
        ("hist_no_ttl_s", f"historical, no ttl ({e} x {r})", 5.0),
        ("materialize_s", f"materialize {args.days} days -> SQLite", 3.0),
    ):
        ratio = fe[key] / my[key]
        out.append(
            {
                "key": key,
                "label": label,
                "feast": fe[key],
                "modelyard": my[key],
                "ratio": ratio,
                "target": f">= {target:g}x Feast",
                "pass": ratio >= target,
            }
        )
    for size, limit in ((1, 50e-6), (100, 500e-6)):
        for stat in ("p50_s", "p99_s"):
            mine, theirs = my[f"online_{size}"][stat], fe[f"online_{size}"][stat]
            absolute = stat == "p50_s"
            out.append(
                {
                    "key": f"online_{size}_{stat}",
                    "label": f"online {size} entit{'y' if size == 1 else 'ies'}, {stat[:3]}",
                    "feast": theirs,
                    "modelyard": mine,
                    "ratio": theirs / mine,
                    "target": f"< {_fmt(limit)}" if absolute else "-",
                    "pass": (mine < limit) if absolute else None,
                }
            )
    return out


def _table(rows: list[dict[str, Any]], plain: bool) -> None:
    head = ["benchmark", "Feast", "modelyard", "Feast/modelyard", "target", "result"]
    cells = [
        [
            r["label"],
            _fmt(r["feast"]),
            _fmt(r["modelyard"]),
            f"{r['ratio']:.1f}x",
            r["target"],
            "-" if r["pass"] is None else ("PASS" if r["pass"] else "MISS"),
        ]
        for r in rows
    ]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        return
    table = Table(title="Features: Feast (DuckDB offline, SQLite online) vs modelyard")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    styles = {"PASS": "green", "MISS": "red", "-": "dim"}
    for c in cells:
        table.add_row(*c[:-1], f"[{styles[c[-1]]}]{c[-1]}[/{styles[c[-1]]}]")
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="modelyard vs Feast features benchmark (see the module docstring)"
    )
    parser.add_argument("--entities", type=int, default=10_000, help="distinct entities")
    parser.add_argument("--rows", type=int, default=1_000_000, help="feature rows")
    parser.add_argument("--entity-rows", type=int, default=100_000, help="entity rows")
    parser.add_argument("--days", type=int, default=30, help="days the rows span")
    parser.add_argument("--repeats", type=int, default=3, help="historical repeats (best of)")
    parser.add_argument("--calls", type=int, default=1000, help="online lookups per size")
    parser.add_argument("--plain", action="store_true", help="plain table, no rich")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()

    feast_python, install_s = ensure_feast_venv()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="modelyard-bench-features-"))
    try:
        data = root / "data"
        data.mkdir()
        write_data(data, args)
        argv = [
            "--data",
            str(data),
            "--entities",
            str(args.entities),
            "--start",
            START,
            "--days",
            str(args.days),
            "--repeats",
            str(args.repeats),
            "--calls",
            str(args.calls),
        ]
        print(f"data in {root}: {args.rows:,} feature rows, {args.entity_rows:,} entity rows")
        print("  modelyard ...", flush=True)
        my = run_side(sys.executable, "modelyard_side.py", argv, root / "modelyard")
        print(f"  modelyard done in {my['wall_s']:.1f} s; feast ...", flush=True)
        fe = run_side(str(feast_python), "feast_side.py", argv, root / "feast")
        print(f"  feast done in {fe['wall_s']:.1f} s", flush=True)
        checks = {
            name: mismatches(
                root / "modelyard" / f"{name}.parquet", root / "feast" / f"{name}.parquet", key
            )
            for name, key in (
                ("hist_ttl", "row_id"),
                ("hist_no_ttl", "row_id"),
                ("online", ENTITY_KEY),
            )
        }
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    total_s = time.perf_counter() - started

    rows = _rows(my, fe, args)
    print()
    _table(rows, args.plain)
    for size in (1, 100):
        read = my[f"store_read_{size}"]
        print(
            f"modelyard store.read, {size} entit{'y' if size == 1 else 'ies'}: "
            f"p50 {_fmt(read['p50_s'])}, p99 {_fmt(read['p99_s'])}"
        )
    print(f"modelyard materialization: {my['materialize_how']}")
    print(
        f"materialized entities: modelyard {my['materialized_rows']:,}, "
        f"Feast {fe['materialized_rows']:,} (of {args.entities:,})"
    )
    problems = []
    for name, check in checks.items():
        print(
            f"check {name}: {check['mismatching_cells']:,} of {check['cells']:,} cells differ; "
            f"nulls modelyard {check['nulls_modelyard']:,} / Feast {check['nulls_feast']:,}; "
            f"rows only in modelyard {check['rows_only_modelyard']}, "
            f"only in Feast {check['rows_only_feast']}, "
            f"duplicated rows modelyard {check['duplicate_rows_modelyard']}, "
            f"Feast {check['duplicate_rows_feast']}"
        )
        if check["mismatching_cells"] or check["rows_only_modelyard"] or check["rows_only_feast"]:
            problems.append(f"{name}: results differ")
    for name in ("hist_ttl", "hist_no_ttl"):
        for side in (my, fe):
            if side[f"{name}_rows"] != args.entity_rows:
                problems.append(
                    f"{side['library']} returned {side[f'{name}_rows']:,} rows for {name}"
                )
    print("(Feast's default file/Dask offline store is not used; its DuckDB store is compared.)")
    busiest = max(my["load_before"], fe["load_before"])
    cpus = os.cpu_count() or 1
    if busiest > cpus:
        print(f"NOTE: busy machine (load average {busiest:.1f} on {cpus} CPUs)")
    if my["materialized_rows"] != fe["materialized_rows"]:
        problems.append(
            f"materialized entities differ: modelyard {my['materialized_rows']:,}, "
            f"Feast {fe['materialized_rows']:,}"
        )
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    missed = [r["label"] for r in rows if r["pass"] is False]
    for label in missed:
        print(f"TARGET MISSED: {label}")
    versions = {
        "feast": fe["version"],
        "modelyard": my["version"],
        "python": platform.python_version(),
    }
    install = "reused" if install_s is None else f"installed in {install_s:.1f} s"
    print(
        f"Feast {versions['feast']} ({install}; cold start + apply {fe['cold_start_s']:.1f} s), "
        f"modelyard {versions['modelyard']}, Python {versions['python']}, {cpus} CPUs; "
        f"total {total_s:.1f} s"
    )
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": cpus, "max_load_average": busiest},
        "versions": versions,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "feast_install_s": install_s,
        "total_s": total_s,
        "rows": rows,
        "checks": checks,
        "checks_failed": problems,
        "targets_missed": missed,
        "sides": {"feast": fe, "modelyard": my},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    if problems or missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
