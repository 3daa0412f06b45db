"""Roth's (2022) normal model of an event study: pre-test power and what passing it does.

Roth, J. (2022), "Pretest with Caution: Event-Study Estimates after Testing for Parallel
Trends", *American Economic Review: Insights* 4(3), 305-322. The event-study coefficients
are ``beta_hat ~ N(beta, Sigma)`` (his eq. 1) with ``beta = delta + (0, tau_post)``: a
violation of parallel trends ``delta`` plus the effect. The pre-test he studies passes
when no pre-period coefficient is individually significant ("NIS", Section I.B):
``|beta_hat_pre_j| <= z * sigma_j`` for every ``j``, a box. His results, for a target
``tau = l' tau_post`` estimated by ``l' beta_hat_post``:

- Proposition 1: ``E[beta_hat_post | pass] = beta_post + Sigma_12 Sigma_22^{-1}
  (E[beta_hat_pre | pass] - beta_pre)``;
- Proposition 2: with a common variance and a common positive covariance (Assumption 1)
  and a monotone upward trend, the bias after passing exceeds the unconditional bias.

Everything here is exact up to numerical integration (Genz's algorithm in
:func:`scipy.stats.multivariate_normal.cdf`): the box probability, the truncated mean by
Tallis's (1961) formula (what R ``tmvtnorm::mtmvnorm`` computes), the slope of a linear
trend at which the pre-test has a given power (R ``pretrends::slope_for_power``), and the
bias and coverage of the target conditional on passing. :func:`simulate_pretest` draws
from the same model, for any pre-test, including the joint Wald test didlab's event
study reports by default. Pinned in ``tests/test_design_roth.py`` to R ``pretrends``
(Roth's package) on its He and Wang (2017) example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

#: the integration tolerance of the box probabilities (scipy's default is 1e-5)
_ABSEPS = 1e-7


def _box_probability(mean: np.ndarray, cov: np.ndarray, lower: np.ndarray,
                     upper: np.ndarray) -> float:
    """``P(lower <= X <= upper)`` for ``X ~ N(mean, cov)`` (any dimension)."""
    mean, cov = np.atleast_1d(mean).astype(float), np.atleast_2d(cov).astype(float)
    if mean.size == 1:
        sd = np.sqrt(cov[0, 0])
        return float(stats.norm.cdf(upper[0], mean[0], sd) - stats.norm.cdf(lower[0], mean[0], sd))
    # a fixed seed: Genz's quasi-Monte Carlo is randomised, and the same inputs should give
    # the same bits
    mvn = stats.multivariate_normal(mean=mean, cov=cov, seed=20220801, maxpts=200_000 * mean.size,
                                    abseps=_ABSEPS, releps=_ABSEPS)
    return float(mvn.cdf(upper, lower_limit=lower))


def nis_bounds(sigma_pre: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The NIS pre-test's acceptance box ``[-z sigma_j, z sigma_j]``."""
    half = z * np.sqrt(np.diag(np.atleast_2d(sigma_pre)))
    return -half, half


def pass_probability(beta_pre: np.ndarray, sigma_pre: np.ndarray, z: float = 1.96) -> float:
    """Probability that no pre-period coefficient is significant at critical value ``z``
    (one minus the NIS pre-test's power; R ``pretrends:::rejectionProbability_NIS``)."""
    lo, hi = nis_bounds(sigma_pre, z)
    return _box_probability(np.asarray(beta_pre, float), np.asarray(sigma_pre, float), lo, hi)


def truncated_mean(mean: np.ndarray, cov: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray) -> np.ndarray:
    """``E[X | lower <= X <= upper]`` for ``X ~ N(mean, cov)``: Tallis's (1961) formula
    ``mean + cov @ F`` with ``F_k = (f_k(lower_k) - f_k(upper_k)) / P(box)``, where
    ``f_k(x)`` is the density of ``X_k`` at ``x`` times the probability that the other
    coordinates lie in their box given ``X_k = x`` (Manjunath and Wilhelm 2012, eq. 8; R
    ``tmvtnorm::mtmvnorm``)."""
    mean, cov = np.asarray(mean, float), np.atleast_2d(np.asarray(cov, float))
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    k = mean.size
    alpha = _box_probability(mean, cov, lower, upper)
    if not alpha > 0:
        raise ValueError("the box has probability zero")
    f = np.zeros(k)
    for j in range(k):
        sd = np.sqrt(cov[j, j])
        rest = [i for i in range(k) if i != j]
        for x, sign in ((lower[j], 1.0), (upper[j], -1.0)):
            if not np.isfinite(x):
                continue
            dens = stats.norm.pdf(x, mean[j], sd)
            if rest:
                c = cov[np.ix_(rest, [j])][:, 0] / cov[j, j]
                m = mean[rest] + c * (x - mean[j])
                v = cov[np.ix_(rest, rest)] - np.outer(c, cov[j, rest])
                dens *= _box_probability(m, v, lower[rest], upper[rest])
            f[j] += sign * dens
    return mean + cov @ (f / alpha)


def slope_for_power(sigma_pre: np.ndarray, t_pre: np.ndarray, power: float,
                    z: float = 1.96) -> float:
    """The slope ``gamma > 0`` of a linear trend ``beta_pre = gamma * t_pre`` (``t_pre``
    counted from the reference period) at which the NIS pre-test rejects with probability
    ``power`` (R ``pretrends::slope_for_power``; Roth's gamma_0.5 and gamma_0.8)."""
    if not 0 < power < 1:
        raise ValueError(f"power={power} must lie in (0, 1)")
    t_pre = np.asarray(t_pre, float)
    sigma_pre = np.atleast_2d(np.asarray(sigma_pre, float))
    size = 1 - pass_probability(np.zeros(t_pre.size), sigma_pre, z)
    if power <= size:
        raise ValueError(f"power={power} is below the pre-test's size {size:.4f}")
    hi = 8 * np.sqrt(np.diag(sigma_pre)).max()   # pretrends' bracket
    while 1 - pass_probability(hi * t_pre, sigma_pre, z) < power:
        hi *= 2
    return float(optimize.brentq(lambda g: 1 - pass_probability(g * t_pre, sigma_pre, z) - power,
                                 0.0, hi, xtol=1e-10))


