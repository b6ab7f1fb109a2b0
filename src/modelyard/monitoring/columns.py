"""One reference column, prepared once, compared with many windows.

``NumericReference`` keeps the sorted non-missing values (all of them from data; the
profile's sorted sample from a ``ReferenceProfile``), the winsorising limits (the 0.1% and
99.9% quantiles; a profile has no such quantiles, so the sample's min and max; when
the two are equal, as for a constant column, one robust scale either side), the robust
scale, the decile bins with their counts and the finite range. A window costs one sort.

``CategoricalReference`` keeps the count of every value, up to ``TOP_K`` (10,000) of the
most frequent; the rarer ones beyond them are hashed into ``TAIL_BUCKETS`` cells and
remembered, so a value never seen is told apart from a rare one. Keeping the levels
matters for long tails: folded into one "other" cell, a tail whose mass moves between
its values keeps the same total and its drift is invisible (a Jensen-Shannon distance
of 0.35 between the true distributions read as 0.06). A profile only keeps its top
values: when it folded some into ``"__other__"`` a window's value outside them counts as
"other" (one cell; it may be a rare reference value), else as unseen.

The chi-square table is reference vs window over ``[values..., other cells, unseen,
missing]``. An unseen value has a reference count of zero, which would make a single
unseen row look infinitely unlikely; the reference's unseen cell therefore gets a
pseudo-count: the larger of ``n_reference / n_current`` (one row per window) and the
Good-Turing estimate of the unseen share (the share of reference rows whose value
appears once, moved there from the rare values; see ``expected_window``), so a
long-tailed column whose new windows naturally hold values the reference missed is not
an alarm, and only a share well above that is significant.
Cells too sparse for the chi-square approximation (an expected count below 5 in the
smaller sample) are grouped, in order of their reference frequency, into cells that are
not (``stats.pool_sparse``), so a tail still counts, coarsened rather than dropped. The
null distribution of the JS distance is drawn the same way: a window from the
reference's shares with the Good-Turing unseen share added, over the same cells, so the
noise of many sparse levels raises the threshold and no-drift long tails stay quiet.
Effects (JS, PSI) use the observed counts, without the pseudo-count.

>>> import numpy as np, pandas as pd
>>> ref = NumericReference.from_values("x", np.arange(1000.0))
>>> drift = ref.compare(pd.Series(np.arange(500.0, 1500.0)), DriftSettings())
>>> drift.test, round(drift.statistic, 3), drift.out_of_range_share
('ks', 0.5, 0.5)
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelyard.models.profile import (
    BIN_LEVELS,
    MAD_SCALE,
    OTHER,
    CategoricalProfile,
    NumericProfile,
)
from modelyard.monitoring.calibration import (
    categorical_null_quantile,
    numeric_null_quantile,
    scale_to_window,
)
from modelyard.monitoring.frames import read_counts, read_numeric
from modelyard.monitoring.report import ColumnDrift
from modelyard.monitoring.settings import DriftSettings
from modelyard.monitoring.stats import (
    chi2_2xk,
    jensenshannon,
    ks_and_wasserstein,
    pool_sparse,
    psi,
    robust_scale,
)

__all__ = [
    "TAIL_BUCKETS",
    "TOP_K",
    "CategoricalReference",
    "NumericReference",
    "good_turing",
    "sorted_mad",
]

TOP_K: Final = 10_000
"""Values of a category kept with their own cell (the most frequent)."""
TAIL_BUCKETS: Final = 1_024
"""Hashed cells for the values beyond ``TOP_K``."""
WINSOR_LEVELS: Final = (0.001, 0.999)

Floats = NDArray[np.float64]
_CacheKey = tuple[int, int, int, float, int]


def _missing_test(
    ref_missing: int, ref_rows: int, cur_missing: int, cur_rows: int
) -> tuple[float, float, float]:
    """Missing rates of both sides and the 2x2 chi-square p-value of their difference."""
    ref_rate = ref_missing / ref_rows if ref_rows else math.nan
    cur_rate = cur_missing / cur_rows if cur_rows else math.nan
    table = np.array([[ref_missing, ref_rows - ref_missing], [cur_missing, cur_rows - cur_missing]])
    return ref_rate, cur_rate, chi2_2xk(table).pvalue


def _limits(low: float, high: float, scale: float) -> tuple[float, float]:
    """Winsorising limits; a reference without spread in its tails gets one scale either side."""
    if low == high:
        return low - scale, high + scale
    return low, high


@dataclass(kw_only=True)
class NumericReference:
    """A numeric reference column; see the module docstring."""

    name: str
    rows: int
    missing: int
    values: Floats
    low: float
    high: float
    scale: float
    minimum: float | None
    maximum: float | None
    edges: Floats
    bin_counts: NDArray[np.int64]
    findings: list[str] = field(default_factory=list)
    _cache: dict[_CacheKey, float] = field(default_factory=dict, repr=False)

    @classmethod
    def from_values(cls, name: str, column: Floats) -> NumericReference:
        """Prepare from the column's values (NaN is missing)."""
        missing = np.isnan(column)
        values = np.sort(column[~missing])
        finite = values[np.isfinite(values)]
        findings = []
        if finite.size == 0:
            findings.append(f"column {name!r} has no finite values in the reference")
            low = high = math.nan
            mad = iqr = std = None
            edges = np.empty(0)
            minimum = maximum = None
        else:
            levels = np.array((*WINSOR_LEVELS, 0.25, 0.5, 0.75, *BIN_LEVELS))
            with np.errstate(over="ignore", invalid="ignore"):
                found = np.quantile(finite, levels)
                mad = sorted_mad(finite, float(found[3])) * MAD_SCALE
                std = float(np.std(finite))
            low, high = float(found[0]), float(found[1])
            iqr = float(found[4] - found[2])
            edges = np.unique(found[5:])
            minimum, maximum = float(finite[0]), float(finite[-1])
            if minimum == maximum:
                findings.append(f"column {name!r} is constant in the reference")
        bins = np.diff(np.searchsorted(values, edges, side="left"), prepend=0, append=values.size)
        low, high = _limits(low, high, robust_scale(mad, iqr, std))
        return cls(
            name=name,
            rows=column.size,
            missing=int(np.count_nonzero(missing)),
            values=values,
            low=low,
            high=high,
            scale=robust_scale(mad, iqr, std),
            minimum=minimum,
            maximum=maximum,
            edges=edges,
            bin_counts=bins.astype(np.int64),
            findings=findings,
        )

    @classmethod
    def from_profile(cls, name: str, profile: NumericProfile) -> NumericReference:
        """Prepare from a profile: KS and Wasserstein against its sample."""
        sample = np.asarray(profile.sample, dtype=np.float64)
        findings = []
        if sample.size == 0:
            findings.append(f"column {name!r} has no finite values in the reference")
        elif profile.min == profile.max:
            findings.append(f"column {name!r} is constant in the reference")
        scale = robust_scale(profile.mad, profile.iqr, profile.std)
        low, high = _limits(
            float(sample[0]) if sample.size else math.nan,
            float(sample[-1]) if sample.size else math.nan,
            scale,
        )
        return cls(
            name=name,
            rows=profile.count,
            missing=profile.missing,
            values=sample,
            low=low,
            high=high,
            scale=scale,
            minimum=profile.min,
            maximum=profile.max,
            edges=np.asarray(profile.bin_edges, dtype=np.float64),
            bin_counts=np.asarray(profile.bin_counts, dtype=np.int64),
            findings=findings,
        )

    def null_threshold(self, n_current: int, settings: DriftSettings) -> float:
        """The calibrated null quantile of the effect for a window of ``n_current`` values."""
        size = min(n_current, settings.calibration_size)
        key = (size, self.values.size, settings.resamples, settings.null_quantile, settings.seed)
        if key not in self._cache:
            self._cache[key] = numeric_null_quantile(
                self.values,
                self.low,
                self.high,
                self.scale,
                size=size,
                resamples=settings.resamples,
                quantile=settings.null_quantile,
                seed=settings.seed,
            )
        return scale_to_window(
            self._cache[key], size=size, n_reference=self.values.size, n_current=n_current
        )

    def compare(self, series: pd.Series, settings: DriftSettings) -> ColumnDrift:
        """Compare a window's column with this reference column."""
        read = read_numeric(self.name, series)
        column = read.values
        absent = np.isnan(column)
        current = column[~absent]
        del column
        current.sort()
        findings = list(self.findings) + ([read.finding] if read.finding else [])
        ref_rate, cur_rate, missing_p = _missing_test(
            self.missing, self.rows, int(np.count_nonzero(absent)), absent.size
        )
        common = {
            "name": self.name,
            "kind": "numeric",
            "test": "ks",
            "effect_name": "wasserstein",
            "missing_reference": ref_rate,
            "missing_current": cur_rate,
            "missing_p": missing_p,
            "n_reference": self.rows,
            "n_current": absent.size,
        }
        if current.size == 0 or self.values.size == 0:
            findings.append(f"column {self.name!r} has no values to compare in the window")
            if self.values.size == 0:
                findings[-1] = f"column {self.name!r} has no values to compare in the reference"
            return ColumnDrift(
                **common,  # type: ignore[arg-type]
                statistic=math.nan,
                p_value=math.nan,
                effect=math.nan,
                findings=findings,
            )
        if current.size > 1 and current[0] == current[-1]:
            findings.append(f"column {self.name!r} is constant in the window")
        ks, distance = ks_and_wasserstein(self.values, current, self.low, self.high)
        effect = distance / self.scale
        threshold = max(self.null_threshold(current.size, settings), settings.min_wasserstein)
        bins = np.diff(
            np.searchsorted(current, self.edges, side="left"), prepend=0, append=current.size
        )
        return ColumnDrift(
            **common,  # type: ignore[arg-type]
            statistic=ks.statistic,
            p_value=ks.pvalue,
            effect=effect,
            threshold=threshold,
            psi=psi(self.bin_counts, bins, settings.psi_epsilon),
            wasserstein=effect,
            out_of_range_share=self._out_of_range(current),
            findings=findings,
        )

    def _out_of_range(self, current: Floats) -> float:
        if self.minimum is None or self.maximum is None:
            return math.nan
        below = np.searchsorted(current, self.minimum, side="left")
        above = current.size - np.searchsorted(current, self.maximum, side="right")
        return float(below + above) / current.size


