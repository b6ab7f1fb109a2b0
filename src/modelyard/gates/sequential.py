"""Sequential canary test: a two-sample mixture SPRT that may be looked at after every batch.

A canary serves part of the traffic beside the primary model; as feedback labels mature, each
arm yields per-row outcomes (correctness or error 0/1, per-row log loss, latency in ms). The
question "is the canary better, or at least not worse by more than a margin?" is asked again at
every look, so a fixed-alpha test repeated at each look inflates its error rate (50 looks at
alpha 0.05 decide wrongly about a quarter of the time on two equal models). This module uses
the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis & Walsh, "Peeking at
A/B tests" (KDD 2017), whose p-value and confidence sequence stay valid under continuous
monitoring.

The statistic. With ``d`` the difference of means (candidate minus primary) and ``V`` its
variance (plug-in ``s_c^2/n_c + s_p^2/n_p``), the likelihood ratio of ``d ~ N(theta, V)``
against ``theta = theta0``, with ``theta`` mixed over ``N(theta0, tau2)``, is::

    Lambda(theta0) = sqrt(V / (V + tau2)) * exp(tau2 * (d - theta0)^2 / (2 V (V + tau2)))

The always-valid p-value is the running minimum of ``1 / Lambda``; the confidence sequence is
the running intersection of ``{theta : Lambda(theta) < 1/alpha}``, i.e. ``d +- r`` with
``r^2 = V (V + tau2) / tau2 * (2 log(1/alpha) + log((V + tau2) / V))``. With probability at
least ``1 - alpha`` the sequence covers the true difference at every look at once.

Decisions (:meth:`SequentialTest.decide`), in the "goodness" orientation (the sign flips when
lower is better, as for error rate, log loss or latency); ``margin >= 0`` is the allowed loss:

- ``promote`` when the sequence's lower bound of the gain is above ``-margin`` (the candidate
  wins, or with a margin is proven non-inferior: H0 ``gain <= -margin`` rejected);
- ``rollback`` when its upper bound of the gain is below 0 (the candidate loses);
- the first decision reached is kept (sticky); every decision is a statement of the
  confidence sequence, so the chance of any false decision is at most ``alpha``;
- ``continue`` until ``horizon`` rows per arm; then, with no decision, ``timeout_promote``
  when the estimated gain is ``>= 0`` (the candidate did no worse on the evidence seen), else
  ``timeout_rollback`` (the primary is kept when the evidence leans against the candidate).
  A timeout carries no error guarantee; it is a stop rule, reported as such.

The variance is estimated from the rows (plug-in); a look counts only once each arm has
``min_samples`` rows and a positive variance, which keeps the plug-in honest in small samples.
``tau2`` is on the squared scale of the outcome (e.g. ``0.02**2`` for an error rate, ``5.0**2``
for latency in ms): the test is most powerful for differences of about ``sqrt(tau2)``.

AUC is judged through a per-row proxy, not directly: AUC is a statistic of pairs of rows
(every positive against every negative), not a mean of independent per-row terms, so its
increments across looks are not the sums the mSPRT's normal likelihood describes; and the
canary and the primary answer different requests, so a paired DeLong test on the same rows
does not exist online. Per-row log loss (a proper scoring rule, so it rewards the same ranking
and calibration AUC does) and correctness are means of independent rows and are tested here;
the offline champion gate (:mod:`modelyard.gates.champion`) keeps the paired DeLong test on AUC.

Several metrics at once (primary metric, error rate, latency): one test per metric, each at
``alpha / k`` for a family-wise rate ``alpha``; :func:`combine_decisions` joins them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = SequentialTest(tau2=0.05**2, higher_is_better=True)
>>> for _ in range(20):
...     test.update(rng.binomial(1, 0.80, 500), rng.binomial(1, 0.70, 500))
>>> test.decide(horizon=100_000)
'promote'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modelyard.errors import InvalidInputError

__all__ = [
    "DECISIONS",
    "SequentialTest",
    "combine_decisions",
    "confidence_radius",
    "msprt_log_lr",
]

#: every value :meth:`SequentialTest.decide` returns
DECISIONS = ("continue", "promote", "rollback", "timeout_promote", "timeout_rollback")

_STATE_VERSION = 1


def msprt_log_lr(
    diff: ArrayLike, var: ArrayLike, tau2: float, theta0: float = 0.0
) -> NDArray[np.float64]:
    """Log of the normal-mixture likelihood ratio ``Lambda(theta0)`` (arrays broadcast).

    ``diff`` is the observed difference of means, ``var`` its variance (> 0), ``tau2`` the
    variance of the normal mixing distribution centred on ``theta0``.
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    total = v + tau2
    return np.asarray(0.5 * np.log(v / total) + tau2 * (d - theta0) ** 2 / (2.0 * v * total))


