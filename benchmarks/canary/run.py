"""Canary benchmark: the mSPRT's error rate under repeated looks, against naive peeking.

Two simulations, each run once, seeded, both rules on the same simulated data:

1. Error rates (Bernoulli per-row errors; lower is better). Each run feeds 50 looks of 200
   rows per arm. Under the null both arms have error rate 0.20; for power the candidate's is
   0.18. The mSPRT (:class:`modelyard.gates.SequentialTest`, ``tau2 = 0.03**2``) decides when
   its confidence sequence excludes 0; the naive rule rejects the first time a fixed-alpha
   two-sample z-test on the same difference is significant at any look. At alphas 0.01,
   0.05, 0.10: false-decision rate (any decision under the null) and power (the correct
   decision, promote, within the 50 looks). The simulation is vectorised; the first 200 runs
   of each cell are replayed through ``SequentialTest`` itself and must reach the same
   decision at the same look, or the run exits 1.
2. AUC (scored rows; labels Bernoulli(0.3), score = label * separation + N(0, 1)). The
   mSPRT on per-row log loss of the sigmoid of the score (the per-row proxy the module
   documents for AUC) against the naive "compare AUCs at every look" rule: DeLong AUC of
   each arm (``gates.statistics.auc_delong``), unpaired z-test at alpha 0.05 at each of
   20 looks of 100 rows per arm. Null: separation 1.0 in both arms; power: 1.15 vs 1.0.

Exit 1 when the mSPRT's false-decision rate exceeds alpha beyond the binomial tolerance
(the 99.9% quantile of Binomial(runs, alpha) / runs), or when the replay disagrees. Run::

    .venv/bin/python benchmarks/canary/run.py [--runs 10000]

Results go to ``benchmarks/canary/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from modelyard.gates import SequentialTest
from modelyard.gates.sequential import confidence_radius
from modelyard.gates.statistics import auc_delong

HERE = Path(__file__).resolve().parent
TAU2 = 0.03**2
LOOKS, BATCH, MIN_SAMPLES = 50, 200, 100
REPLAY = 200

Floats = NDArray[np.float64]


def bound(alpha: float, runs: int) -> float:
    """alpha plus a binomial tolerance: the 99.9% quantile of Binomial(runs, alpha) / runs."""
    return float(stats.binom.ppf(0.999, runs, alpha)) / runs


def first_true(flags: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Index of the first True along the last axis per row, or -1 when none."""
    any_ = flags.any(axis=1)
    return np.where(any_, flags.argmax(axis=1), -1)


