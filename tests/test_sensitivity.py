"""Honest sensitivity analysis: limits where theory pins the answer, agreement with the
honestdid port of R HonestDiD, coverage under a bounded violation, pre-trend power."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from estimators.callaway_santanna import CallawaySantAnna
from estimators.event_study import EventStudy
from estimators.imputation import Imputation
from estimators.sensitivity import (bonferroni_relative_magnitudes, breakdown,
                                    conditional_interval, conditional_set, detectable_slope,
                                    event_inputs, flci_smoothness, honest_interval,
                                    honest_intervals, pretest_power, target_weights)
from estimators.sun_abraham import SunAbraham
from simulate.province import draw_province


@pytest.fixture(scope="module")
def es():
    return EventStudy("lnce", leads=4, lags=4).fit(draw_province(np.random.default_rng(7)))


def test_inputs_from_every_event_time_estimator(staggered):
    for est in (EventStudy("lnce", leads=3, lags=3), SunAbraham("lnce"), Imputation("lnce"),
                CallawaySantAnna("lnce", base_period="universal")):
        fit = est.fit(staggered)
        if isinstance(est, Imputation):
            with pytest.raises(Exception, match="pre-period"):
                flci_smoothness(event_inputs(fit), 0.0, np.ones(event_inputs(fit).n_post) / event_inputs(fit).n_post)
            continue
        inp = event_inputs(fit)
        assert inp.sigma.shape == (inp.beta.size, inp.beta.size) and inp.n_post > 0


def test_no_violation_allowed(es):
    inp = event_inputs(es)
    l = target_weights(inp)
    # relative magnitudes, Mbar = 0: post violations are zero, the conventional interval
    conv = honest_intervals(es, "relative_magnitudes", grid=[0.0], method="bonferroni").iloc[:2]
    assert conv["lower"].iloc[0] == pytest.approx(conv["lower"].iloc[1], abs=1e-12)
    assert conv["upper"].iloc[0] == pytest.approx(conv["upper"].iloc[1], abs=1e-12)
    # ... and the ARP conditional test for one post period (post-period moments only): the
    # moments are +-(b_0 - theta); conditioning on which binds truncates at zero, so the
    # test is the two-sided z test and the set is the conventional interval (up to the
    # grid refinement, step / 32^3)
    e0 = np.eye(inp.n_post)[0]
    iv = conditional_interval(inp, "relative_magnitudes", 0.0, e0, hybrid=False)
    b0, s0 = inp.beta[inp.n_pre], np.sqrt(inp.sigma[inp.n_pre, inp.n_pre])
    z = special.ndtri(0.975)
    assert iv.lower == pytest.approx(b0 - z * s0, abs=1e-6)
    assert iv.upper == pytest.approx(b0 + z * s0, abs=1e-6)
    # smoothness, M = 0: the violation is linear through the reference period; the FLCI is
    # the minimum-variance unbiased affine estimator under that model +- z sd
    iv = flci_smoothness(inp, 0.0, l)
    n = inp.n_pre
    t = (inp.times + 1).astype(float)
    S = inp.sigma
    # minimise (v, l)' S (v, l) subject to v't_pre = -l't_post  (Lagrange, closed form)
    A = np.block([[2 * S[:n, :n], t[:n, None]], [t[None, :n], np.zeros((1, 1))]])
    b = np.r_[-2 * S[:n, n:] @ l, -l @ t[n:]]
    v = np.linalg.solve(A, b)[:n]
    w = np.r_[v, l]
    center, sd = w @ inp.beta, np.sqrt(w @ S @ w)
    z = special.ndtri(0.975)
    assert iv.lower == pytest.approx(center - z * sd, abs=1e-7)
    assert iv.upper == pytest.approx(center + z * sd, abs=1e-7)


def test_flci_matches_honestdid_port(es):
    # Reference: the `honestdid` package (0.1.1, a Python port of R HonestDiD),
    # createSensitivityResults(method="FLCI", l_vec=average) on this same event study
    # (EventStudy(leads=4, lags=4) on draw_province(default_rng(7))). The port optimises on
    # a grid, so intervals agree to about 1e-3; didlab's are never longer.
    ref = {0.0: (-0.495256, -0.260524), 0.005: (-0.525380, -0.233205),
           0.01: (-0.573491, -0.189489), 0.02: (-0.666154, -0.102237)}
    inp = event_inputs(es)
    l = target_weights(inp)
    for m, (lo, hi) in ref.items():
        iv = flci_smoothness(inp, m, l)
        assert iv.lower == pytest.approx(lo, abs=1e-3) and iv.upper == pytest.approx(hi, abs=1e-3)
        assert iv.upper - iv.lower == pytest.approx(hi - lo, rel=5e-3)


def test_conditional_sets_match_honestdid_port(es):
    # Reference: the `honestdid` package (0.1.1, a Python port of R HonestDiD) on this event
    # study, l = e_0 (first post period), hybrid_flag="ARP" (the conditional test):
    # computeConditionalCS_DeltaRM(Mbar) and computeConditionalCS_DeltaSD(M). The port
    # reports the accepted points of a 1,000-point grid (steps ~0.0013), so its interval
    # lies inside didlab's (whose ends are refined) and each end is within one step.
    rm = {0.0: (-0.3300066, -0.2027277), 0.5: (-0.3496889, -0.1830454),
          1.0: (-0.3746198, -0.1528659)}
    sd = {0.0: (-0.390366, -0.186982), 0.01: (-0.398986, -0.179177),
          0.03: (-0.415095, -0.162607)}
    inp = event_inputs(es)
    e0 = np.eye(inp.n_post)[0]
    for restriction, ref in (("relative_magnitudes", rm), ("smoothness", sd)):
        for m, (lo, hi) in ref.items():
            iv = conditional_interval(inp, restriction, m, e0, hybrid=False)
            assert iv.lower <= lo + 1e-9 and iv.upper >= hi - 1e-9, (restriction, m)
            assert lo - iv.lower < 0.0014 and iv.upper - hi < 0.0014, (restriction, m)


def test_sets_widen_with_m_and_breakdown(es):
    inp = event_inputs(es)
    l = target_weights(inp)
    for restriction in ("smoothness", "relative_magnitudes"):
        tab = honest_intervals(es, restriction).iloc[1:]
        width = (tab["upper"] - tab["lower"]).to_numpy()
        assert np.all(np.diff(width) >= -1e-9)
        b = breakdown(es, restriction)
        assert 0 < b < np.inf
        if restriction == "smoothness":
            at = flci_smoothness(inp, b * 1.001, l)
            below = flci_smoothness(inp, b * 0.99, l)
            assert at.lower <= 0 <= at.upper and not (below.lower <= 0 <= below.upper)
        else:          # C-LF: the breakdown is where the test starts to accept zero
            assert conditional_set(inp, restriction, b * 1.001, l).accepts(0.0)
            assert not conditional_set(inp, restriction, b * 0.99, l).accepts(0.0)
    # the conservative Bonferroni interval is never shorter than C-LF's
    for mbar in (0.5, 1.0):
        clf = honest_interval(inp, "relative_magnitudes", mbar, l)
        bon = bonferroni_relative_magnitudes(inp, mbar, l)
        assert bon.upper - bon.lower >= clf.upper - clf.lower


@pytest.fixture(scope="module")
def ehec_event_study():
    """The HonestDiD README's example: Medicaid expansion and insurance coverage (ACS,
    tests/data/ehec_data.csv, from Mixtape-Sessions/Advanced-DID ehec_data.dta), years
    before 2016 without the 2015 cohort, D = expanded in 2014, TWFE event study with 2013
    as reference, clustered by state (fixest::feols(dins ~ i(year, D, ref = 2013) |
    stfips + year, cluster = "stfips"))."""
    from pathlib import Path

    raw = pd.read_csv(Path(__file__).parent / "data" / "ehec_data.csv")
    df = raw[(raw["year"] < 2016) & (raw["yexp2"].isna() | (raw["yexp2"] != 2015))]
    p = pd.DataFrame({"unit": df["stfips"], "time": df["year"], "dins": df["dins"]})
    p["cohort"] = np.where(df["yexp2"] == 2014, 2014, 0)
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return EventStudy("dins", leads=None, lags=None, cluster="unit").fit(p)


def _printed(text: str) -> tuple[float, float]:
    """A number as printed and half a unit in its last printed digit."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return float(text), 0.5 * 10.0 ** -decimals


