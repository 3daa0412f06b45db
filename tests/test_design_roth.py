"""Roth (2022) "Pretest with Caution": the normal model (estimators/pretest.py) pinned to
Roth's R package pretrends, and experiment=roth2022's panel design."""

import numpy as np
import pytest

from estimators.event_study import EventStudy
from estimators.pretest import (nis_bounds, pass_probability, simulate_pretest, slope_for_power,
                                summarize, truncated_mean)
from experiments.designs import library
from experiments.library import roth2022
from experiments.run import compose
from simulate.design import Assignment, Effect, Timing
from simulate.staggered import StaggeredDGP, draw

# He and Wang (2017, AEJ: Applied), Figure 2C event study: R pretrends::HeAndWangResults
# (github.com/jonathandroth/pretrends @ 122731d, data/HeAndWangResults.rda), tVec -4 -3 -2 0 1 2 3
HW_BETA = np.array([0.0667031481862068176, -0.0077017922885715961, -0.0307690538465976715,
                    0.0840306580066680908, 0.2424418181180953979, 0.2198789864778518677,
                    0.1910925358533859253])
_U = [  # upper triangle, row by row
    [0.0089065711945295334, 0.0044883135706186295, 0.00145870249252766371,
     0.00121576886158436537, 0.00203276448883116245, 0.0013225014554336667,
     0.00196177279576659203],
    [0.0059369169175624847, 0.00275007914751768112, 0.00135058583691716194,
     0.00143154594115912914, 0.0012067791540175676, 0.00138471578247845173],
    [0.00303862476721405983, 0.00090561661636456847, 0.00067912985105067492,
     0.0010167636210098863, 0.00070901442086324096],
    [0.00392474094405770302, 0.00259611802175641060, 0.0017326149391010404,
     0.00223455252125859261],
    [0.00806589704006910324, 0.0058753751218318939, 0.00374143593944609165],
    [0.0078815789893269539, 0.0036507095210254192],
    [0.00978842657059431076]]
HW_SIGMA = np.zeros((7, 7))
for _i, _row in enumerate(_U):
    HW_SIGMA[_i, _i:] = _row
HW_SIGMA = HW_SIGMA + np.triu(HW_SIGMA, 1).T
HW_REL = np.array([-4, -3, -2, 0, 1, 2, 3]) + 1          # tVec - referencePeriod (-1)
PRE, POST = np.arange(3), np.arange(3, 7)
# R 4.2.2, pretrends @ 122731d, mvtnorm 1.1-3, tmvtnorm 1.5-1. pmvnorm's Genz algorithm
# (abseps 1e-3) is randomised: two R runs of slope_for_power differ by ~6e-6, so the
# tolerances below are a few times that, far below anything Roth's tables round to.
# README: slope_for_power(sigma, targetPower = 0.5, tVec, referencePeriod = -1)
R_SLOPE50 = 0.05205871
# slope_for_power(sigma, targetPower = 0.8, tVec, referencePeriod = -1)
R_SLOPE80 = 0.07912112619
# README: pretrends(beta, sigma, tVec, -1, deltatrue = slope50 * (tVec + 1))$df_eventplot
R_MEAN_AFTER_PRETEST_50 = np.array([-0.09230764, -0.05555285, -0.02790950, 0.06490184,
                                    0.12084694, 0.16946498, 0.22453827])
# pretrends:::meanBetaPost_NIS(beta = s * (tVec + 1), sigma, 1:3, 4:7,
#   eta = c(0,0,0,rep(1/4,4)))$betaPostConditional for s = R_SLOPE50, R_SLOPE80
R_AVG_POST_GIVEN_PASS = {R_SLOPE50: 0.1449429454, R_SLOPE80: 0.2242537306}
# pretrends:::betaPostNullRejectionProbability_NIS(beta = s * (tVec + 1), sigma, 1:3, 4:7,
#   eta = c(0,0,0,rep(1/4,4)), nullRejectionForZero = TRUE): P(reject tau = 0 | pass)
R_REJECT_GIVEN_PASS = {R_SLOPE50: 0.5979677327, R_SLOPE80: 0.9329979168}


# --- (a) the normal model, exact ----------------------------------------------------------

