"""The Andrews-Roth-Pakes engine: the batched LP equals one-at-a-time LPs, the dual's
truncation points equal the closed-form (primal) ones where both apply, and the truncated
normal quantile is right in both tails."""

import numpy as np
import pytest
from scipy import optimize, stats

from estimators.arp import (MomentProblem, _dual_truncation, _primal_truncation, eta_batch,
                            truncnorm_quantile)


def _problem(seed: int, m: int = 8, k: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, k))
    L = rng.normal(size=(m, m))
    sigma = L @ L.T / m + np.eye(m) * 0.1
    sd = np.sqrt(np.diag(sigma))
    return X, sigma, sd, rng


def test_batched_statistic_equals_single_lps_and_dual_is_a_vertex():
    X, sigma, sd, rng = _problem(0)
    Y = rng.normal(size=(40, X.shape[0]))
    eta, gamma = eta_batch(Y, X, sd)
    for i in range(Y.shape[0]):
        r = optimize.linprog(np.r_[1.0, np.zeros(X.shape[1])], A_ub=-np.hstack([sd[:, None], X]),
                             b_ub=-Y[i], bounds=(None, None), method="highs")
        assert eta[i] == pytest.approx(r.fun, abs=1e-9)
    assert np.all(gamma >= 0)
    np.testing.assert_allclose(gamma @ sd, 1.0, atol=1e-9)
    np.testing.assert_allclose(gamma @ X, 0.0, atol=1e-9)
    np.testing.assert_allclose((gamma * Y).sum(axis=1), eta, atol=1e-9)
    # no nuisance: the largest studentized moment
    e0, g0 = eta_batch(Y, np.zeros((X.shape[0], 0)), sd)
    np.testing.assert_allclose(e0, (Y / sd).max(axis=1))


def test_dual_truncation_equals_primal_closed_form():
    # in non-degenerate problems (k + 1 binding moments of full rank) the polyhedral
    # lemma's closed form and ARP's dual algorithm must give the same [v_lo, v_up]
    X, sigma, sd, rng = _problem(1)
    Y = rng.normal(size=(30, X.shape[0]))
    eta, gamma = eta_batch(Y, X, sd)
    checked = 0
    for i in range(Y.shape[0]):
        binding = gamma[i] > 1e-6
        if binding.sum() != X.shape[1] + 1:
            continue
        vlo, vup, _ = _primal_truncation(Y[i], X, sigma, sd, binding)
        dlo, dup = _dual_truncation(Y[i:i + 1], X, sigma, sd, eta[i:i + 1], gamma[i:i + 1])
        assert dlo[0] == pytest.approx(vlo, rel=1e-6, abs=1e-8)
        assert dup[0] == pytest.approx(vup, rel=1e-6, abs=1e-8)
        assert vlo <= eta[i] <= vup
        checked += 1
    assert checked >= 20


def test_truncated_normal_quantile():
    for lo, hi in [(-1.0, 2.0), (3.0, 9.0), (8.0, np.inf), (-np.inf, -7.0), (0.0, np.inf)]:
        for p in (0.05, 0.5, 0.95):
            ref = stats.truncnorm.ppf(p, lo, hi)
            assert truncnorm_quantile(p, lo, hi) == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_conditional_test_has_exact_size_in_a_simple_case():
    # two moments y and -y (an equality) with no nuisance: the conditional test is the
    # two-sided z test, so it rejects with probability alpha under the null
    sigma = np.array([[1.0, -1.0], [-1.0, 1.0]])
    prob = MomentProblem(np.zeros(2), np.array([1.0, -1.0]), np.zeros((2, 0)), sigma)
    thetas = np.random.default_rng(3).normal(size=20_000)     # y0 = 0, so y = -theta
    rej = 1 - prob.accept(thetas, 0.05).mean()
    assert rej == pytest.approx(0.05, abs=3 * np.sqrt(0.05 * 0.95 / 20_000))
    z = stats.norm.ppf(0.975)
    acc = prob.accept(np.array([z - 1e-6, z + 1e-6]), 0.05)
    assert acc.tolist() == [True, False]


def test_vertex_path_equals_lp_path():
    # enumerated dual vertices (closed-form statistic and truncation) against the LP route
    # (HiGHS statistic, primal closed form or the dual Newton/bisection algorithm)
    X, sigma, sd, rng = _problem(2, m=8, k=3)
    y0, a = rng.normal(size=8), rng.normal(size=8)
    fast = MomentProblem(y0, a, X, sigma)
    slow = MomentProblem(y0, a, X, sigma, exact_vertices=False)
    assert fast.vertices is not None and slow.vertices is None
    Y = fast.y(np.linspace(-4, 4, 120))
    e1, g1 = fast.statistic(Y)
    e2, g2 = slow.statistic(Y)
    np.testing.assert_allclose(e1, e2, atol=1e-9)
    pos = e1 > 0
    lo1, up1, _ = fast._truncation(Y[pos], e1[pos], g1[pos])
    lo2, up2, _ = slow._truncation(Y[pos], e2[pos], g2[pos])
    np.testing.assert_allclose(lo1, lo2, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(up1, up2, rtol=1e-6, atol=1e-8)
    thetas = np.linspace(-4, 4, 120)
    for cv in (None, 2.5):
        np.testing.assert_array_equal(fast.accept(thetas, 0.05, cv, 0.005),
                                      slow.accept(thetas, 0.05, cv, 0.005))


def test_vertex_path_equals_lp_path_on_relative_magnitudes():
    # degenerate problems (nuisance moments slack at the optimum) go through the dual
    # algorithm on the LP route; the honest sets must not depend on the route
    from estimators.sensitivity import rm_constraints
    from estimators.arp import problem_from_constraints

    rng = np.random.default_rng(5)
    n_pre, n_post = 3, 3
    L = rng.normal(size=(6, 6))
    sigma = L @ L.T / 6 + np.eye(6)
    beta = rng.normal(size=6)
    l = np.eye(n_post)[0]
    A = rm_constraints(n_pre, n_post, 1.0, 1, True)
    rows = np.flatnonzero(np.abs(A[:, n_pre:]).sum(axis=1) > 0)
    fast = problem_from_constraints(A, np.zeros(A.shape[0]), beta, sigma, n_pre, l, rows)
    slow = MomentProblem(fast.y0, fast.a, fast.X, fast.sigma, exact_vertices=False)
    thetas = np.linspace(beta[n_pre] - 8, beta[n_pre] + 8, 81)
    for cv in (None, 3.0):
        np.testing.assert_array_equal(fast.accept(thetas, 0.05, cv, 0.005),
                                      slow.accept(thetas, 0.05, cv, 0.005))
