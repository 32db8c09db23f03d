"""Non-negative least squares and the per-kind fit of profile coefficients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from halp.latency.fit import Observation, fit_coefficients, fit_observations, mape, nnls, predict

FEATURES = ("intercept_s", "s_per_flop", "s_per_in_byte")


def brute_force(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The best feasible unconstrained solution over every subset of free columns."""
    best, best_x = np.inf, np.zeros(a.shape[1])
    for k in range(a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x = np.zeros(a.shape[1])
            if cols:
                x[list(cols)] = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            if (x >= 0).all() and np.linalg.norm(a @ x - b) < best:
                best, best_x = float(np.linalg.norm(a @ x - b)), x
    return best_x


def test_nnls_recovers_known_nonnegative_coefficients():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.0, 1.0, size=(40, 4))
    truth = np.array([0.5, 2.0, 0.0, 1.25])

    x = nnls(a, a @ truth)

    assert x == pytest.approx(truth, abs=1e-9)


def test_negative_true_coefficient_clamps_to_zero():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.0, 1.0, size=(30, 3))
    b = a @ np.array([1.0, -2.0, 3.0])

    x = nnls(a, b)

    assert x[1] == 0.0
    assert (x >= 0).all()
    assert x == pytest.approx(brute_force(a, b), abs=1e-9)


@pytest.mark.parametrize("seed", range(25))
def test_nnls_matches_brute_force_on_tiny_problems(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 3))
    b = rng.normal(size=6)

    assert nnls(a, b) == pytest.approx(brute_force(a, b), abs=1e-8)


# Entries of a well-scaled problem, as the fit hands it over (columns normalised): no
# subnormal or vanishing entries, whose least-squares solutions overflow.
ENTRIES = st.floats(-10, 10, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-3 else v)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=ENTRIES),
       st.integers(0, 2**32 - 1))
def test_nnls_satisfies_the_optimality_conditions(a, seed):
    b = np.random.default_rng(seed).normal(size=a.shape[0]) * 10
    x = nnls(a, b)

    gradient = a.T @ (a @ x - b)
    tol = 1e-7 * (1 + np.abs(a).max()) ** 2 * (1 + np.abs(b).max())
    assert (x >= 0).all()
    assert (gradient[x > 0] == pytest.approx(0.0, abs=tol))
    assert (gradient[x == 0] >= -tol).all()


def test_fit_coefficients_recovers_per_kind_coefficients_from_exact_times():
    rng = np.random.default_rng(2)
    truth = {"conv": [2e-5, 4e-12, 1e-10], "pool": [5e-6, 0.0, 3e-10]}
    samples = []
    for kind, coef in truth.items():
        for _ in range(30):
            features = [1.0, rng.uniform(1e6, 1e9), rng.uniform(1e4, 1e7)]
            samples.append((kind, features, float(np.dot(coef, features))))

    fitted = fit_coefficients(samples, FEATURES)

    for kind, coef in truth.items():
        assert [fitted[kind][n] for n in FEATURES] == pytest.approx(coef, rel=1e-6, abs=1e-18)


def test_fit_separates_the_op_overhead_from_per_layer_intercepts():
    rng = np.random.default_rng(3)
    coef = {"conv": [1e-5, 5e-12, 0.0], "elementwise": [2e-6, 0.0, 2e-10]}
    overhead = 7e-6
    observations = []
    for _ in range(80):
        terms = []
        for _ in range(rng.integers(1, 5)):
            kind = "conv" if rng.random() < 0.5 else "elementwise"
            terms.append((kind, (1.0, rng.uniform(1e6, 1e9), rng.uniform(1e4, 1e7))))
        seconds = overhead + sum(float(np.dot(coef[k], f)) for k, f in terms)
        observations.append(Observation(tuple(terms), seconds))

    fit = fit_observations(observations, FEATURES)

    assert fit.op_overhead_s == pytest.approx(overhead, rel=1e-6)
    for kind, values in coef.items():
        assert [fit.coefficients[kind][n] for n in FEATURES] == pytest.approx(values, rel=1e-6, abs=1e-18)
    assert all(predict(fit, o.terms, FEATURES) == pytest.approx(o.seconds, rel=1e-6) for o in observations)


def test_relative_weighting_keeps_small_ops_accurate():
    """A fit on absolute error would sacrifice the 10 us ops to the 10 ms ones."""
    small = [("conv", [1.0, 1e5, 0.0], 1e-5 + 1e5 * 1e-11) for _ in range(10)]
    large = [("conv", [1.0, 1e9, 0.0], 1.3 * (1e-5 + 1e9 * 1e-11)) for _ in range(10)]  # 30% off-model

    fitted = fit_coefficients(small + large, FEATURES)["conv"]

    small_pred = fitted["intercept_s"] + fitted["s_per_flop"] * 1e5
    assert small_pred == pytest.approx(small[0][2], rel=0.2)


def test_mape_is_in_percent():
    assert mape([110.0, 90.0], [100.0, 100.0]) == pytest.approx(10.0)