def test_published_honestdid_example(ehec_event_study):
    # Reference: HonestDiD README (github.com/asheshrambachan/HonestDiD, "Example usage -
    # Medicaid expansions"), 5 pre and 2 post periods, l_vec = e_1 (the 2014 effect):
    # createSensitivityResults (FLCI, DeltaSD) and createSensitivityResults_relativeMagnitudes
    # (C-LF, DeltaRM), printed to 3 significant digits. Tolerance: the printed rounding plus
    # 5e-5 for the FLCI (R optimises it over a 100-point grid; didlab solves the convex
    # program, so its sets are never longer) and plus 4e-4 for C-LF (R reads the set off a
    # 1,000-point grid over +-20 sd, step 0.00037 here, with a simulated critical value).
    sd_ref = {0.0: ("0.0259", "0.0607"), 0.01: ("0.0132", "0.0787"), 0.02: ("0.00286", "0.0907"),
              0.03: ("-0.00714", "0.101"), 0.04: ("-0.0171", "0.111"), 0.05: ("-0.0271", "0.121")}
    rm_ref = {0.5: ("0.0240", "0.0672"), 1.0: ("0.0170", "0.0720"), 1.5: ("0.00824", "0.0797"),
              2.0: ("-0.000916", "0.0881")}
    inp = event_inputs(ehec_event_study)
    assert (inp.n_pre, inp.n_post) == (5, 2)
    for restriction, ref, slack, method in (("smoothness", sd_ref, 5e-5, "FLCI"),
                                            ("relative_magnitudes", rm_ref, 4e-4, "C-LF")):
        tab = honest_intervals(ehec_event_study, restriction, grid=list(ref), target=0)
        for (_, row), (lo, hi) in zip(tab.iloc[1:].iterrows(), ref.values()):
            assert row["method"] == method
            for got, text in ((row["lower"], lo), (row["upper"], hi)):
                value, rounding = _printed(text)
                assert got == pytest.approx(value, abs=rounding + slack), (restriction, row["M"], text)
    # the README's breakdown values: Mbar between 1.5 and 2, M between 0.02 and 0.03
    assert 1.5 < breakdown(ehec_event_study, "relative_magnitudes", target=0) <= 2.0
    assert 0.02 < breakdown(ehec_event_study, "smoothness", target=0) <= 0.03