@dataclass(kw_only=True)
class CategoricalReference:
    """A categorical reference column; see the module docstring."""

    name: str
    rows: int
    missing: int
    levels: dict[str, int]
    """Kept value -> its position in ``counts``."""
    counts: Floats
    """Counts of ``[kept values..., other cells..., unseen, missing]``."""
    tail: frozenset[str] | None
    """Values hashed into the other cells; None when unknown (a profile's ``"__other__"``)."""
    expected: Floats | None = None
    """What a window of the same population is expected to hold (``expected_window``)."""
    findings: list[str] = field(default_factory=list)
    _cache: dict[_CacheKey, float] = field(default_factory=dict, repr=False)

    @property
    def other_cells(self) -> int:
        """How many "other" cells follow the kept values."""
        return self.counts.size - len(self.levels) - 2

    def other_cell(self, key: str) -> int:
        """The position of a tail value's (or a profile's "other") cell in ``counts``."""
        cells = self.other_cells
        bucket = zlib.crc32(key.encode("utf-8", "surrogatepass")) % cells if cells > 1 else 0
        return len(self.levels) + bucket

    @classmethod
    def from_counts(
        cls, name: str, counts: dict[str, int], missing: int, rows: int, *, top_k: int = TOP_K
    ) -> CategoricalReference:
        """Prepare from value counts (a literal ``"__other__"`` value is a tail value)."""
        adjusted = good_turing(counts)
        ranked = sorted(
            ((key, count) for key, count in counts.items() if key != OTHER),
            key=lambda item: (-item[1], item[0]),
        )
        tail = dict(ranked[top_k:])
        if OTHER in counts:
            tail[OTHER] = counts[OTHER]
        built = cls._build(name, dict(ranked[:top_k]), tail, missing, rows)
        built.expected = _expected(built, adjusted)
        return built

    @classmethod
    def from_profile(cls, name: str, profile: CategoricalProfile) -> CategoricalReference:
        """Prepare from a profile's top values and ``"__other__"`` count."""
        counts = dict(profile.counts)
        other = counts.pop(OTHER, 0)
        built = cls._build(name, counts, None, profile.missing, profile.count, other=other)
        if not other:  # every value is listed: the sample's frequencies are known
            built.tail = frozenset()
            built.expected = _expected(built, good_turing(counts))
        return built

    @classmethod
    def _build(
        cls,
        name: str,
        top: dict[str, int],
        tail: dict[str, int] | None,
        missing: int,
        rows: int,
        *,
        other: int = 0,
    ) -> CategoricalReference:
        cells = TAIL_BUCKETS if tail else 1
        vector = np.zeros(len(top) + cells + 2, dtype=np.float64)
        vector[: len(top)] = list(top.values())
        vector[-1] = missing
        findings = []
        if rows == missing:
            findings.append(f"column {name!r} has no values in the reference")
        elif len(top) + (1 if other or tail else 0) == 1:
            findings.append(f"column {name!r} is constant in the reference")
        built = cls(
            name=name,
            rows=rows,
            missing=missing,
            levels={key: i for i, key in enumerate(top)},
            counts=vector,
            tail=None if tail is None else frozenset(tail),
            findings=findings,
        )
        vector[len(top)] = other
        for key, count in (tail or {}).items():
            vector[built.other_cell(key)] += count
        return built

    def null_threshold(self, n_current: int, settings: DriftSettings) -> float:
        """The calibrated null quantile of the JS distance at a window of ``n_current`` rows."""
        key = (n_current, self.rows, settings.resamples, settings.null_quantile, settings.seed)
        if key not in self._cache:
            self._cache[key] = categorical_null_quantile(
                self.counts,
                n_reference=self.rows,
                n_current=n_current,
                resamples=settings.resamples,
                quantile=settings.null_quantile,
                seed=settings.seed,
                window_counts=self.expected_window(),
            )
        return self._cache[key]

    def expected_window(self) -> Floats:
        """The counts a window of the reference's population is expected to show.

        A sample overstates the values it happened to hold, the rare ones most: by
        Good-Turing, the values seen ``r`` times are expected ``(r + 1) N(r+1) / N(r)``
        times, and the values seen once tell the share never seen (``good_turing``).
        """
        return self.counts.copy() if self.expected is None else self.expected.copy()

    def window_counts(self, counts: dict[str, int], missing: int) -> Floats:
        """A window's counts over ``[kept values..., other cells..., unseen, missing]``."""
        vector = np.zeros(self.counts.size)
        unseen = vector.size - 2
        for key, count in counts.items():
            position = self.levels.get(key)
            if position is None:
                known = self.tail is None or key in self.tail
                position = self.other_cell(key) if known else unseen
            vector[position] += count
        vector[-1] = missing
        return vector

    def compare(self, series: pd.Series, settings: DriftSettings) -> ColumnDrift:
        """Compare a window's column with this reference column."""
        read = read_counts(self.name, series)
        findings = list(self.findings) + ([read.finding] if read.finding else [])
        current = self.window_counts(read.counts, read.missing)
        unseen = current[-2]
        present = read.rows - read.missing
        ref_rate, cur_rate, missing_p = _missing_test(
            self.missing, self.rows, read.missing, read.rows
        )
        reference = self.expected_window()
        if unseen > 0:  # the pseudo-count of the module docstring
            reference[-2] = max(self.rows / read.rows, reference[-2])
        common = {
            "name": self.name,
            "kind": "categorical",
            "test": "chi2",
            "effect_name": "jensenshannon",
            "missing_reference": ref_rate,
            "missing_current": cur_rate,
            "missing_p": missing_p,
            "unseen_share": float(unseen / present) if present else 0.0,
            "n_reference": self.rows,
            "n_current": read.rows,
        }
        if read.rows == 0 or self.rows == 0:
            findings.append(f"column {self.name!r} has no rows to compare")
            return ColumnDrift(
                **common,  # type: ignore[arg-type]
                statistic=math.nan,
                p_value=math.nan,
                effect=math.nan,
                findings=findings,
            )
        if present == 0:
            findings.append(f"column {self.name!r} has no values in the window")
        chi2 = chi2_2xk(pool_sparse(np.vstack([reference, current])))
        effect = jensenshannon(self.counts, current)
        threshold = max(self.null_threshold(read.rows, settings), settings.min_jensenshannon)
        return ColumnDrift(
            **common,  # type: ignore[arg-type]
            statistic=chi2.statistic,
            p_value=chi2.pvalue,
            effect=effect,
            threshold=threshold,
            psi=psi(self.counts, current, settings.psi_epsilon),
            jensenshannon=effect,
            findings=findings,
        )