@dataclass(frozen=True)
class PretestSummary:
    """Roth's quantities for one true ``beta`` (Section I.C).

    Attributes
    ----------
    power
        Probability that the pre-test rejects.
    bias, bias_given_pass
        ``E[l' beta_hat_post] - tau`` unconditionally and given a pass.
    coverage, coverage_given_pass
        Probability that ``l' beta_hat_post +- z_post * sqrt(l' Sigma_11 l)`` covers
        ``tau``, unconditionally and given a pass.
    """

    power: float
    bias: float
    bias_given_pass: float
    coverage: float
    coverage_given_pass: float


def summarize(beta: np.ndarray, sigma: np.ndarray, pre: np.ndarray, post: np.ndarray,
              tau: float = 0.0, weights: np.ndarray | None = None, z: float = 1.96,
              z_post: float = 1.96) -> PretestSummary:
    """Power, bias and coverage of ``l' beta_hat_post`` for ``tau``, with and without
    conditioning on passing the NIS pre-test, for ``beta_hat ~ N(beta, sigma)``.

    Parameters
    ----------
    beta, sigma
        Mean and covariance of every event-study coefficient (reference period omitted).
    pre, post
        Indices of the pre- and post-period coefficients.
    tau
        The target's true value (``l' tau_post``); the bias is measured against it.
    weights
        ``l`` over the post coefficients (default their average, Roth's main target).
    z, z_post
        Critical values of the pre-test and of the target's interval.
    """
    beta, sigma = np.asarray(beta, float), np.asarray(sigma, float)
    pre, post = np.asarray(pre), np.asarray(post)
    l_post = (np.full(post.size, 1.0 / post.size) if weights is None
              else np.asarray(weights, float))
    s_pre = sigma[np.ix_(pre, pre)]
    lo, hi = nis_bounds(s_pre, z)
    p_pass = pass_probability(beta[pre], s_pre, z)
    # Proposition 1: the post coefficients move with the pre coefficients' truncated mean
    m_pre = truncated_mean(beta[pre], s_pre, lo, hi)
    reg = sigma[np.ix_(post, pre)] @ np.linalg.inv(s_pre)
    mean_post = beta[post] + reg @ (m_pre - beta[pre])
    target = float(l_post @ beta[post])
    # coverage: (beta_hat_pre, l' beta_hat_post) is normal; covering tau is a box in it
    m = np.zeros((pre.size + 1, beta.size))
    m[np.arange(pre.size), pre] = 1.0
    m[pre.size, post] = l_post
    cov_m = m @ sigma @ m.T
    sd_t = np.sqrt(cov_m[-1, -1])
    cover_lo, cover_hi = tau - z_post * sd_t, tau + z_post * sd_t
    coverage = float(stats.norm.cdf(cover_hi, target, sd_t) - stats.norm.cdf(cover_lo, target, sd_t))
    joint = _box_probability(m @ beta, cov_m, np.r_[lo, cover_lo], np.r_[hi, cover_hi])
    return PretestSummary(power=1 - p_pass, bias=target - tau,
                          bias_given_pass=float(l_post @ mean_post) - tau,
                          coverage=coverage, coverage_given_pass=joint / p_pass)


def simulate_pretest(beta: np.ndarray, sigma: np.ndarray, pre: np.ndarray, post: np.ndarray,
                     n_draws: int, rng: np.random.Generator, tau: float = 0.0,
                     test: str = "nis", z: float = 1.96, z_post: float = 1.96,
                     alpha: float = 0.05) -> PretestSummary:
    """The quantities of :func:`summarize` from ``n_draws`` draws of ``N(beta, sigma)``.

    ``test="nis"``: Roth's pre-test; ``"wald"``: the joint Wald test with the known
    ``Sigma_22`` against chi2(K) at level ``alpha`` (didlab's event study uses the
    estimated covariance against F(K, G-1)). The target is the average post coefficient.
    """
    if test not in ("nis", "wald"):
        raise ValueError(f"test={test!r} must be 'nis' or 'wald'")
    beta, sigma = np.asarray(beta, float), np.asarray(sigma, float)
    pre, post = np.asarray(pre), np.asarray(post)
    draws = rng.multivariate_normal(beta, sigma, size=n_draws, method="cholesky")
    b_pre = draws[:, pre]
    s_pre = sigma[np.ix_(pre, pre)]
    if test == "nis":
        passed = np.all(np.abs(b_pre) <= z * np.sqrt(np.diag(s_pre)), axis=1)
    else:
        wald = np.einsum("ij,jk,ik->i", b_pre, np.linalg.inv(s_pre), b_pre)
        passed = wald <= stats.chi2.ppf(1 - alpha, pre.size)
    est = draws[:, post].mean(axis=1)
    l_post = np.full(post.size, 1.0 / post.size)
    sd_t = np.sqrt(l_post @ sigma[np.ix_(post, post)] @ l_post)
    cover = np.abs(est - tau) <= z_post * sd_t
    return PretestSummary(power=float(1 - passed.mean()), bias=float(est.mean() - tau),
                          bias_given_pass=float(est[passed].mean() - tau),
                          coverage=float(cover.mean()),
                          coverage_given_pass=float(cover[passed].mean()))
