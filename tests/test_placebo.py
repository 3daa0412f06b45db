"""Placebo and permutation inference: fast path pinned to the generic loop, published
permutation p-values, exactness, and size / power by simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from estimators.event_study import EventStudy
from estimators.panel import OptionError
from estimators.placebo import (LeaveOneOut, RandomizationInference, TimingPlacebo,
                                draw_assignments, enumerate_assignments, n_assignments,
                                randomization_p_value, twfe_permutation_stats)
from estimators.twfe import TWFE
from experiments.montecarlo import binomial_band
from simulate.design import Assignment, Effect, Timing
from simulate.province import draw_province


@pytest.fixture(scope="module")
def null_panel():
    return draw_province(np.random.default_rng(11), assignment=Assignment(kind="random"),
                         effect=Effect(att=0.0))


@pytest.mark.parametrize("se", ["cluster", "robust", "conventional"])
@pytest.mark.parametrize("controls", [(), ("lnpgdp", "lnes")])
@pytest.mark.parametrize("data", ["null_panel", "staggered", "unbalanced"])
def test_fast_path_equals_generic_loop(request, se, controls, data):
    panel = request.getfixturevalue(data)
    ri = RandomizationInference(TWFE("lnce", controls=controls, se=se), n_perm=40)
    rng = np.random.default_rng(1)
    fast = ri.run(panel, rng)
    slow = RandomizationInference(ri.base, n_perm=40, fast=False).run(panel, np.random.default_rng(1))
    np.testing.assert_array_equal(fast.assignments, slow.assignments)
    np.testing.assert_allclose(fast.placebo, slow.placebo, rtol=1e-9, atol=1e-12)
    assert fast.estimate.p_value == slow.estimate.p_value
    coef = twfe_permutation_stats(ri.base, panel, fast.assignments[:10], "coef")
    ref = [ri.base.fit(_with(panel, row)).estimate for row in fast.assignments[:10]]
    np.testing.assert_allclose(coef, ref, rtol=1e-9, atol=1e-12)


def _with(panel, row):
    from estimators.placebo import _with_cohorts

    units = np.unique(panel["unit"])
    return _with_cohorts(panel, dict(zip(units, row)))


def test_organ_donations_in_space_permutation(organ):
    # each of the 27 states as the treated one: p = 5/27 (published_results.md, pinned)
    for statistic in ("coef", "t"):
        r = RandomizationInference(TWFE("Rate"), statistic=statistic, exact="auto").run(organ)
        assert r.placebo.size == 27 and bool(r.estimate.diagnostics["exact"])
        assert r.estimate.p_value == pytest.approx(5 / 27, abs=1e-12)


def test_causaldata_ri_exact_enumeration():
    # causaldata.ri: 8 units, 4 treated, observed difference 1.0; all 70 assignments give
    # one-sided p = 30/70 and two-sided p = 60/70 with the ">=" rule (published_results.md)
    from causaldata import ri

    data = ri.load_pandas().data
    y = data["y"].to_numpy(float)
    d = data["d"].to_numpy(int)
    draws = enumerate_assignments(d)
    assert draws.shape == (70, 8) and len({tuple(r) for r in draws}) == 70
    diff = np.array([y[r == 1].mean() - y[r == 0].mean() for r in draws])
    actual = y[d == 1].mean() - y[d == 0].mean()
    assert actual == 1.0
    assert np.mean(diff >= actual) == pytest.approx(30 / 70)
    p, mcse = randomization_p_value(actual, diff, exact=True)
    assert p == pytest.approx(60 / 70) and mcse == 0.0


def test_assignment_counts_and_draws_keep_cohort_sizes():
    cohorts = np.array([2011] * 6 + [0] * 24)
    assert n_assignments(cohorts) == math.comb(30, 6) == 593_775
    staggered = np.array([2013] * 4 + [2014] * 2 + [0] * 24)
    assert n_assignments(staggered) == math.factorial(30) // (math.factorial(4) * 2 * math.factorial(24))
    strata = np.repeat([0, 1, 2], 10)
    mixed = np.array([2011, 2011, 0, 0, 0, 0, 0, 0, 0, 0] * 3)
    assert n_assignments(mixed, strata) == math.comb(10, 2) ** 3
    draws = draw_assignments(staggered, 500, np.random.default_rng(0))
    assert ((draws == 2013).sum(1) == 4).all() and ((draws == 2014).sum(1) == 2).all()
    sd = draw_assignments(mixed, 300, np.random.default_rng(0), strata)
    for s in range(3):
        assert ((sd[:, strata == s] == 2011).sum(1) == 2).all()
    e = enumerate_assignments(mixed, strata)
    assert e.shape[0] == 45**3 and len({tuple(r) for r in e[:5000]}) == 5000


def test_random_p_value_plus_one_rule():
    p, mcse = randomization_p_value(2.0, np.array([0.5, -2.5, 1.0, 3.0]), exact=False)
    assert p == (1 + 2) / (1 + 4)
    assert mcse == pytest.approx(np.sqrt(p * (1 - p) / 4))


def test_exact_and_large_random_draw_agree():
    # 10 provinces, 3 pilots: C(10, 3) = 120 assignments
    panel = draw_province(np.random.default_rng(4), assignment=Assignment(kind="random", n_pilots=3))
    small = panel[panel["unit"] <= 10]
    small = small.assign(cohort=np.where(small["unit"].isin([1, 2, 3]), 2011, 0))
    small = small.assign(d=((small["cohort"] > 0) & (small["time"] >= 2011)).astype(int),
                         lnce=small["y0_lnce"] + 0.02 * ((small["cohort"] > 0) & (small["time"] >= 2011)))
    exact = RandomizationInference(TWFE("lnce"), exact=True).run(small)
    assert exact.placebo.size == 120
    rand = RandomizationInference(TWFE("lnce"), n_perm=20_000, exact=False).run(
        small, np.random.default_rng(2))
    mcse = rand.estimate.diagnostics["ri_p_mcse"]
    assert abs(rand.estimate.p_value - exact.estimate.p_value) < 4 * mcse + 1 / 20_000


def test_null_p_values_uniform_and_size_in_band_with_six_pilots():
    # 6 of 30 random pilots, no effect: RI is exact, cluster-robust t over-rejects
    n = 300
    p_ri, p_t = [], []
    for s in range(n):
        panel = draw_province(np.random.default_rng(1000 + s), assignment=Assignment(kind="random"),
                              effect=Effect(att=0.0))
        r = RandomizationInference(TWFE("lnce"), n_perm=199).run(panel, np.random.default_rng(s))
        p_ri.append(r.estimate.p_value)
        p_t.append(r.estimate.diagnostics["base_p_value"])
    p_ri = np.array(p_ri)
    # discrete p-values on a grid of 1/200: compare with the uniform law of that grid
    assert stats.kstest(p_ri, "uniform").pvalue > 0.001
    lo, hi = binomial_band(0.05, n)
    assert lo <= np.mean(p_ri <= 0.05) <= hi
    assert np.mean(np.array(p_t) < 0.05) > np.mean(p_ri <= 0.05)


def test_real_effect_lies_in_the_tail(province):
    r = RandomizationInference(TWFE("lnce"), n_perm=999).run(province, np.random.default_rng(0))
    assert r.estimate.p_value == pytest.approx(1 / 1000)
    assert r.estimate.diagnostics["share_beyond"] == 0.0
    assert abs(r.actual) > np.abs(r.placebo).max()


def test_generic_estimator_is_wrapped(staggered):
    es = EventStudy("lnce", leads=3, lags=3)
    r = RandomizationInference(es, n_perm=30).run(staggered, np.random.default_rng(0))
    assert r.placebo.size == 30 and r.estimate.term == "ATT_post"
    assert r.estimate.p_value == pytest.approx(1 / 31)
    with pytest.raises(OptionError, match="too many"):
        RandomizationInference(es, exact=True).fit(staggered)


def test_randomization_needs_a_generator_for_draws(province):
    with pytest.raises(OptionError, match="need a generator"):
        RandomizationInference(TWFE("lnce"), exact=False).fit(province)
    with pytest.raises(OptionError, match="statistic='z'"):
        RandomizationInference(TWFE("lnce"), statistic="z").fit(province, rng=np.random.default_rng(0))


def test_stratified_permutation(province):
    panel = province.assign(region=(province["unit"] % 3))
    r = RandomizationInference(TWFE("lnce"), n_perm=50, strata="region").run(
        panel, np.random.default_rng(0))
    units = panel.groupby("unit")["region"].first().to_numpy()
    actual = panel.groupby("unit")["cohort"].first().to_numpy() > 0
    for s in range(3):
        assert ((r.assignments[:, units == s] > 0).sum(1) == actual[units == s].sum()).all()


def test_timing_placebo_sample_and_dates(province):
    tp = TimingPlacebo(TWFE("lnce"), shifts=(2,))
    fake = tp.placebo_panel(province, 2)
    assert fake["time"].max() == 2010 and (fake["d"] == 1).sum() == 6 * 2
    assert set(fake.loc[fake["cohort"] > 0, "cohort"]) == {2009}
    e = tp.fit(province)
    ref = TWFE("lnce").fit(fake)
    assert e.estimate == ref.estimate and e.terms["shift"].tolist() == [2]
    with pytest.raises(OptionError, match="shift 11"):
        tp.placebo_panel(province, 11)


def test_timing_placebo_detects_anticipation():
    # effect starts two years before the recorded 2013 date: fake dates pick it up
    panel = draw_province(np.random.default_rng(5), timing=Timing(year=2013, anticipation=2))
    e = TimingPlacebo(TWFE("lnce"), shifts=(1, 2)).fit(panel)
    assert (e.terms["estimate"] < -0.1).all() and e.diagnostics["n_rejected"] == 2


def test_leave_one_out(province):
    e = LeaveOneOut(TWFE("lnce"), name_column="province").fit(province)
    assert len(e.terms) == 6 and e.estimate == TWFE("lnce").fit(province).estimate
    assert "drop Beijing" in set(e.terms["term"])
    bj = province.loc[province["province"] == "Beijing", "unit"].iloc[0]
    ref = TWFE("lnce").fit(province[province["unit"] != bj]).estimate
    assert e.terms.set_index("term").loc["drop Beijing", "estimate"] == ref


# --- Fisher's interval: the randomization test inverted over constant effects ---------------

def _shifted(panel, tau, outcome="lnce"):
    out = panel.copy()
    out[outcome] = out[outcome] - tau * out["d"]
    return out


@pytest.mark.parametrize("se", ["cluster", "robust", "conventional"])
@pytest.mark.parametrize("statistic", ["t", "coef"])
@pytest.mark.parametrize("data,controls", [("null_panel", ()), ("staggered", ("lnpgdp", "lnes")),
                                           ("unbalanced", ("lnpgdp",))])
def test_each_tau_is_the_test_on_the_shifted_outcome(request, se, statistic, data, controls):
    """The parts at tau give the statistics the generic loop computes by refitting every
    permuted panel with outcome y - tau d (the sharp null of a constant effect tau)."""
    from estimators.placebo import twfe_permutation_parts

    panel = request.getfixturevalue(data)
    base = TWFE("lnce", controls=controls, se=se)
    ri = RandomizationInference(base, n_perm=25, statistic=statistic, fast=False)
    draws, _ = ri.assignments(panel, np.random.default_rng(4))
    parts = twfe_permutation_parts(base, panel, draws)
    for tau in (-0.4, 0.15):
        shifted = _shifted(panel, tau)
        slow = ri.slow_stats(shifted, draws)
        np.testing.assert_allclose(parts.stats(statistic, tau), slow, rtol=1e-8, atol=1e-10)


def test_fisher_interval_edges_are_where_the_test_starts_rejecting(null_panel):
    ri = RandomizationInference(TWFE("lnce"), n_perm=199)
    est = ri.fit(null_panel, np.random.default_rng(3))
    lo, hi = est.conf_low, est.conf_high
    assert np.isfinite(lo) and np.isfinite(hi) and lo < est.estimate < hi
    assert "Fisher" in est.notes[0]
    assert est.diagnostics["base_conf_low"] != lo
    eps = 1e-3 * est.std_error

    def p_at(tau):  # the full test (actual fit and generic loop) on y - tau d
        r = RandomizationInference(TWFE("lnce"), n_perm=199, fast=False).run(
            _shifted(null_panel, tau), np.random.default_rng(3))
        return r.estimate.p_value

    assert p_at(lo + eps) > 0.05 >= p_at(lo - eps)
    assert p_at(hi - eps) > 0.05 >= p_at(hi + eps)


def test_other_base_estimators_report_no_interval(staggered):
    es = EventStudy("lnce", leads=3, lags=3)
    est = RandomizationInference(es, n_perm=20).fit(staggered, np.random.default_rng(0))
    assert np.isnan(est.conf_low) and np.isnan(est.conf_high)
    assert "no interval" in est.notes[0]
    assert np.isfinite(est.diagnostics["base_conf_low"])


def test_fisher_interval_covers_a_constant_effect_at_the_nominal_rate():
    """6 random pilots of 30, a constant effect of -0.3: Fisher's interval is exact under
    the sharp null (coverage within the binomial band around 95%)."""
    n = 150
    covered = []
    for s in range(n):
        panel = draw_province(np.random.default_rng(3000 + s),
                              assignment=Assignment(kind="random"), effect=Effect(att=-0.3))
        est = RandomizationInference(TWFE("lnce"), n_perm=199).fit(panel,
                                                                   np.random.default_rng(s))
        covered.append(est.conf_low <= -0.3 <= est.conf_high)
    lo, hi = binomial_band(0.95, n)
    assert lo <= np.mean(covered) <= hi