def test_slopes_for_50_and_80_percent_power_match_pretrends():
    s_pre, t_pre = HW_SIGMA[:3, :3], HW_REL[:3]
    assert slope_for_power(s_pre, t_pre, 0.5) == pytest.approx(R_SLOPE50, abs=3e-5)
    assert slope_for_power(s_pre, t_pre, 0.8) == pytest.approx(R_SLOPE80, abs=3e-5)
    # README df_power at slope50: Power 0.4999776
    assert 1 - pass_probability(R_SLOPE50 * t_pre, s_pre) == pytest.approx(0.4999776, abs=5e-4)


def test_means_after_pretesting_match_pretrends():
    beta = R_SLOPE50 * HW_REL
    lo, hi = nis_bounds(HW_SIGMA[:3, :3])
    m_pre = truncated_mean(beta[PRE], HW_SIGMA[:3, :3], lo, hi)
    reg = HW_SIGMA[3:, :3] @ np.linalg.inv(HW_SIGMA[:3, :3])
    m_post = beta[POST] + reg @ (m_pre - beta[PRE])            # Roth's Proposition 1
    np.testing.assert_allclose(np.r_[m_pre, m_post], R_MEAN_AFTER_PRETEST_50, atol=2e-5)


@pytest.mark.parametrize("slope", [R_SLOPE50, R_SLOPE80])
def test_bias_and_coverage_given_pass_match_pretrends(slope):
    s = summarize(slope * HW_REL, HW_SIGMA, PRE, POST, tau=0.0)
    assert s.bias == pytest.approx(slope * HW_REL[POST].mean(), abs=1e-12)
    assert s.bias_given_pass == pytest.approx(R_AVG_POST_GIVEN_PASS[slope], abs=2e-5)
    assert 1 - s.coverage_given_pass == pytest.approx(R_REJECT_GIVEN_PASS[slope], abs=2e-4)
    # Roth's pattern on a published design: passing worsens bias and coverage
    assert s.bias_given_pass > s.bias and s.coverage_given_pass < s.coverage


def test_the_simulator_agrees_with_the_formulas():
    beta = R_SLOPE50 * HW_REL
    exact = summarize(beta, HW_SIGMA, PRE, POST)
    n = 200_000
    mc = simulate_pretest(beta, HW_SIGMA, PRE, POST, n, np.random.default_rng(7))
    for name in ("power", "coverage", "coverage_given_pass"):
        p = getattr(exact, name)
        k = n * (1 - exact.power) if name.endswith("pass") else n
        assert abs(getattr(mc, name) - p) < 4 * np.sqrt(p * (1 - p) / k), name
    sd = np.sqrt(HW_SIGMA[3:, 3:].mean())                       # SD of the average post
    assert abs(mc.bias - exact.bias) < 4 * sd / np.sqrt(n)
    assert abs(mc.bias_given_pass - exact.bias_given_pass) < 4 * sd / np.sqrt(n * (1 - exact.power))


def test_proposition_2_and_4_under_assumption_1():
    # Assumption 1: a common variance and a common positive covariance
    # (the panel design's form, with two pre-periods to keep the integrals cheap)
    k = 2
    sigma = roth2022.event_study_sigma(k_pre=k, m_post=3)
    pre, post = np.arange(k), np.arange(k, sigma.shape[0])
    rel = roth2022.trend_vector(k, 3)
    flat = summarize(0 * rel, sigma, pre, post)
    assert flat.bias_given_pass == pytest.approx(0.0, abs=1e-9)   # symmetric box: no bias
    assert flat.coverage_given_pass > flat.coverage              # Proposition 4: over-covers
    covers = {}
    for slope in (0.02, 0.05, 0.08):                              # upward trend: worse bias
        s = summarize(slope * rel, sigma, pre, post)
        assert s.bias_given_pass > s.bias > 0                     # Proposition 2
        covers[slope] = s.coverage_given_pass - s.coverage
    # coverage falls after passing only once the bias outweighs the variance reduction
    # (Roth, Section II.C): not at 0.02 (bias 0.4 SD), at 0.05 and beyond (1 SD)
    assert covers[0.02] > 0 > covers[0.05] > covers[0.08]


# --- (b) the panel design -----------------------------------------------------------------