def test_relative_magnitude_sets_cover_under_a_bounded_violation():
    # beta_hat ~ N(delta + tau, Sigma) with Sigma from the Medicaid event study, tau_0 = 0.03
    # and a linear differential trend of 1.5 sd per period: every first difference equals
    # the slope, so delta is in Delta^RM(1). The C-LF set at Mbar = 1 must cover tau_0 at
    # no less than 95% (binomial band) while the conventional interval under-covers.
    rng = np.random.default_rng(11)
    n_pre, n_post = 3, 2
    L = rng.normal(size=(5, 5))
    sigma = (L @ L.T / 5 + np.eye(5)) * 1e-4
    times = np.r_[np.arange(-n_pre - 1, -1), np.arange(0, n_post)]
    slope = 1.5 * float(np.sqrt(np.diag(sigma)).mean())
    delta = slope * (times + 1)
    tau = np.r_[np.zeros(n_pre), 0.03, 0.05]
    truth = 0.03
    from estimators.sensitivity import EventInputs

    base = EventInputs(delta + tau, sigma, times, n_pre, n_post)
    l = np.eye(n_post)[0]
    cs0 = conditional_set(base, "relative_magnitudes", 1.0, l)
    n, cover, cover_conv = 2000, 0, 0
    z = special.ndtri(0.975)
    chol = np.linalg.cholesky(sigma)
    for _ in range(n):
        b = delta + tau + chol @ rng.normal(size=5)
        cover += cs0.with_beta(b).accepts(truth)
        cover_conv += abs(b[n_pre] - truth) <= z * np.sqrt(sigma[n_pre, n_pre])
    band = 3 * np.sqrt(0.95 * 0.05 / n)
    assert cover / n >= 0.95 - band
    assert cover_conv / n < 0.95 - band


