"""The sequential canary test: mSPRT against a numerical oracle, error rate under peeking, power."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from modelyard.errors import InvalidInputError
from modelyard.gates import SequentialTest, combine_decisions
from modelyard.gates.sequential import confidence_radius, msprt_log_lr


def seq_oracle_lr(diff: float, var: float, tau2: float, theta0: float) -> float:
    """Lambda by integrating the likelihood ratio over the normal mixing distribution."""
    return math.exp(seq_oracle_log_lr(diff, var, tau2, theta0))


def seq_oracle_log_lr(diff: float, var: float, tau2: float, theta0: float) -> float:
    """log Lambda by scipy.integrate.quad of ratio(theta) * N(theta; theta0, tau2).

    The integrand is scaled by its value at its peak (the posterior mean) and integrated over
    40 posterior standard deviations around it, so extreme cases neither overflow nor miss
    the mass; the scale is added back in logs.
    """
    sd, tau = math.sqrt(var), math.sqrt(tau2)

    def log_integrand(theta: float) -> float:
        return float(
            stats.norm.logpdf(diff, theta, sd)
            - stats.norm.logpdf(diff, theta0, sd)
            + stats.norm.logpdf(theta, theta0, tau)
        )

    peak = (diff * tau2 + theta0 * var) / (var + tau2)
    width = math.sqrt(var * tau2 / (var + tau2))
    top = log_integrand(peak)
    value, _ = integrate.quad(
        lambda t: math.exp(log_integrand(t) - top),
        peak - 40 * width,
        peak + 40 * width,
        points=[peak],
        limit=200,
        epsabs=0,
        epsrel=1e-11,
    )
    return top + math.log(value)


def seq_simulate(
    p_candidate: float,
    p_primary: float,
    *,
    runs: int,
    looks: int,
    batch: int,
    seed: int,
    **kw: float,
) -> tuple[float, float]:
    """(rate of any mSPRT promote/rollback, rate of any naive z-test rejection) over the runs."""
    rng = np.random.default_rng(seed)
    z = stats.norm.ppf(1 - kw.get("alpha", 0.05) / 2)
    msprt = naive = 0
    for _ in range(runs):
        test = SequentialTest(
            tau2=kw.get("tau2", 0.03**2), alpha=kw.get("alpha", 0.05), higher_is_better=False
        )
        rejected = False
        for _ in range(looks):
            test.update(rng.binomial(1, p_candidate, batch), rng.binomial(1, p_primary, batch))
            var = test.variance
            if var is not None and abs(test.diff) / math.sqrt(var) > z:
                rejected = True
        msprt += test.decide(horizon=10**9) in ("promote", "rollback")
        naive += rejected
    return msprt / runs, naive / runs


def seq_bound(alpha: float, runs: int) -> float:
    """alpha plus a binomial tolerance: the 99.9% quantile of Binomial(runs, alpha) / runs."""
    return float(stats.binom.ppf(0.999, runs, alpha)) / runs


@pytest.mark.parametrize(
    ("diff", "var", "tau2", "theta0"),
    [
        (0.0, 1e-3, 1e-3, 0.0),
        (0.03, 2e-4, 0.02**2, 0.0),
        (-0.05, 4e-4, 1e-3, -0.01),
        (1.5, 0.3, 2.0, 0.5),
    ],
)
def test_log_lr_equals_the_integral_over_the_mixing_normal(diff, var, tau2, theta0):
    assert math.exp(float(msprt_log_lr(diff, var, tau2, theta0))) == pytest.approx(
        seq_oracle_lr(diff, var, tau2, theta0), rel=1e-7
    )


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.1, 0.9),
    st.floats(0.1, 0.9),
    st.floats(0.01, 0.2),
    st.floats(0.0, 0.05),
)
@example(seed=1, pc=0.875, pp=0.125, tau=0.03125, margin=0.0)  # the mass far from theta0
def test_p_value_after_one_look_is_the_oracle(seed, pc, pp, tau, margin):
    rng = np.random.default_rng(seed)
    c, p = rng.binomial(1, pc, 150).astype(float), rng.binomial(1, pp, 170).astype(float)
    test = SequentialTest(tau2=tau**2, margin=margin, min_samples=2)
    test.update(c, p)
    diff = c.mean() - p.mean()
    var = c.var(ddof=1) / c.size + p.var(ddof=1) / p.size
    assert test.diff == pytest.approx(diff, abs=1e-12)
    expected = min(0.0, -seq_oracle_log_lr(diff, var, tau**2, -margin))
    assert math.log(test.p_value) == pytest.approx(expected, rel=1e-8, abs=1e-8)
    lower, upper = test.confidence_sequence
    # the edges of the confidence set are where Lambda reaches 1/alpha
    for edge in (lower, upper):
        assert seq_oracle_log_lr(diff, var, tau**2, edge) == pytest.approx(
            math.log(1 / 0.05), rel=1e-8
        )


def test_type_one_error_under_continuous_monitoring_and_the_naive_rule_inflates():
    runs = 500
    msprt, naive = seq_simulate(0.2, 0.2, runs=runs, looks=50, batch=100, seed=13)
    assert msprt <= seq_bound(0.05, runs), msprt
    assert naive > 3 * 0.05, naive  # peeking a fixed-alpha test 50 times: far above alpha


def test_type_one_error_on_skewed_latencies_and_log_losses():
    """The plug-in normal mSPRT on heavy-tailed per-row outcomes (gamma latency, log loss)."""
    rng = np.random.default_rng(15)
    runs, looks, batch = 300, 30, 100
    decided = 0
    for run in range(runs):
        latency = run % 2 == 0
        test = SequentialTest(tau2=2.0**2 if latency else 0.05**2, higher_is_better=False)
        for _ in range(looks):
            if latency:  # milliseconds, shape 2: mean 20, sd 14
                c, p = rng.gamma(2.0, 10.0, batch), rng.gamma(2.0, 10.0, batch)
            else:  # per-row log loss of a calibrated model at base rate 0.3
                c, p = (-np.log(np.where(rng.random(batch) < 0.3, 0.3, 0.7)) for _ in range(2))
            test.update(c, p)
        decided += test.decide(horizon=10**9) != "continue"
    assert decided / runs <= seq_bound(0.05, runs), decided / runs


def test_power_for_a_true_difference():
    msprt, naive = seq_simulate(0.20, 0.25, runs=200, looks=50, batch=100, seed=14)
    assert msprt > 0.8, msprt
    assert naive >= msprt


def test_lower_is_better_decides_by_gain_and_keeps_its_first_decision():
    rng = np.random.default_rng(1)
    test = SequentialTest(tau2=0.03**2, higher_is_better=False)  # error rates
    while test.decide(horizon=10**9) == "continue":
        test.update(rng.binomial(1, 0.10, 500), rng.binomial(1, 0.20, 500))
    assert test.decide(horizon=10**9) == "promote"
    assert test.confidence_sequence[1] < 0  # the candidate's error rate is lower: a gain
    at = test.decided_at
    for _ in range(30):  # evidence turning against it afterwards does not flip the decision
        test.update(rng.binomial(1, 0.5, 500), rng.binomial(1, 0.1, 500))
    assert test.decide(horizon=10**9) == "promote" and test.decided_at == at


def test_rollback_when_the_candidate_loses():
    rng = np.random.default_rng(2)
    test = SequentialTest(tau2=0.03**2)
    for _ in range(20):
        test.update(rng.binomial(1, 0.6, 500), rng.binomial(1, 0.7, 500))
    assert test.decide(horizon=10**9) == "rollback"


def test_non_inferiority_promotes_an_equal_model_that_a_superiority_test_would_not():
    rng = np.random.default_rng(3)
    strict, lenient = SequentialTest(tau2=0.02**2), SequentialTest(tau2=0.02**2, margin=0.02)
    for _ in range(40):
        c, p = rng.binomial(1, 0.8, 1000), rng.binomial(1, 0.8, 1000)
        strict.update(c, p)
        lenient.update(c, p)
    assert strict.decide(horizon=10**9) == "continue"
    assert lenient.decide(horizon=10**9) == "promote"
    assert lenient.p_value < 0.05 < strict.p_value


def test_timeout_rule_at_the_horizon():
    c = np.array([1.0, 0.0] * 100)
    for primary, expected in ((c, "timeout_promote"), (c[:-1], "timeout_rollback")):
        test = SequentialTest(tau2=0.01)
        test.update(c, primary)
        assert test.decide(horizon=10_000) == "continue"
        assert test.decide(horizon=199) == expected


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.booleans())
def test_state_round_trips_through_json_and_one_batch_equals_many(seed, pieces, latency):
    rng = np.random.default_rng(seed)
    size = 400
    make = (
        (lambda m: rng.gamma(2.0, m, size))
        if latency
        else (lambda m: rng.binomial(1, m / 100, size))
    )
    c, p = make(20.0).astype(float), make(22.0).astype(float)
    tau2 = 4.0 if latency else 0.03**2
    one = SequentialTest(tau2=tau2, higher_is_better=not latency, min_samples=10)
    one.update(c, p)
    many = SequentialTest(tau2=tau2, higher_is_better=not latency, min_samples=10)
    cuts_c = np.sort(rng.integers(0, size, pieces - 1))
    cuts_p = np.sort(rng.integers(0, size, pieces - 1))
    for bc, bp in zip(np.split(c, cuts_c), np.split(p, cuts_p), strict=True):
        many = SequentialTest.from_dict(json.loads(json.dumps(many.to_dict(), allow_nan=False)))
        many.update(bc, bp)
    assert (many.n_candidate, many.n_primary) == (one.n_candidate, one.n_primary) == (size, size)
    assert many.diff == pytest.approx(one.diff, rel=1e-9, abs=1e-12)
    assert many.variance == pytest.approx(one.variance, rel=1e-9)
    # more looks can only lower the running p-value and narrow the confidence sequence
    assert many.p_value <= one.p_value * (1 + 1e-9)
    assert many.confidence_sequence[0] >= one.confidence_sequence[0] - 1e-12
    assert many.confidence_sequence[1] <= one.confidence_sequence[1] + 1e-12
    again = SequentialTest.from_dict(json.loads(json.dumps(many.to_dict())))
    assert again.to_dict() == many.to_dict()
    assert again.decide(horizon=size) == many.decide(horizon=size)


def test_confidence_radius_edges_have_lambda_one_over_alpha():
    r = float(confidence_radius(2e-4, 1e-3, 0.01))
    assert float(msprt_log_lr(0.1 + r, 2e-4, 1e-3, 0.1)) == pytest.approx(math.log(100))


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"tau2": 0}, "tau2"),
        ({"tau2": float("nan")}, "tau2"),
        ({"tau2": 1, "alpha": 1.0}, "alpha"),
        ({"tau2": 1, "margin": -0.1}, "margin"),
        ({"tau2": 1, "min_samples": 1}, "min_samples"),
        ({"tau2": 1, "higher_is_better": "yes"}, "higher_is_better"),
    ],
)
def test_bad_settings_name_the_field(kwargs, loc):
    with pytest.raises(InvalidInputError, match=loc):
        SequentialTest(**kwargs)


def test_bad_outcomes_and_states_name_the_field():
    test = SequentialTest(tau2=1.0)
    with pytest.raises(InvalidInputError, match="candidate"):
        test.update([1.0, float("nan")], [1.0])
    with pytest.raises(InvalidInputError, match="primary"):
        test.update([1.0], ["x"])
    assert test.n_candidate == 0  # a refused batch leaves the state as it was
    state = test.to_dict()
    del state["primary"]
    with pytest.raises(InvalidInputError, match="primary"):
        SequentialTest.from_dict(state)
    with pytest.raises(InvalidInputError, match=r"state\.decision"):
        SequentialTest.from_dict({**test.to_dict(), "decision": "maybe"})
    with pytest.raises(InvalidInputError, match="horizon"):
        test.decide(horizon=0)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_corrupted_state_loads_or_is_invalid_input(data):
    """Every key of a saved state replaced by any JSON value: it loads or names the field."""
    test = SequentialTest(tau2=0.01, min_samples=2)
    test.update([1.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    state = test.to_dict()
    key = data.draw(st.sampled_from([*state, "candidate.n", "candidate.mean", "primary.m2"]))
    value = data.draw(_JSON)
    if "." in key:
        arm, field = key.split(".")
        state[arm] = {**state[arm], field: value}
    else:
        state[key] = value
    try:
        loaded = SequentialTest.from_dict(state)
    except InvalidInputError as exc:
        assert "state" in str(exc) or key in str(exc)
        return
    loaded.update([1.0, 0.0], [0.0, 1.0])  # a state that loads is usable
    assert loaded.decide(horizon=1) in (
        "continue",
        "promote",
        "rollback",
        "timeout_promote",
        "timeout_rollback",
    )


def test_combine_decisions():
    assert combine_decisions(["promote", "promote"]) == "promote"
    assert combine_decisions(["promote", "continue"]) == "continue"
    assert combine_decisions(["promote", "rollback", "continue"]) == "rollback"
    assert combine_decisions(["timeout_promote", "promote"]) == "timeout_promote"
    assert combine_decisions(["timeout_rollback", "promote"]) == "timeout_rollback"
    with pytest.raises(InvalidInputError, match="decisions"):
        combine_decisions(["promote", "ok"])