def confidence_radius(var: ArrayLike, tau2: float, alpha: float) -> NDArray[np.float64]:
    """Half-width of the level ``1 - alpha`` mSPRT confidence set around the difference."""
    v = np.asarray(var, dtype=np.float64)
    total = v + tau2
    return np.asarray(np.sqrt(v * total / tau2 * (2.0 * math.log(1.0 / alpha) + np.log(total / v))))


@dataclass
class _Arm:
    """Running count, mean and sum of squared deviations (Chan et al. merge)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: NDArray[np.float64]) -> None:
        k = int(values.size)
        if k == 0:
            return
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        n = self.n + k
        delta = batch_mean - self.mean
        self.mean += delta * k / n
        self.m2 += batch_m2 + delta * delta * self.n * k / n
        self.n = n

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    ok = math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
    if not ok or isinstance(value, bool):
        kind = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InvalidInputError(f"expected {kind}, got {value!r}", loc=name)
    return number


def _outcomes(name: str, values: ArrayLike) -> NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"expected numbers (one outcome per row), got {exc}", loc=name
        ) from None
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InvalidInputError(f"expected finite outcomes, got {bad} NaN/inf value(s)", loc=name)
    return array


def _count(loc: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"expected an integer >= 0, got {value!r}", loc=loc)
    return value


class SequentialTest:
    """A two-sample mSPRT on the difference of per-row outcome means (candidate - primary).

    Feed each look's newly matured outcomes with :meth:`update` (or every matured row so far
    with :meth:`observe`, when labels mature in any order); read :attr:`p_value`,
    :attr:`confidence_sequence` and :meth:`decide`. :meth:`to_dict` / :meth:`from_dict`
    persist the state (JSON-able) between looks.
    """

    def __init__(
        self,
        *,
        tau2: float,
        alpha: float = 0.05,
        margin: float = 0.0,
        higher_is_better: bool = True,
        min_samples: int = 100,
        metric: str = "outcome",
    ) -> None:
        self.tau2 = _positive("tau2", tau2)
        self.alpha = _positive("alpha", alpha)
        if not self.alpha < 1:
            raise InvalidInputError(f"expected a level in (0, 1), got {alpha!r}", loc="alpha")
        self.margin = _positive("margin", margin, allow_zero=True)
        if not isinstance(higher_is_better, bool):
            raise InvalidInputError(
                f"expected true or false, got {higher_is_better!r}", loc="higher_is_better"
            )
        self.higher_is_better = higher_is_better
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
            raise InvalidInputError(
                f"expected an integer >= 2, got {min_samples!r}", loc="min_samples"
            )
        self.min_samples = min_samples
        self.metric = str(metric)
        self._candidate = _Arm()
        self._primary = _Arm()
        self.looks = 0
        self._p_value = 1.0
        self._lower = -math.inf
        self._upper = math.inf
        self._decision: str | None = None
        self._decided_at: int | None = None

    # -- observations -------------------------------------------------------------------

    def update(self, candidate: ArrayLike, primary: ArrayLike) -> None:
        """Add one look's matured outcomes of each arm (either may be empty) and re-test."""
        c = _outcomes("candidate", candidate)
        p = _outcomes("primary", primary)
        self._candidate.add(c)
        self._primary.add(p)
        self._retest()

    def observe(self, candidate: ArrayLike, primary: ArrayLike) -> None:
        """Replace each arm's totals with those of ``candidate`` and ``primary`` (every row
        seen so far, not only the new ones) and re-test.

        For outcomes whose labels mature in any order: a row served early may be labelled
        after one served later, so a look cannot hand over "the rows since the last look";
        it reads every labelled row so far, a superset of what the previous look saw. The
        totals are recomputed from those rows; the running p-value minimum and the running
        intersection of the confidence sequence (and a promote/rollback reached) are kept.
        The guarantee holds when the order in which labels arrive does not depend on the
        outcomes; each look is then a look at the same sequence of rows, taken in the
        order of their labels. Observing the rows of :meth:`update` cumulatively gives the
        state :meth:`update` gives.
        """
        c = _outcomes("candidate", candidate)
        p = _outcomes("primary", primary)
        self._candidate = _Arm()
        self._primary = _Arm()
        self._candidate.add(c)
        self._primary.add(p)
        self._retest()

    def _retest(self) -> None:
        """Count one look and fold the arms' totals into the running p-value and bounds."""
        self.looks += 1
        var = self.variance
        if var is None:
            return
        diff = self.diff
        theta0 = self._sign * -self.margin
        lr = float(msprt_log_lr(diff, var, self.tau2, theta0))
        self._p_value = min(self._p_value, math.exp(-lr) if lr > 0 else 1.0)
        radius = float(confidence_radius(var, self.tau2, self.alpha))
        self._lower = max(self._lower, diff - radius)
        self._upper = min(self._upper, diff + radius)
        if self._decision is None:
            decision = self._bounds_decision()
            if decision is not None:
                self._decision = decision
                self._decided_at = self.looks

    # -- statistics -----------------------------------------------------------------------

    @property
    def _sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    @property
    def n_candidate(self) -> int:
        return self._candidate.n

    @property
    def n_primary(self) -> int:
        return self._primary.n

    @property
    def diff(self) -> float:
        """Mean outcome of the candidate minus that of the primary (NaN before any row)."""
        if self._candidate.n == 0 or self._primary.n == 0:
            return math.nan
        return self._candidate.mean - self._primary.mean

    @property
    def variance(self) -> float | None:
        """Plug-in variance of :attr:`diff`, or None while a look would not count yet."""
        c, p = self._candidate, self._primary
        if min(c.n, p.n) < self.min_samples:
            return None
        var = c.var / c.n + p.var / p.n
        return var if var > 0 and math.isfinite(var) else None

    @property
    def p_value(self) -> float:
        """Always-valid p-value of H0 ``gain <= -margin`` tested as ``diff = -margin``."""
        return self._p_value

    @property
    def confidence_sequence(self) -> tuple[float, float]:
        """Running intersection of the level ``1 - alpha`` confidence sets of :attr:`diff`."""
        return (self._lower, self._upper)

    def _gain_bounds(self) -> tuple[float, float]:
        if self.higher_is_better:
            return self._lower, self._upper
        return -self._upper, -self._lower

    def _bounds_decision(self) -> str | None:
        low, high = self._gain_bounds()
        if low > -self.margin:
            return "promote"
        if high < 0:
            return "rollback"
        return None

    def decide(self, horizon: int) -> str:
        """``continue``, ``promote``, ``rollback``, or at ``horizon`` rows per arm a timeout.

        See the module docstring for the rule; the first promote/rollback reached is kept.
        """
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise InvalidInputError(f"expected an integer >= 1, got {horizon!r}", loc="horizon")
        if self._decision is not None:
            return self._decision
        if min(self._candidate.n, self._primary.n) < horizon:
            return "continue"
        gain = self._sign * self.diff
        return "timeout_promote" if gain >= 0 else "timeout_rollback"

    @property
    def decided_at(self) -> int | None:
        """The look (1-based) at which promote/rollback was reached, or None."""
        return self._decided_at

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-able values (infinite bounds as None)."""

        def bound(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "version": _STATE_VERSION,
            "metric": self.metric,
            "tau2": self.tau2,
            "alpha": self.alpha,
            "margin": self.margin,
            "higher_is_better": self.higher_is_better,
            "min_samples": self.min_samples,
            "looks": self.looks,
            "candidate": {
                "n": self._candidate.n,
                "mean": self._candidate.mean,
                "m2": self._candidate.m2,
            },
            "primary": {"n": self._primary.n, "mean": self._primary.mean, "m2": self._primary.m2},
            "p_value": self._p_value,
            "lower": bound(self._lower),
            "upper": bound(self._upper),
            "decision": self._decision,
            "decided_at": self._decided_at,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> SequentialTest:
        """Rebuild a test saved by :meth:`to_dict`; a malformed state is InvalidInputError."""
        if not isinstance(state, Mapping):
            raise InvalidInputError(f"expected a mapping, got {type(state).__name__}", loc="state")
        try:
            if state["version"] != _STATE_VERSION:
                raise InvalidInputError(
                    f"expected {_STATE_VERSION}, got {state['version']!r}", loc="state.version"
                )
            test = cls(
                tau2=state["tau2"],
                alpha=state["alpha"],
                margin=state["margin"],
                higher_is_better=state["higher_is_better"],
                min_samples=state["min_samples"],
                metric=state["metric"],
            )
            for name in ("candidate", "primary"):
                arm = state[name]
                loaded = _Arm(
                    _count(f"state.{name}.n", arm["n"]), float(arm["mean"]), float(arm["m2"])
                )
                if not (math.isfinite(loaded.mean) and math.isfinite(loaded.m2) and loaded.m2 >= 0):
                    raise InvalidInputError(
                        f"expected a finite mean and m2 >= 0, got {arm['mean']!r}, {arm['m2']!r}",
                        loc=f"state.{name}",
                    )
                setattr(test, f"_{name}", loaded)
            test.looks = _count("state.looks", state["looks"])
            test._p_value = float(state["p_value"])
            if not 0 <= test._p_value <= 1:
                raise InvalidInputError(
                    f"expected a number in [0, 1], got {state['p_value']!r}", loc="state.p_value"
                )
            test._lower = -math.inf if state["lower"] is None else float(state["lower"])
            test._upper = math.inf if state["upper"] is None else float(state["upper"])
            if math.isnan(test._lower) or math.isnan(test._upper):
                raise InvalidInputError(
                    "expected numbers or null, got NaN", loc="state.lower/upper"
                )
            decision = state["decision"]
            if decision not in (None, "promote", "rollback"):
                raise InvalidInputError(
                    f"expected null, 'promote' or 'rollback', got {decision!r}",
                    loc="state.decision",
                )
            test._decision = decision
            at = state["decided_at"]
            test._decided_at = None if at is None else _count("state.decided_at", at)
        except KeyError as exc:
            raise InvalidInputError(
                f"expected key {exc.args[0]!r}, it is missing", loc="state"
            ) from None
        except InvalidInputError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(
                f"expected a saved SequentialTest state, got {exc}", loc="state"
            ) from None
        return test


def combine_decisions(decisions: Iterable[str]) -> str:
    """Join the decisions of several metrics' tests into one canary decision.

    Any rollback (or timeout_rollback) rolls back; promote only when every test promotes
    (a timeout_promote counts as promote but makes the result a timeout_promote);
    otherwise continue. Run each test at ``alpha / k`` for a family-wise rate ``alpha``.
    """
    seen: Sequence[str] = list(decisions)
    for d in seen:
        if d not in DECISIONS:
            raise InvalidInputError(
                f"expected one of {', '.join(DECISIONS)}, got {d!r}", loc="decisions"
            )
    if not seen:
        raise InvalidInputError("expected at least one decision, got none", loc="decisions")
    if "rollback" in seen:
        return "rollback"
    if "timeout_rollback" in seen:
        return "timeout_rollback"
    if "continue" in seen:
        return "continue"
    return "timeout_promote" if "timeout_promote" in seen else "promote"
