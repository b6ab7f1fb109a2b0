"""Monitoring benchmark: modelyard's drift engine against Evidently's and NannyML's
defaults on the same seeded data with a known truth, in one run.

Data (``data.py``, seeded, written to Parquet in a temp folder): 27 columns, 21 numeric
(normal, lognormal, integer-valued, uniform, exponential; ~1% missing each) and 6 string
categoricals (one with 500 levels, one with 2,000). Scenarios:

- ``drift`` at each of ``--sizes`` (100,000 and 1,000,000 rows per frame): the current
  frame has 8 drifted columns (``common.DRIFTED``: 3 mean shifts of 0.5 sd - normal,
  lognormal, integer-valued -, one sd x1.5, one category-mix change, one missing-rate
  jump 1% -> 15%, and two that do not favour modelyard's design, ``common.HARD``: a
  0.5 sd shift of a uniform column and a drift confined to the long tail of a
  2,000-level category, invisible to "top values + other" bins) and 2 traps that must
  NOT be flagged (``common.TRAPS``: a 0.01 sd shift and a single value of 1e5);
- ``no-drift`` windows at 1k, 10k and 100k rows (``--windows``; 10, 10 and 3 by
  default): the current frame is a fresh draw from the reference distribution, so every
  flagged column is a false alarm.

Each tool runs once per scenario in a fresh subprocess (its own venv for the anchors):
it reads the two Parquet files, compares them with the tool's DEFAULT settings and prints
one JSON line: CPU seconds (``time.process_time`` plus any children) of the comparison
alone (modelyard: ``Reference.from_data`` + ``compare``; the anchors: building their
inputs, the run and reading the flags back) and of read + comparison, wall seconds,
peak RSS (``VmHWM`` of /proc/self/status, else ``ru_maxrss``, which on Linux starts at
the parent's RSS; also after the imports and after each phase), the in-memory
size of its input (Arrow for modelyard, pandas ``memory_usage(deep=True)`` for the
anchors), the flagged columns and the tool's dataset-level verdict.

- ``modelyard`` (project venv, ``modelyard_side.py``): pyarrow Tables,
  ``Reference.from_data(reference).compare(current, settings=DriftSettings())``;
- ``evidently`` (``evidently_side.py``): Evidently 0.7 ``Report([DataDriftPreset()])``
  on pandas frames, column types inferred;
- ``nannyml`` (``nannyml_side.py``): ``UnivariateDriftCalculator`` with its default
  methods and thresholds, the whole current frame as one chunk.

A tool that cannot be installed or imported gets "not available" rows; the rest runs.
The output has a table per size (CPU, wall, peak MB, flagged columns against the truth:
true positives, false positives, missed; and each anchor's CPU / modelyard's CPU), the
false alarms of the no-drift windows per tool and size, and the targets:

- recall: modelyard flags every truly drifted column at every size (and no trap);
- at least 20x less CPU than Evidently at 100k rows (drift scenario; the CPU of the
  whole job, reading both Parquet files and comparing, since modelyard reads the files
  a column at a time inside its comparison);
- modelyard's peak memory at 1M rows within the input's Arrow size + 0.5 GB;
- no false alarm by modelyard where Evidently's defaults raise one (the no-drift
  windows in which Evidently flags a column, and the columns Evidently wrongly flags in
  the drift scenarios).

Run it with the project's python (``make bench-monitoring`` does)::

    .venv/bin/python benchmarks/monitoring/run.py [--sizes 100000,1000000] [--quick]
        [--only modelyard,evidently,nannyml] [--windows 1000:10,10000:10,100000:3]
        [--timeout 1800] [--keep]

Evidently at 1M rows takes minutes (about 140 s of CPU and 2.9 GB here on 2 CPUs; 455 s
wall and 3.4 GB have been seen elsewhere): ``--sizes 100000`` skips that size
(the output says which sizes were skipped). ``--quick`` is 100k only with 3, 3 and 1
no-drift windows. The anchor venvs live in ``~/.cache/modelyard-bench/``
(``MODELYARD_BENCH_CACHE``): ``evidently-venv`` (``evidently>=0.7,<0.8``, ``pandas<3``,
pyarrow) and ``nannyml-venv`` (``nannyml``, pyarrow, and statsmodels, which NannyML
0.13.1 imports without declaring it), created on first use.
Results go to ``benchmarks/monitoring/results/latest.json``. The run exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # benchmarks/, for anchor_venv

import anchor_venv  # noqa: E402
from common import COLUMNS, DRIFTED, HARD, MARKER, TRAPS  # noqa: E402
from data import tail_truth, write_pair  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
TOOLS = ["modelyard", "evidently", "nannyml"]
ANCHORS = {
    "evidently": {
        "packages": ["evidently>=0.7,<0.8", "pandas<3", "pyarrow"],
        "probe": "import evidently, pandas, pyarrow; from evidently.presets import DataDriftPreset",
        "note": "; about 1 GB",
    },
    "nannyml": {
        "packages": ["nannyml", "statsmodels", "pyarrow"],
        "probe": "import nannyml, pandas, pyarrow, statsmodels",
        "note": "; about 2 GB",
    },
}
SIDES = {name: f"{name}_side.py" for name in TOOLS}
DEFAULT_SIZES = "100000,1000000"
DEFAULT_WINDOWS = "1000:10,10000:10,100000:3"
QUICK_WINDOWS = "1000:3,10000:3,100000:1"
#: modelyard's CPU must be at least this many times less than Evidently's at CPU_SIZE
CPU_FACTOR, CPU_SIZE = 20.0, 100_000
#: modelyard's peak memory at MEMORY_SIZE may exceed the input's size by this (MB)
MEMORY_SIZE, MEMORY_MARGIN_MB = 1_000_000, 512.0
QUIET_ENV = {
    "NML_DISABLE_USAGE_LOGGING": "1",
    "DO_NOT_TRACK": "1",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}


# --------------------------------------------------------------------------- tools


def ensure_tool(name: str) -> tuple[str | None, str | None, float | None]:
    """(python, why not available, install seconds) of one tool."""
    if name == "modelyard":
        return sys.executable, None, None
    spec = ANCHORS[name]
    try:
        python, took = anchor_venv.ensure_venv(
            f"{name}-venv",
            spec["packages"],
            probe=spec["probe"],
            env=QUIET_ENV,
            size_note=spec["note"],
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        return None, f"install failed: {exc}", None
    return str(python), None, took


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_BENCH")}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return {**env, **QUIET_ENV}


def run_side(python: str, tool: str, ref: Path, cur: Path, timeout: float) -> dict[str, Any]:
    """One tool on one scenario in a fresh subprocess; its results line (or why not)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, str(HERE / SIDES[tool]), "--reference", str(ref), "--current", str(cur)],
            cwd=ref.parent,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"available": False, "why": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()][-3:]
        return {"available": False, "why": f"exit {proc.returncode}: " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    result["process_wall_s"] = time.perf_counter() - start
    return result


def score(flagged: list[str]) -> dict[str, list[str]]:
    """Flagged columns against the drift scenario's truth."""
    return {
        "true_positives": [c for c in DRIFTED if c in flagged],
        "false_positives": [c for c in flagged if c not in DRIFTED],
        "missed": [c for c in DRIFTED if c not in flagged],
        "traps_flagged": [c for c in TRAPS if c in flagged],
    }


# --------------------------------------------------------------------------- scenarios


def _parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def _parse_windows(text: str) -> dict[int, int]:
    out = {}
    for part in text.split(","):
        if part.strip():
            size, count = part.split(":")
            out[int(float(size))] = int(count)
    return out


def _input_mb(ref: Path, cur: Path) -> float:
    import pyarrow.parquet as pq

    return sum(pq.read_table(p).nbytes for p in (ref, cur)) / 2**20


def run_drift(
    size: int, work: Path, tools: dict[str, dict[str, Any]], timeout: float
) -> dict[str, Any]:
    start = time.perf_counter()
    ref, cur = write_pair(work / f"drift-{size}", size, seed=size % 9973, drift=True)
    input_mb = _input_mb(ref, cur)
    print(
        f"drift scenario, {size:,} rows x {len(COLUMNS)} columns "
        f"(Arrow {input_mb:.0f} MB in memory; written in {time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    rows: dict[str, Any] = {}
    for name, tool in tools.items():
        if tool["why"]:
            rows[name] = {"available": False, "why": tool["why"]}
            continue
        print(f"  {name} ...", flush=True)
        out = run_side(tool["python"], name, ref, cur, timeout)
        if out.get("available"):
            out.update(score(out["flagged"]))
            print(
                f"    CPU {out['cpu_s']:.2f} s, wall {out['wall_s']:.2f} s, "
                f"peak {out['peak_mb']:.0f} MB, flagged {out['flagged']}",
                flush=True,
            )
        else:
            print(f"    not available: {out['why']}", flush=True)
            if out.get("stage") == "import":
                tool["why"] = out["why"]  # no use trying the other scenarios
        rows[name] = out
    shutil.rmtree(ref.parent, ignore_errors=True)
    return {"size": size, "input_mb": input_mb, "tools": rows}


def run_no_drift(
    windows: dict[int, int], work: Path, tools: dict[str, dict[str, Any]], timeout: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, count in windows.items():
        print(f"no-drift windows, {size:,} rows: {count}", flush=True)
        per_tool: dict[str, Any] = {name: {"windows": []} for name in tools}
        for w in range(count):
            ref, cur = write_pair(
                work / f"nodrift-{size}-{w}", size, seed=1000 + 17 * w + size, drift=False
            )
            for name, tool in tools.items():
                if tool["why"]:
                    per_tool[name] = {"available": False, "why": tool["why"]}
                    continue
                res = run_side(tool["python"], name, ref, cur, timeout)
                if not res.get("available"):
                    print(f"  {name} window {w}: not available: {res['why']}", flush=True)
                    if res.get("stage") == "import":
                        tool["why"] = res["why"]
                    per_tool[name]["windows"].append({"available": False, "why": res["why"]})
                    continue
                per_tool[name]["windows"].append(
                    {
                        "available": True,
                        "flagged": res["flagged"],
                        "dataset_drift": res.get("dataset_drift"),
                        "cpu_s": res["cpu_s"],
                        "peak_mb": res["peak_mb"],
                    }
                )
            shutil.rmtree(ref.parent, ignore_errors=True)
        for name, entry in per_tool.items():
            done = [w for w in entry.get("windows", []) if w["available"]]
            if not done:
                entry.setdefault("available", False)
                entry.setdefault("why", "no window ran")
                continue
            entry.update(
                {
                    "available": True,
                    "windows_run": len(done),
                    "windows_with_false_alarm": sum(1 for w in done if w["flagged"]),
                    "false_alarm_columns": sum(len(w["flagged"]) for w in done),
                    "dataset_drift_raised": sum(1 for w in done if w["dataset_drift"]),
                    "columns": sorted({c for w in done for c in w["flagged"]}),
                    "cpu_s_mean": sum(w["cpu_s"] for w in done) / len(done),
                }
            )
            print(
                f"  {name}: false alarms in {entry['windows_with_false_alarm']}/{len(done)} "
                f"windows ({entry['false_alarm_columns']} columns)",
                flush=True,
            )
        out[str(size)] = per_tool
    return out


# --------------------------------------------------------------------------- output


def _ok(row: dict[str, Any] | None) -> bool:
    return bool(row and row.get("available"))


def targets(drift: list[dict[str, Any]], no_drift: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    found = [d["tools"]["modelyard"] for d in drift if _ok(d["tools"].get("modelyard"))]
    missed = sorted({c for row in found for c in row["missed"]})
    traps = sorted({c for row in found for c in row["traps_flagged"]})
    out.append(
        {
            "target": "recall: modelyard flags every drifted column at every size, no trap",
            "value": (
                f"{sum(len(r['true_positives']) for r in found)} of "
                f"{len(DRIFTED) * len(found)} found"
                + (f"; missed {', '.join(missed)}" if missed else "")
                + (f"; traps flagged {', '.join(traps)}" if traps else "")
            )
            if found
            else None,
            "pass": (not missed and not traps) if found else None,
        }
    )
    by_size = {d["size"]: d for d in drift}
    at = by_size.get(CPU_SIZE)
    mine = at["tools"].get("modelyard") if at else None
    theirs = at["tools"].get("evidently") if at else None
    # the whole job's CPU (read both files, compare): modelyard reads inside its compare
    ratio = (
        theirs["cpu_with_read_s"] / mine["cpu_with_read_s"] if _ok(mine) and _ok(theirs) else None
    )
    out.append(
        {
            "target": f"CPU >= {CPU_FACTOR:g}x less than Evidently at {CPU_SIZE:,} rows",
            "value": None if ratio is None else f"{ratio:.1f}x",
            "pass": None if ratio is None else ratio >= CPU_FACTOR,
        }
    )
    at = by_size.get(MEMORY_SIZE)
    mine = at["tools"].get("modelyard") if at else None
    value: str | None = None
    ok: bool | None = None
    if _ok(mine) and at:
        over = mine["peak_mb"] - at["input_mb"]
        after = mine.get("peak_after_mb", {})
        value = (
            f"peak {mine['peak_mb']:.0f} MB = input {at['input_mb']:.0f} MB + {over:.0f} MB "
            f"(after imports {after.get('imports', float('nan')):.0f} MB, "
            f"after the Parquet read {after.get('read', float('nan')):.0f} MB)"
        )
        ok = over <= MEMORY_MARGIN_MB
    out.append(
        {
            "target": f"peak memory at {MEMORY_SIZE:,} rows <= input + {MEMORY_MARGIN_MB:.0f} MB",
            "value": value,
            "pass": ok,
        }
    )
    both, evidently_alarms, checked = 0, 0, False
    for d in drift:
        mine, theirs = d["tools"].get("modelyard"), d["tools"].get("evidently")
        if _ok(mine) and _ok(theirs):
            checked = True
            wrong = set(theirs["false_positives"])
            evidently_alarms += len(wrong)
            both += len(wrong & set(mine["false_positives"]))
    for entry in no_drift.values():
        mine, theirs = entry.get("modelyard", {}), entry.get("evidently", {})
        if _ok(mine) and _ok(theirs):
            checked = True
            for m, t in zip(mine["windows"], theirs["windows"], strict=False):
                if m.get("available") and t.get("available") and t["flagged"]:
                    evidently_alarms += 1
                    both += bool(m["flagged"])
    out.append(
        {
            "target": "no false alarm by modelyard where Evidently's defaults raise one",
            "value": f"{both} of {evidently_alarms}" if checked else None,
            "pass": both == 0 if checked else None,
        }
    )
    return out


def _print_table(head: list[str], cells: list[list[str]]) -> None:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def report(drift: list[dict[str, Any]], no_drift: dict[str, Any], skipped: list[str]) -> None:
    print(f"truth: drifted {', '.join(DRIFTED)}; traps (must not flag) {', '.join(TRAPS)}")
    for d in drift:
        print(
            f"\nDrift scenario, {d['size']:,} rows per frame (Arrow input {d['input_mb']:.0f} MB)"
        )
        mine = d["tools"].get("modelyard")
        head = ["tool", "CPU s", "CPU+read s", "wall s", "peak MB", "imports MB", "input MB"]
        head += ["TP", "FP"]
        head += ["missed", "dataset drift", "CPU / modelyard"]
        cells = []
        for name, row in d["tools"].items():
            if not _ok(row):
                why = str(row.get("why", "?")).replace("\n", " ")[:70]
                cells.append([name, "not available", *[""] * 9, why])
                continue
            ratio = (
                f"{row['cpu_with_read_s'] / mine['cpu_with_read_s']:.1f}x"
                if _ok(mine) and name != "modelyard"
                else ""
            )
            dd = row.get("dataset_drift")
            cells.append(
                [
                    name,
                    f"{row['cpu_s']:.2f}",
                    f"{row['cpu_with_read_s']:.2f}",
                    f"{row['wall_s']:.2f}",
                    f"{row['peak_mb']:.0f}",
                    f"{row.get('peak_after_mb', {}).get('imports', float('nan')):.0f}",
                    f"{row['input_mb']:.0f}",
                    f"{len(row['true_positives'])}/{len(DRIFTED)}",
                    str(len(row["false_positives"])),
                    str(len(row["missed"])),
                    "n/a" if dd is None else "yes" if dd else "no",
                    ratio,
                ]
            )
        _print_table(head, cells)
        for name, row in d["tools"].items():
            if _ok(row):
                print(
                    f"  {name}: false positives {row['false_positives'] or '-'}; "
                    f"missed {row['missed'] or '-'}"
                )
        hard = [c for c in HARD if c in DRIFTED]
        for name, row in d["tools"].items():
            if _ok(row):
                caught = ", ".join(f"{c} {'yes' if c in row['flagged'] else 'NO'}" for c in hard)
                print(f"  {name}, the hard drifts: {caught}")
        tail = ((mine or {}).get("details") or {}).get("columns", {}).get("drift_cat_tail")
        if tail:
            print(
                f"  modelyard's JS distance on drift_cat_tail: {tail['effect']:.3f} "
                f"(truth {tail_truth():.3f}, threshold {tail['threshold']:.3f})"
            )
    for size in skipped:
        print(f"\nsize {size}: skipped")
    if no_drift:
        print("\nNo-drift windows (every flagged column is a false alarm)")
        head = ["rows", "tool", "windows", "with false alarm", "columns", "dataset drift"]
        head += ["CPU s (mean)", "columns flagged"]
        cells = []
        for size, per_tool in no_drift.items():
            for name, e in per_tool.items():
                if not _ok(e):
                    why = str(e.get("why", "?"))[:60]
                    cells.append([f"{int(size):,}", name, "not available", "", "", "", "", why])
                    continue
                cells.append(
                    [
                        f"{int(size):,}",
                        name,
                        str(e["windows_run"]),
                        str(e["windows_with_false_alarm"]),
                        str(e["false_alarm_columns"]),
                        str(e["dataset_drift_raised"]),
                        f"{e['cpu_s_mean']:.2f}",
                        ", ".join(e["columns"])[:80] or "-",
                    ]
                )
        _print_table(head, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description="monitoring benchmark (see the module docstring)")
    parser.add_argument("--sizes", default=None, help=f"drift sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--windows", default=None, help=f"no-drift SIZE:COUNT ({DEFAULT_WINDOWS})")
    parser.add_argument("--quick", action="store_true", help="100k only, 3/3/1 no-drift windows")
    parser.add_argument("--only", default=",".join(TOOLS), help="tools, comma-separated")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per side run")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    sizes_text = args.sizes if args.sizes is not None else "100000" if args.quick else DEFAULT_SIZES
    windows_text = (
        args.windows
        if args.windows is not None
        else QUICK_WINDOWS
        if args.quick
        else DEFAULT_WINDOWS
    )
    sizes, windows = _parse_sizes(sizes_text), _parse_windows(windows_text)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {TOOLS}")
    skipped = [f"{s:,}" for s in _parse_sizes(DEFAULT_SIZES) if s not in sizes]
    for size in skipped:
        reason = "--quick" if args.quick else "--sizes"
        print(f"size {size}: skipped ({reason}); drift scenario not run at it")

    started = time.perf_counter()
    tools: dict[str, dict[str, Any]] = {}
    for name in [t for t in TOOLS if t in only]:
        python, why, took = ensure_tool(name)
        tools[name] = {"python": python, "why": why, "install_s": took}
        if why:
            print(f"{name}: not available ({why})")
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-monitoring-"))
    drift: list[dict[str, Any]] = []
    no_drift: dict[str, Any] = {}
    try:
        for size in sizes:
            drift.append(run_drift(size, work, tools, args.timeout))
        no_drift = run_no_drift(windows, work, tools, args.timeout)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    report(drift, no_drift, skipped)
    goals = targets(drift, no_drift)
    print()
    for g in goals:
        verdict = "n/a" if g["pass"] is None else "PASS" if g["pass"] else "MISS"
        print(f"target {g['target']}: {g['value'] or '-'} {verdict}")
    versions: dict[str, Any] = {"python": platform.python_version()}
    for d in drift:
        for name, row in d["tools"].items():
            if row.get("version"):
                versions[name] = row["version"]
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    cpus = os.cpu_count() or 1
    load_avg = os.getloadavg()[0]
    print(f"machine: load average {load_avg:.1f} on {cpus} CPUs at the end", end="")
    print(" - NOTE: busy machine, timings inflated" if load_avg > cpus / 2 else "")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s")
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": cpus, "load_average": load_avg},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "skipped_sizes": skipped,
        "windows": windows,
        "truth": {"drifted": DRIFTED, "traps": TRAPS},
        "versions": versions,
        "installs": {k: {"install_s": v["install_s"], "why": v["why"]} for k, v in tools.items()},
        "drift": drift,
        "no_drift": no_drift,
        "targets": goals,
        "total_s": total,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    if any(g["pass"] is False for g in goals):
        sys.exit(1)


if __name__ == "__main__":
    main()