def test_config_composes_with_the_calibrated_slopes():
    cfg = compose(["experiment=roth2022"])
    assert cfg.data.kind == "staggered" and cfg.data.simulation == 0
    assert cfg.data.n_units == roth2022.N_UNITS and list(cfg.data.cohorts) == [2005]
    assert cfg.data.noise_sd == roth2022.NOISE_SD
    assert list(cfg.experiment.grid["data.trend_slope"]) == [0.0, *roth2022.SLOPES.values()]
    assert list(cfg.estimator) == ["event_study"]
    assert (cfg.estimator.event_study.leads, cfg.estimator.event_study.lags) == (5, 4)
    for power, slope in roth2022.SLOPES.items():
        assert slope == pytest.approx(roth2022.slope_for_power(power), abs=5e-5)
        assert roth2022.wald_power(slope) == pytest.approx(power, abs=2e-3)
    info = library()["roth2022"]
    for num in info.numbers:
        assert num.estimator in cfg.estimator
        assert float(num.cell["data.trend_slope"]) in cfg.experiment.grid["data.trend_slope"]


def _panel_draws(slope: float, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    cfg = compose(["experiment=roth2022", f"data.trend_slope={slope}"])
    dgp = StaggeredDGP(**{k: (list(v) if k in ("cohorts", "cohort_shares") else v)
                          for k, v in cfg.data.items()
                          if k in StaggeredDGP.__dataclass_fields__})
    effect = Effect(att=cfg.effect.att, dynamics=cfg.effect.dynamics)
    es = EventStudy("roa", leads=5, lags=4)
    out: dict[str, list[float]] = {"err": [], "p": [], "cover": []}
    for r in range(n):
        p = draw(dgp, Assignment(), Timing(), effect, np.random.default_rng(seed + r))
        fit = es.fit(p)
        truth = es.estimand(p)["ATT_post"]
        out["err"].append(fit.estimate - truth)
        out["p"].append(fit.diagnostics["pretrend_p"])
        out["cover"].append(fit.conf_low <= truth <= fit.conf_high)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def test_trend_enters_the_event_study_as_the_calibration_assumes():
    # slope s: the event-study coefficient at k is tau + s (k + 1) in expectation; on a
    # noiseless panel exactly
    dgp = StaggeredDGP(simulation=0, n_units=200, first_year=2000, last_year=2009,
                       cohorts=[2005], cohort_shares=[0.5], trend_slope=0.1, noise_sd=0.0)
    p = draw(dgp, Assignment(), Timing(), Effect(att=0.2), np.random.default_rng(0))
    terms = EventStudy("roa", leads=5, lags=4).fit(p).terms.set_index("term")["estimate"]
    want = {f"ev{k:+d}": 0.1 * (k + 1) + (0.2 if k >= 0 else 0.0) for k in range(-5, 5) if k != -1}
    for name, value in want.items():
        assert terms[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.slow
@pytest.mark.parametrize("power", [0.5, 0.8])
def test_panel_pretest_power_and_the_cost_of_passing(power):
    slope = roth2022.SLOPES[power]
    n = 1000
    d = _panel_draws(slope, n)
    reject = d["p"] < 0.05
    # calibrated power within the 99.9% binomial band
    assert abs(reject.mean() - power) < 3.3 * np.sqrt(power * (1 - power) / n)
    passed = ~reject
    # the bias among passing draws exceeds the unconditional bias, beyond MC error: the
    # difference of the two means is -(share rejected) x (mean over passed - mean over
    # rejected), whose SE comes from the two groups
    diff = d["err"][passed].mean() - d["err"].mean()
    se = reject.mean() * np.sqrt(d["err"][passed].var(ddof=1) / passed.sum()
                                 + d["err"][reject].var(ddof=1) / reject.sum())
    assert diff > 3 * se, (diff, se)
    # and coverage given a pass is below the unconditional coverage
    c_all, c_pass = d["cover"].mean(), d["cover"][passed].mean()
    se_c = reject.mean() * np.sqrt(c_pass * (1 - c_pass) / passed.sum()
                                   + d["cover"][reject].var(ddof=1) / reject.sum())
    assert c_pass < c_all - 3 * se_c