def test_pretest_power_matches_noncentral_chi2(es):
    slope = detectable_slope(es, power=0.8)
    sim = pretest_power(es, slope, n_sim=40_000, rng=np.random.default_rng(1))
    assert sim["power"] == pytest.approx(0.8, abs=0.01)
    assert pretest_power(es, 0.0, n_sim=40_000)["power"] == pytest.approx(0.05, abs=0.006)
    assert detectable_slope(es, 0.5) < slope


def test_honest_sets_cover_under_a_linear_violation_conventional_does_not():
    # the city panel (282 cities, so that the estimated covariance is reliable) with a
    # linear differential trend of 0.01 a year for treated cities: second differences are
    # 0, inside Delta^SD(M) for any M >= 0
    from simulate.city import CityDGP, draw_city

    n, cover_honest, cover_conv = 150, 0, 0
    est = EventStudy("nqpf", leads=3, lags=3, bin_endpoints=False)
    for s in range(n):
        p = draw_city(np.random.default_rng(700 + s), CityDGP(trend_gap=0.01, fujian=False))
        fit = est.fit(p)
        truth = est.estimand(p)["ATT_post"]
        inp = event_inputs(fit)
        iv = flci_smoothness(inp, 0.0, target_weights(inp))
        cover_honest += iv.lower <= truth <= iv.upper
        cover_conv += fit.conf_low <= truth <= fit.conf_high
    lo = 0.95 - 3 * np.sqrt(0.95 * 0.05 / n)
    assert cover_honest / n >= lo
    assert cover_conv / n < lo


def test_pretest_then_report_diagnosands():
    from experiments.montecarlo import diagnose

    res = pd.DataFrame({
        "cell": "c", "outcome": "y", "estimator": "es", "term": "ATT_post", "role": "headline",
        "estimate": [1.0, 2.0, 3.0, 5.0], "truth": 2.0, "std_error": 1.0,
        "conf_low": [0.0, 1.5, 2.5, 4.0], "conf_high": [2.5, 2.5, 3.5, 6.0],
        "p_value": 0.01, "alpha": 0.05, "pretrend_p": [0.5, 0.01, 0.2, 0.04], "error": "",
    })
    d = diagnose(res).iloc[0]
    assert d["n_pass_pretest"] == 2                    # draws 1 and 3 pass (p >= 0.05)
    assert d["bias_given_pass"] == pytest.approx(((1 - 2) + (3 - 2)) / 2)
    assert d["coverage_given_pass"] == pytest.approx(0.5)   # draw 1 covers, draw 3 does not
    assert d["pretrend_reject"] == pytest.approx(0.5)


def test_sensitivity_experiment(tmp_path):
    from experiments.run import compose, run

    out = run(compose(["experiment=sensitivity", "experiment.outcomes=[lnce]",
                       "estimator=[event_study]", "experiment.sensitivity.m_grid=[0,0.01,0.02]"]), tmp_path)
    assert (tmp_path / "honest_sets.csv").exists() and (tmp_path / "figures" / "sensitivity.png").exists()
    summ = out["summary"]
    assert set(summ["restriction"].dropna()) == {"smoothness", "relative_magnitudes", "pre-trend power"}
    sets = out["honest_sets"]
    assert sorted(sets.loc[sets["restriction"] == "smoothness", "M"]) == [0.0, 0.01, 0.02]