def good_turing(counts: dict[str, int], below: int = 5) -> tuple[dict[str, float], float]:
    """Good-Turing adjusted counts of the values seen fewer than ``below`` times, and the
    unseen share ``N(1) / N``; the adjusted seen counts sum to ``N - N(1)``.

    >>> adjusted, unseen = good_turing({"a": 10, "b": 1, "c": 1, "d": 2})
    >>> unseen, round(sum(adjusted.values()), 6)
    (0.14285714285714285, 12.0)
    """
    total = float(sum(counts.values()))
    if total <= 0:
        return {k: float(v) for k, v in counts.items()}, 0.0
    frequencies = Counter(counts.values())
    raw = {}
    for key, r in counts.items():
        following = frequencies.get(r + 1, 0)
        raw[key] = (r + 1) * following / frequencies[r] if r < below and following else float(r)
    unseen = frequencies.get(1, 0) / total
    scale = (total * (1.0 - unseen)) / sum(raw.values()) if sum(raw.values()) else 0.0
    return {key: value * scale for key, value in raw.items()}, unseen


def _expected(built: CategoricalReference, adjusted: tuple[dict[str, float], float]) -> Floats:
    """``built.counts`` with the Good-Turing adjusted counts and unseen share."""
    values, unseen = adjusted
    expected = built.counts.copy()
    k = len(built.levels)
    expected[:k] = [values[key] for key in built.levels]  # levels keep the top values' order
    expected[k:-2] = 0.0
    for key, value in values.items():
        if key not in built.levels:
            expected[built.other_cell(key)] += value
    expected[-2] = unseen * (built.rows - built.missing)
    return expected


