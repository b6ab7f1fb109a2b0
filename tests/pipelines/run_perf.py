"""Runner overheads, measured: ``python -m tests.pipelines.run_perf [--pg URL]``.

1. A fully cached rerun of a 5-step pipeline through ``Pipeline.run()`` in this process
   (warm: the same pipeline run before); target < 0.15 s.
2. The overhead of an executed empty step with the local (fork pool) executor: a chain of
   20 empty steps with ``cache=False``, per step, at steady state ((t20 - t1) / 19: the
   pool's start and the run's fixed costs taken out) and as a whole (t20 / 20); target
   < 20 ms. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from modelyard.config import init_project, load_settings
from tests.pipelines import run_flows


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp()) / "project"
    init_project(root)
    settings = load_settings(root, environ={})
    if args.db_url:
        settings = msgspec.structs.replace(settings, db_url=args.db_url)
    failed = False

    first = run_flows.five.run(settings=settings, executor="local")
    expected = first.load("summary")

    def cached() -> None:
        run = run_flows.five.run(settings=settings, executor="local")
        assert {s.status for s in run.steps.values()} == {"cached"}, run.steps
        assert run.steps["summary"].outputs == first.steps["summary"].outputs

    cached()
    best, median = _best(cached, args.repeat)
    ok = best < 0.15
    failed |= not ok
    print(
        f"cached rerun, 5 steps:      best {best * 1000:7.1f} ms  median {median * 1000:7.1f} ms"
        f"  target < 150 ms  {'ok' if ok else 'MISSED'}  (value {expected!r})"
    )

    def chain(n: int) -> None:
        run = run_flows.empty_chain.run({"n": n}, settings=settings, executor="local", cache=False)
        assert {s.status for s in run.steps.values()} == {"completed"}

    chain(20)
    t1, t1m = _best(lambda: chain(1), args.repeat)
    t20, t20m = _best(lambda: chain(20), args.repeat)
    per_step = (t20 - t1) / 19
    ok = per_step < 0.020
    failed |= not ok
    print(
        f"empty step, local executor: steady {per_step * 1000:6.2f} ms/step"
        f"  whole run {t20 / 20 * 1000:6.2f} ms/step  (1 step {t1 * 1000:.1f} ms,"
        f" 20 steps {t20 * 1000:.1f} ms best; medians {t1m * 1000:.1f} / {t20m * 1000:.1f} ms)"
        f"  target < 20 ms  {'ok' if ok else 'MISSED'}"
    )
    t20i, _ = _best(
        lambda: run_flows.empty_chain.run(
            {"n": 20}, settings=settings, executor="inline", cache=False
        ),
        args.repeat,
    )
    print(f"empty step, inline:         whole run {t20i / 20 * 1000:6.2f} ms/step")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
