"""Stacked DID with Wing-Freedman-Hollingsworth corrective weights (estimators/stacked.py).

References: (1) R fixest 0.12.2 (R 4.2.2) fitted on R did's ``mpdta`` (tests/data/mpdta.csv)
stacked and weighted by WFH's own R functions; (2) exact identities: the weighted stack
equals the treated-share-weighted average of the sub-experiments' 2x2 DIDs, and with one
cohort it is the event study on the window; (3) the simulator's truth (Monte Carlo).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.event_study import EventStudy
from estimators.fe import within_general
from estimators.panel import EstimationError, OptionError
from estimators.stacked import StackedDID, _StackArrays
from estimators.twfe import TWFE
from experiments.montecarlo import Design, binomial_band, diagnose, run_reps
from simulate.city import CityDGP, draw_city
from simulate.design import Effect


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    raw = pd.read_csv(Path(__file__).resolve().parent / "data" / "mpdta.csv")
    p = pd.DataFrame({"unit": raw["countyreal"], "time": raw["year"],
                      "cohort": raw["first.treat"], "lemp": raw["lemp"]})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


# --- against fixest with WFH's weights on mpdta ------------------------------------------------
# R 4.2.2, fixest 0.12.2, data.table, collapse. The stacked data and weights come from WFH's
# own R functions create_sub_exp() and compute_weights(), copied verbatim from
# github.com/hollina/stacked-did-weights (stacked-example-r-and-stata.qmd @ b1bad75):
#   mp <- fread("tests/data/mpdta.csv")
#   mp[, adopt_year := fifelse(first.treat == 0, NA_real_, as.numeric(first.treat))]
#   stack <- function(dt, kpre, kpost) {
#     subs <- lapply(dt[!is.na(adopt_year), funique(adopt_year)], function(j) create_sub_exp(
#       dt, "year", "countyreal", "adopt_year", j, kpre, kpost))
#     compute_weights(rbindlist(subs)[feasible == 1], "treat", "event_time", "sub_exp")
#   }
#   m <- feols(lemp ~ i(event_time, treat, ref = -1) | countyreal^sub_exp + year^sub_exp,
#              stack(mp, KPRE, KPOST), weights = ~stack_weight, vcov = vcov_cluster(
#              ~countyreal, ssc = ssc(adj = FALSE, cluster.adj = FALSE)))
# ATT = mean of the post coefficients, SE sqrt(w' vcov(m) w) (WFH's hypotheses() step).

#: kappa_pre = 1, kappa_post = 1 (WFH clean controls: never treated or adopting after g + 1);
#: stacks 2004 (20 treated, 480 controls) and 2006 (40, 309); 2007 is not feasible
R_A = {"ev+0": (-0.009520525861, 0.014076225501), "ev+1": (-0.053589347385, 0.016925423234),
       "ATT": (-0.031554936623, 0.013652961942)}
#: the same, fixest's default ssc (cluster = ~countyreal): ATT SE 0.013685461846
R_A_DEFAULT_ATT_SE = 0.013685461846
#: the same stack without weights (Cengiz et al.'s unweighted stacked regression)
R_A_UNWEIGHTED = {"ev+0": (-0.009789708536, 0.014032130105),
                  "ev+1": (-0.054265040675, 0.016983403391),
                  "ATT": (-0.032027374606, 0.013659825239)}
#: kappa_pre = 3, kappa_post = 0, never-treated controls only (the stack above without
#: the not-yet-treated controls, weights recomputed: s <- compute_weights(s[treat == 1 |
#: is.na(adopt_year)], ...)); stacks 2006 and 2007, 2004 not feasible
R_B = {"ev-3": (0.025021829598, 0.018103127393), "ev-2": (0.024458744971, 0.014224975808),
       "ev+0": (-0.021034573581, 0.012888601414), "ATT": (-0.021034573581, 0.012888601414)}
#: vcov(m) of config B: (ev-3, ev-2), (ev-3, ev+0), (ev-2, ev+0)
R_B_COV = {("ev-3", "ev-2"): 1.76719981573792e-04, ("ev-3", "ev+0"): 4.26515691127606e-05,
           ("ev-2", "ev+0"): 3.71546376249321e-05}


def _check(est, ref):
    t = est.terms.set_index("term")
    for term, (b, se) in ref.items():
        assert t.loc[term, "estimate"] == pytest.approx(b, abs=1e-11), term
        assert t.loc[term, "std_error"] == pytest.approx(se, rel=1e-8), term


def test_mpdta_matches_fixest_with_wfh_weights(mpdta):
    est = StackedDID("lemp", pre=1, post=1, ssc="none").fit(mpdta)
    _check(est, R_A)
    assert est.n_obs == 2547 and est.n_clusters == 500  # nobs(m); clusters: the counties
    assert any("2004 (20 treated, 480 controls), 2006 (40 treated, 309 controls)" in n
               for n in est.notes)
    assert any("[2007] trimmed" in n for n in est.notes)
    # fixest's default ssc counts one period-by-stack effect per stack beyond the first
    # that didlab's Stata convention does not (the unit-by-stack effects span it):
    # K_fixest = K_stata + (stacks - 1), so the SEs differ by sqrt((N-K_s)/(N-K_f))
    default = StackedDID("lemp", pre=1, post=1).fit(mpdta)
    n, k_stata = 2547, 2 + 1 + (6 - 2)   # 2 terms, constant, 6 cells less 2 stacks
    assert default.std_error == pytest.approx(
        R_A_DEFAULT_ATT_SE * np.sqrt((n - k_stata - 1) / (n - k_stata)), rel=1e-8)


def test_mpdta_never_treated_controls_and_event_cov(mpdta):
    est = StackedDID("lemp", pre=3, post=0, control_group="nevertreated", ssc="none").fit(mpdta)
    _check(est, R_B)
    for (a, b), v in R_B_COV.items():
        assert est.event_cov.loc[a, b] == pytest.approx(v, rel=1e-7)
    assert list(est.event_cov.index) == ["ev-3", "ev-2", "ev+0"]
    assert any("[2004] trimmed" in n for n in est.notes)
    # WFH's tutorial regression (| treat + event_time fixed effects instead of the
    # stack-specific ones) gives the same coefficients: 0.025021829598, -0.021034573581
    t = est.terms.set_index("term")
    assert t.loc["ev-3", "estimate"] == pytest.approx(0.025021829598, abs=1e-11)


def test_mpdta_unweighted_stack_matches_fixest(mpdta):
    _check(StackedDID("lemp", pre=1, post=1, ssc="none", weighting="none").fit(mpdta),
           R_A_UNWEIGHTED)


# --- exact identities -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def city() -> pd.DataFrame:
    """Three cohorts (2011, 2014, 2017), 10% never treated, effects growing with exposure
    and by cohort."""
    return draw_city(np.random.default_rng(5), CityDGP(cohort_design="thirds"),
                     effect=Effect(att=0.0, dynamics="growing", slope=0.06, het_cohort=0.03))


def test_weighted_stack_is_the_treated_share_weighted_2x2s(city):
    """WFH (2024) Prop.: with Q weights, b_k = sum_a (N^D_a / N^D) DID_a(k, -1), the
    sub-experiments' 2x2 DIDs weighted by their treated counts. Computed here by hand
    from cell means, independently of the module's stack building."""
    pre, post = 2, 3
    est = StackedDID("nqpf", pre=pre, post=post).fit(city).terms.set_index("term")
    unit_cohort = city.groupby("unit")["cohort"].first()
    means = city.pivot_table(index="unit", columns="time", values="nqpf")
    by_k = {k: [] for k in range(-pre, post + 1) if k != -1}
    sizes = []
    for g in (2011, 2014, 2017):
        treated = unit_cohort.index[unit_cohort == g]
        clean = unit_cohort.index[(unit_cohort == 0) | (unit_cohort > g + post)]
        sizes.append(len(treated))
        for k in by_k:
            dt = means.loc[treated, g + k].mean() - means.loc[treated, g - 1].mean()
            dc = means.loc[clean, g + k].mean() - means.loc[clean, g - 1].mean()
            by_k[k].append(dt - dc)
    share = np.asarray(sizes) / sum(sizes)
    for k, dids in by_k.items():
        assert est.loc[f"ev{k:+d}", "estimate"] == pytest.approx(share @ np.asarray(dids),
                                                                 abs=1e-12), k