def sorted_mad(values: Floats, median: float) -> float:
    """``np.median(np.abs(values - median))`` for sorted ``values``, without a pass over them.

    The deviations are two sorted runs (below the median, read backwards, and from it
    on), so their middle elements are found by a binary search for the k-th smallest.

    >>> x = np.sort(np.random.default_rng(0).normal(size=1001))
    >>> bool(sorted_mad(x, float(np.median(x))) == np.median(np.abs(x - np.median(x))))
    True
    """
    n = values.size
    if n == 0:
        return math.nan
    split = int(np.searchsorted(values, median, side="left"))

    def below(i: int) -> float:  # i-th smallest deviation among values[:split]
        return float(median - values[split - 1 - i])

    def above(i: int) -> float:  # i-th smallest deviation among values[split:]
        return float(values[split + i] - median)

    def kth(k: int) -> float:
        """The k-th smallest (0-based) of the two runs' union."""
        left_n, right_n = split, n - split
        lo, hi = max(0, k - right_n + 1), min(k + 1, left_n)  # taken from the left run
        while lo < hi:
            take = (lo + hi) // 2  # candidates: `take` from the left, k + 1 - take right
            right_take = k + 1 - take
            if right_take > 0 and take < left_n and below(take) < above(right_take - 1):
                lo = take + 1
            else:
                hi = take
        take = lo
        right_take = k + 1 - take
        candidates = []
        if take > 0:
            candidates.append(below(take - 1))
        if right_take > 0:
            candidates.append(above(right_take - 1))
        return max(candidates)

    if n % 2:
        return kth(n // 2)
    return float(np.mean([kth(n // 2 - 1), kth(n // 2)]))