def msprt_looks(
    diff: Floats, var: Floats, n_min: NDArray[np.int64], alpha: float, tau2: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Look index of the first promote and of the first rollback (error rates: gain = -diff)."""
    valid = (n_min >= MIN_SAMPLES) & (var > 0)
    safe = np.where(valid, var, 1.0)
    radius = np.where(valid, confidence_radius(safe, tau2, alpha), np.inf)
    lower = np.maximum.accumulate(diff - radius, axis=1)
    upper = np.minimum.accumulate(diff + radius, axis=1)
    promote, rollback = upper < 0, lower > 0  # error rate lower / higher in the candidate
    return first_true(promote), first_true(rollback)


def bernoulli_paths(
    rng: np.random.Generator, runs: int, p_cand: float, p_prim: float
) -> tuple[Floats, Floats, NDArray[np.int64], NDArray[np.int64]]:
    """Per-run, per-look error counts of each arm, and the cumulative diff and variance."""
    kc = rng.binomial(BATCH, p_cand, (runs, LOOKS))
    kp = rng.binomial(BATCH, p_prim, (runs, LOOKS))
    n = BATCH * np.arange(1, LOOKS + 1)
    cc, cp = kc.cumsum(axis=1), kp.cumsum(axis=1)
    var_c = (cc - cc**2 / n) / (n - 1)
    var_p = (cp - cp**2 / n) / (n - 1)
    return cc / n - cp / n, var_c / n + var_p / n, kc, kp


def replay(
    kc: NDArray[np.int64], kp: NDArray[np.int64], alpha: float
) -> list[tuple[str, int | None]]:
    """The same runs through SequentialTest, batch by batch: (decision, look)."""
    out: list[tuple[str, int | None]] = []
    for run in range(kc.shape[0]):
        test = SequentialTest(
            tau2=TAU2, alpha=alpha, higher_is_better=False, min_samples=MIN_SAMPLES
        )
        for look in range(LOOKS):
            c = np.zeros(BATCH)
            c[: kc[run, look]] = 1.0
            p = np.zeros(BATCH)
            p[: kp[run, look]] = 1.0
            test.update(c, p)
        out.append((test.decide(horizon=10**9), test.decided_at))
    return out


def error_rate_cell(
    rng: np.random.Generator, runs: int, alpha: float, p_cand: float, p_prim: float
) -> dict[str, Any]:
    diff, var, kc, kp = bernoulli_paths(rng, runs, p_cand, p_prim)
    promote_at, rollback_at = msprt_looks(
        diff, var, np.broadcast_to(BATCH * np.arange(1, LOOKS + 1), diff.shape), alpha, TAU2
    )
    decided = (promote_at >= 0) | (rollback_at >= 0)
    first_is_promote = (promote_at >= 0) & ((rollback_at < 0) | (promote_at <= rollback_at))
    z = np.abs(diff) / np.sqrt(np.where(var > 0, var, np.inf))
    naive_hit = z > stats.norm.ppf(1 - alpha / 2)
    naive_first = first_true(naive_hit)
    naive_sign = np.where(naive_first >= 0, diff[np.arange(runs), np.maximum(naive_first, 0)], 0.0)
    vector: list[tuple[str, int | None]] = []
    for r in range(min(REPLAY, runs)):
        if not decided[r]:
            vector.append(("continue", None))
        elif first_is_promote[r]:
            vector.append(("promote", int(promote_at[r]) + 1))
        else:
            vector.append(("rollback", int(rollback_at[r]) + 1))
    agree = vector == replay(kc[:REPLAY], kp[:REPLAY], alpha)
    return {
        "msprt_any": float(decided.mean()),
        "msprt_promote": float(first_is_promote.mean()),
        "naive_any": float((naive_first >= 0).mean()),
        "naive_promote": float(((naive_first >= 0) & (naive_sign < 0)).mean()),
        "replay_agrees": agree,
    }


def auc_simulation(
    rng: np.random.Generator, runs: int, sep_cand: float, alpha: float = 0.05
) -> dict[str, Any]:
    looks, batch = 20, 100
    n_rows = looks * batch
    z_crit = stats.norm.ppf(1 - alpha / 2)
    msprt_any = msprt_promote = naive_any = naive_promote = 0
    for _ in range(runs):
        arms = []
        for sep in (sep_cand, 1.0):
            y = rng.binomial(1, 0.3, n_rows)
            score = y * sep + rng.normal(size=n_rows)
            prob = 1 / (1 + np.exp(-(score - sep / 2)))
            loss = -(y * np.log(prob) + (1 - y) * np.log1p(-prob))
            arms.append((y, score, loss))
        test = SequentialTest(
            tau2=0.05**2, alpha=alpha, higher_is_better=False, min_samples=MIN_SAMPLES
        )
        naive: int | None = None
        for look in range(looks):
            rows = slice(look * batch, (look + 1) * batch)
            test.update(arms[0][2][rows], arms[1][2][rows])
            if naive is None:
                upto = slice(0, (look + 1) * batch)
                a, b = (auc_delong(y[upto], s[upto]) for y, s, _ in arms)
                zz = (a.auc - b.auc) / math.sqrt(a.variance + b.variance)
                if abs(zz) > z_crit:
                    naive = 1 if zz > 0 else -1
        decision = test.decide(horizon=10**9)
        msprt_any += decision != "continue"
        msprt_promote += decision == "promote"
        naive_any += naive is not None
        naive_promote += naive == 1
    return {
        "msprt_any": msprt_any / runs,
        "msprt_promote": msprt_promote / runs,
        "naive_any": naive_any / runs,
        "naive_promote": naive_promote / runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs per error-rate cell")
    parser.add_argument("--auc-runs", type=int, default=300, help="runs per AUC cell")
    args = parser.parse_args(argv)
    if args.runs < REPLAY or args.auc_runs < 1:
        print(f"--runs: expected an integer >= {REPLAY}, --auc-runs >= 1", file=sys.stderr)
        return 2
    rng = np.random.default_rng(20_261_206)
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    print(
        f"1. Error rates: {args.runs} runs x {LOOKS} looks x {BATCH} rows/arm; "
        "null 0.20 vs 0.20, power 0.18 vs 0.20"
    )
    print(
        f"{'alpha':>6} {'tol':>6} | {'mSPRT false':>11} {'naive false':>11} | "
        f"{'mSPRT power':>11} {'naive power':>11} | replay"
    )
    for alpha in (0.01, 0.05, 0.10):
        null = error_rate_cell(rng, args.runs, alpha, 0.20, 0.20)
        alt = error_rate_cell(rng, args.runs, alpha, 0.18, 0.20)
        tol = bound(alpha, args.runs)
        ok = null["replay_agrees"] and alt["replay_agrees"]
        print(
            f"{alpha:>6.2f} {tol:>6.4f} | {null['msprt_any']:>11.4f} {null['naive_any']:>11.4f} | "
            f"{alt['msprt_promote']:>11.4f} {alt['naive_promote']:>11.4f} | "
            f"{'equal' if ok else 'DIFFERS'}"
        )
        if null["msprt_any"] > tol:
            failures.append(
                f"alpha {alpha}: mSPRT false-decision rate {null['msprt_any']:.4f} > {tol:.4f}"
            )
        if not ok:
            failures.append(
                f"alpha {alpha}: SequentialTest replay differs from the vectorised simulation"
            )
        rows.append({"alpha": alpha, "tolerance": tol, "null": null, "power": alt})
    print(
        f"\n2. AUC: {args.auc_runs} runs x 20 looks x 100 rows/arm, alpha 0.05; "
        "mSPRT on per-row log loss"
    )
    print(
        f"{'case':>22} | {'mSPRT any':>9} {'mSPRT promote':>13} | "
        f"{'naive AUC any':>13} {'naive promote':>13}"
    )
    auc: dict[str, Any] = {}
    for case, sep in (("null (1.0 vs 1.0)", 1.0), ("power (1.15 vs 1.0)", 1.15)):
        res = auc_simulation(rng, args.auc_runs, sep)
        auc[case] = res
        print(
            f"{case:>22} | {res['msprt_any']:>9.4f} {res['msprt_promote']:>13.4f} | "
            f"{res['naive_any']:>13.4f} {res['naive_promote']:>13.4f}"
        )
    tol = bound(0.05, args.auc_runs)
    if auc["null (1.0 vs 1.0)"]["msprt_any"] > tol:
        failures.append(f"AUC null: mSPRT false-decision rate above {tol:.4f}")
    elapsed = time.perf_counter() - start
    print(f"\n{elapsed:.1f} s")
    (HERE / "results").mkdir(exist_ok=True)
    out = {
        "runs": args.runs,
        "auc_runs": args.auc_runs,
        "error_rates": rows,
        "auc": auc,
        "failures": failures,
    }
    (HERE / "results" / "latest.json").write_text(json.dumps(out, indent=2))
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