def test_one_cohort_is_the_event_study_on_the_window(province):
    """A single adoption date: one sub-experiment, every weight 1, so the stacked
    regression is the event study on the window's years (same SEs, same convention)."""
    st = StackedDID("lnce", pre=3, post=2).fit(province)
    window = province[province["time"].between(2011 - 3, 2011 + 2)]
    es = EventStudy("lnce", leads=3, lags=2).fit(window)
    a, b = st.terms.set_index("term"), es.terms.set_index("term")
    for term in ("ev-3", "ev-2", "ev+0", "ev+1", "ev+2"):
        assert a.loc[term, "estimate"] == pytest.approx(b.loc[term, "estimate"], abs=1e-12)
        assert a.loc[term, "std_error"] == pytest.approx(b.loc[term, "std_error"], rel=1e-10)
    assert st.estimate == pytest.approx(es.estimate, abs=1e-12)  # EventStudy's ATT_post
    assert st.std_error == pytest.approx(es.std_error, rel=1e-10)


def test_exact_parallel_trends_recover_the_estimand(city):
    """y = unit effect + year effect + te: the stacked regression returns its estimand
    (the trimmed aggregate ATT) exactly, term by term."""
    rng = np.random.default_rng(0)
    units, years = city["unit"].unique(), city["time"].unique()
    a = dict(zip(units, rng.normal(size=units.size)))
    lam = dict(zip(years, rng.normal(size=years.size)))
    p = city.assign(y=city["unit"].map(a) + city["time"].map(lam) + city["te_nqpf"],
                    te_y=city["te_nqpf"])
    for est in (StackedDID("y", pre=2, post=3), StackedDID("y", pre=1, post=4,
                                                           control_group="nevertreated")):
        fit = est.fit(p).terms.set_index("term")["estimate"]
        truth = est.estimand(p)
        assert set(truth) == set(fit.index)
        for term, value in truth.items():
            assert fit[term] == pytest.approx(value, abs=1e-10), term


