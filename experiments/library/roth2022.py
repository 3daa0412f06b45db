"""Roth (2022): pre-test power and estimates conditional on passing it
(``experiment=roth2022``; normal model in :mod:`estimators.pretest`).

Roth calibrates linear violations of parallel trends to the event studies of 12 published
papers (their coefficient covariance matrices, not shipped) so that the pre-test has 50%
and 80% power, and reports the bias and coverage of the average post-period estimate
unconditionally and among draws that pass. His formulas are reproduced exactly in
:mod:`estimators.pretest` (pinned to his R package ``pretrends`` on its He and Wang 2017
example in ``tests/test_design_roth.py``). This design asks the same questions of a
simulated panel and didlab's event study: the trend slopes are calibrated here, from the
panel's own covariance, to give the event study's pre-test 50% and 80% power.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from experiments.designs import DesignInfo, PaperNumber

_REF = ("Roth, J. (2022), 'Pretest with Caution: Event-Study Estimates after Testing for "
        "Parallel Trends', American Economic Review: Insights 4(3), 305-322")
#: the design (conf/experiment/roth2022.yaml): firms, treated share, residual SD, the
#: event window (pre-period coefficients -K-1..-2 relative to -1; post 0..M-1)
N_UNITS, TREATED_SHARE, NOISE_SD, K_PRE, M_POST = 200, 0.5, 0.5, 4, 5
#: the calibrated slopes in the config's grid (rounded to 4 decimals)
SLOPES = {0.5: 0.0573, 0.8: 0.0782}


def event_study_sigma(n_units: int = N_UNITS, share: float = TREATED_SHARE,
                      noise_sd: float = NOISE_SD, k_pre: int = K_PRE,
                      m_post: int = M_POST) -> np.ndarray:
    """Covariance of the event-study coefficients (pre then post) in a single-cohort
    panel with iid residuals: each coefficient is a difference in differences against the
    reference period, so ``Sigma = c (I + J)`` with ``c = sd^2 (1/N1 + 1/N0)`` (a common
    variance and a common positive covariance: Roth's Assumption 1)."""
    n1 = share * n_units
    c = noise_sd**2 * (1 / n1 + 1 / (n_units - n1))
    k = k_pre + m_post
    return c * (np.eye(k) + np.ones((k, k)))


def trend_vector(k_pre: int = K_PRE, m_post: int = M_POST) -> np.ndarray:
    """A unit slope's coefficients (pre then post): ``k + 1`` at event time ``k``."""
    return np.r_[-np.arange(k_pre, 0, -1.0), np.arange(1.0, m_post + 1)]


def wald_power(slope: float, n_clusters: int = N_UNITS, alpha: float = 0.05,
               **design: float) -> float:
    """Power of the event study's Wald pre-test (F(K, G-1), didlab's default) against
    ``slope``: the noncentral F with noncentrality ``slope^2 s' Sigma_pre^{-1} s``."""
    k = int(design.get("k_pre", K_PRE))
    sigma = event_study_sigma(**design)[:k, :k]
    s = trend_vector(k, int(design.get("m_post", M_POST)))[:k]
    lam = slope**2 * float(s @ np.linalg.solve(sigma, s))
    crit = stats.f.ppf(1 - alpha, k, n_clusters - 1)
    return float(stats.ncf.sf(crit, k, n_clusters - 1, lam))


def slope_for_power(power: float, **design: float) -> float:
    """The trend slope at which the Wald pre-test has ``power`` (Roth's gamma_p)."""
    return float(optimize.brentq(lambda g: wald_power(g, **design) - power, 0.0, 10.0,
                                 xtol=1e-12))


_NUMBERS = tuple(
    PaperNumber(what=f"pre-test power against the linear trend calibrated to {p:.0%} power",
                value=p, source="Section I.C ('Power Calculations'): gamma_0.5, gamma_0.8",
                diagnosand="pretrend_reject", estimator="event_study",
                cell={"data.trend_slope": str(slope)}, term="ATT_post")
    for p, slope in SLOPES.items()
)

DESIGNS = [
    DesignInfo(
        name="roth2022",
        title="Roth's pre-test with caution: power, and bias and coverage after passing",
        paper=_REF,
        demonstrates=(
            "A pre-test with 50% (80%) power lets half (a fifth) of the trending designs "
            "through, and those that pass are worse: with positively correlated event-study "
            "coefficients the average post-period estimate's bias given a pass exceeds its "
            "unconditional bias (Proposition 2) and its interval covers the effect less "
            "often; where trends are parallel, passing costs nothing (over-coverage, "
            "Proposition 4)."),
        parameters=(
            ("beta_hat ~ N(beta, Sigma), beta = linear trend + effect", "eq. (1)-(2)"),
            ("pre-test: no pre-period coefficient individually significant at 5% (NIS)",
             "Section I.B; estimators.pretest. The panel design uses the event study's "
             "joint Wald test (didlab's default; Roth's propositions 1, 3, 4 hold for it)"),
            ("linear trends giving the pre-test 50% and 80% power",
             "Section I.C; here 0.0573 and 0.0782 per year (slope_for_power)"),
            ("target: the average of the post-period coefficients", "Section I.C"),
            ("panel: 200 firms, 2000-2009, half the states treated from 2005, residual "
             "SD 0.5; event window -5..4, reference -1", "this design (the paper's 12 "
             "covariance matrices do not ship)"),
        ),
        numbers=_NUMBERS,
        fidelity=(
            "The normal model and its formulas are exact (estimators.pretest, pinned to "
            "Roth's R package pretrends on He and Wang 2017). The Monte Carlo design is "
            "not one of the paper's 12 calibrations (their covariance matrices are not "
            "published with it): a simulated panel with its own covariance, calibrated the "
            "same way; it reproduces the pattern, not the paper's averages. The power "
            "numbers are the calibration's targets."),
        # measured 2026-11-28: `didlab experiment=roth2022`, loky on the 2 shared cores
        # (17 s at load ~3.7; 27 s at load 2.4, fresh store)
        seconds=27.0,
    ),
]
