"""Honest sensitivity analysis: limits where theory pins the answer, agreement with the
honestdid port of R HonestDiD, coverage under a bounded violation, pre-trend power."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from estimators.callaway_santanna import CallawaySantAnna
from estimators.event_study import EventStudy
from estimators.imputation import Imputation
from estimators.sensitivity import (bonferroni_relative_magnitudes, breakdown, detectable_slope,
                                    event_inputs, flci_smoothness, honest_intervals,
                                    pretest_power, target_weights)
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
    conv = honest_intervals(es, "relative_magnitudes", grid=[0.0]).iloc[:2]
    assert conv["lower"].iloc[0] == pytest.approx(conv["lower"].iloc[1], abs=1e-12)
    assert conv["upper"].iloc[0] == pytest.approx(conv["upper"].iloc[1], abs=1e-12)
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


def test_sets_widen_with_m_and_breakdown(es):
    for restriction in ("smoothness", "relative_magnitudes"):
        tab = honest_intervals(es, restriction).iloc[1:]
        width = (tab["upper"] - tab["lower"]).to_numpy()
        assert np.all(np.diff(width) >= -1e-9)
        b = breakdown(es, restriction)
        assert 0 < b < np.inf
        inp = event_inputs(es)
        fn = flci_smoothness if restriction == "smoothness" else bonferroni_relative_magnitudes
        at = fn(inp, b * 1.001, target_weights(inp))
        below = fn(inp, b * 0.99, target_weights(inp))
        assert at.lower <= 0 <= at.upper and not (below.lower <= 0 <= below.upper)


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