def test_fast_within_transform_equals_the_generic_one():
    """The stack's exact Schur-complement within transform against the dense FWL one of
    fe.within_general, on an unbalanced, weighted stack of three sub-experiments."""
    rng = np.random.default_rng(1)
    stack = np.repeat([0, 1, 2], [300, 240, 180])
    unit = stack * 100 + rng.integers(0, 60, stack.size)
    cell = stack * 10 + rng.integers(0, 6, stack.size)
    u, n_u = np.unique(unit, return_inverse=True)[1], np.unique(unit).size
    c, n_c = np.unique(cell, return_inverse=True)[1], np.unique(cell).size
    w = rng.uniform(0.2, 3.0, stack.size)
    y, x = rng.normal(size=stack.size), rng.normal(size=(stack.size, 2))
    first = np.r_[True, np.diff(np.unique(cell) // 10) != 0]
    arrays = _StackArrays(y, x, ("a", "b"), u, c, n_u, n_c, False, None, 0, w, 3,
                          base_cells=np.flatnonzero(first))
    yt, xt = arrays.within()
    ref = within_general(np.column_stack([y, x]), u, c, n_u, n_c, w)
    np.testing.assert_allclose(np.column_stack([yt, xt]), ref, atol=1e-10)


# --- shapes, options, trimming ----------------------------------------------------------------

def test_trimming_and_refusals_are_named(staggered):
    """Cohorts 2013 and 2014 in 2000-2018: post=5 leaves 2014's window (2019) outside."""
    est = StackedDID("lnce", pre=3, post=5).fit(staggered)
    assert est.diagnostics["n_stacks"] == 1
    assert any("[2014] trimmed" in n for n in est.notes)
    with pytest.raises(EstimationError, match=r"no sub-experiment to stack: cohort\(s\) "
                                              r"\[2013, 2014\] have no full window") as exc:
        StackedDID("lnce", pre=14, post=5).fit(staggered)
    assert "\n" not in str(exc.value)
    never = staggered[staggered["cohort"] > 0]   # no never-treated unit left
    with pytest.raises(EstimationError, match="no nevertreated clean control"):
        StackedDID("lnce", pre=3, post=2, control_group="nevertreated").fit(never)


def test_controls_cluster_by_original_unit(city):
    """A never-treated city is a control in all three sub-experiments and one cluster;
    controls enter with one coefficient common to the stacks."""
    est = StackedDID("nqpf", pre=2, post=3, controls=("lnpgdp",)).fit(city)
    assert est.n_clusters == est.n_units == city["unit"].nunique()
    assert est.diagnostics["n_stacks"] == 3
    assert est.n_obs > est.n_units * 6  # controls appear in several stacks
    assert "lnpgdp" in set(est.terms["term"])


@pytest.mark.parametrize("bad, match", [
    ({"pre": 0}, "pre=0"), ({"post": -1}, "post=-1"), ({"pre": 1.5}, "pre=1.5"),
    ({"control_group": "lasttreated"}, "control_group='lasttreated'"),
    ({"weighting": "wfh"}, "weighting='wfh'"), ({"se": "bootstrap"}, "se='bootstrap'"),
    ({"controls": ("d",)}, "controls"),
])
def test_bad_options_are_refused_by_name(bad, match):
    with pytest.raises(OptionError, match=match):
        StackedDID("y", **bad).check()


def test_event_time_counts_periods(staggered):
    """Years relabelled to a two-year step change no number."""
    b = staggered.assign(time=2 * staggered["time"] - 2000,
                         cohort=np.where(staggered["cohort"] > 0, 2 * staggered["cohort"] - 2000, 0))
    x, y = StackedDID("lnce").fit(staggered), StackedDID("lnce").fit(b)
    pd.testing.assert_frame_equal(x.terms, y.terms, atol=1e-12, rtol=0)


# --- Monte Carlo: unbiased for the trimmed aggregate ATT where TWFE is not -----------------------

def _design() -> Design:
    from experiments.build import _draw_city
    from simulate.design import Assignment, Timing

    draw = functools.partial(_draw_city, CityDGP(cohort_design="thirds"), Assignment(),
                             Timing(kind="market_open"),
                             Effect(att=0.0, dynamics="growing", slope=0.06, het_cohort=0.03))
    return Design(draw, {("nqpf", "twfe"): TWFE("nqpf"),
                         ("nqpf", "stacked"): StackedDID("nqpf", pre=2, post=3),
                         ("nqpf", "unweighted"): StackedDID("nqpf", pre=2, post=3,
                                                            weighting="none", label="unweighted")})


def test_unbiased_under_dynamic_heterogeneous_effects_where_twfe_is_not():
    diag = diagnose(run_reps(_design(), 8, range(30))).query("term == 'ATT'").set_index("estimator")
    s = diag.loc["stacked"]
    assert abs(s["bias"]) < 3 * s["bias_mcse"] + 1e-3
    # TWFE misses its own ATT (0.33) by more than half; the unweighted stack misses the
    # trimmed aggregate ATT: it weights sub-experiments by treatment variance, not size
    assert diag.loc["twfe", "bias"] < -0.15
    u = diag.loc["unweighted"]
    assert u["bias"] < -5 * u["bias_mcse"]


@pytest.mark.slow
def test_covers_at_nominal_rate():
    n = 400
    diag = diagnose(run_reps(_design(), 9, range(n))).set_index(["estimator", "term"])
    lo, hi = binomial_band(0.95, n)
    for term in ("ATT", "ev+0", "ev+3", "ev-2"):
        row = diag.loc[("stacked", term)]
        assert lo <= row["coverage"] <= hi, term
        assert abs(row["bias"]) < 3 * row["bias_mcse"], term
