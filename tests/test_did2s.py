"""Two-stage DID (Gardner 2021; Butts and Gardner 2022): estimators/did2s.py.

References: (1) R ``did2s`` 1.2.0 (github.com/kylebutts/did2s @ 8228c15; its R/did2s.R
sourced under R 4.2.2 with fixest 0.12.2, data.table and Matrix, and
``setFixest_estimation(fixef.tol = 1e-11, fixef.iter = 100000)`` so that fixest's
iterative demeaning is exact to the printed digits) on R did's ``mpdta`` and on the
package's own ``df_het`` (tests/data/df_het.csv.gz); (2) the identity with the imputation
estimator's point estimates; (3) the simulator's truth (Monte Carlo).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.did2s import TwoStageDID
from estimators.imputation import Imputation
from estimators.panel import OptionError
from estimators.twfe import TWFE
from experiments.montecarlo import Design, binomial_band, diagnose, run_reps
from simulate.city import CityDGP, draw_city
from simulate.design import Effect

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    raw = pd.read_csv(DATA / "mpdta.csv")
    p = pd.DataFrame({"unit": raw["countyreal"], "time": raw["year"],
                      "cohort": raw["first.treat"], "lemp": raw["lemp"],
                      "w": np.exp(raw["lpop"]),
                      # a time-varying control both sides compute the same way
                      "x": raw["lpop"] * (raw["year"] - 2003) / 10})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


@pytest.fixture(scope="module")
def df_het() -> pd.DataFrame:
    raw = pd.read_csv(DATA / "df_het.csv.gz")
    p = pd.DataFrame({"unit": raw["unit"], "time": raw["year"], "cohort": raw["g"].astype(int),
                      "y": raw["dep_var"], "state": raw["state"]})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


def _check(est, ref, se_rel=1e-8):
    t = est.terms.set_index("term")
    for term, (b, se) in ref.items():
        assert t.loc[term, "estimate"] == pytest.approx(b, abs=1e-11), term
        assert t.loc[term, "std_error"] == pytest.approx(se, rel=se_rel), term


# --- R did2s on mpdta -------------------------------------------------------------------------
#   mp <- read.csv("tests/data/mpdta.csv")
#   mp$treat_on <- mp$first.treat > 0 & mp$year >= mp$first.treat
#   mp$rel <- ifelse(mp$first.treat == 0, Inf, mp$year - mp$first.treat)
#   mp$x <- mp$lpop * (mp$year - 2003) / 10; mp$w <- exp(mp$lpop)
# static: did2s(mp, "lemp", ~ 0 | countyreal + year, ~ i(treat_on, ref = FALSE),
#               "treat_on", "countyreal")
# event:  did2s(mp, "lemp", ~ 0 | countyreal + year, ~ i(rel, ref = c(-1, Inf)),
#               "treat_on", "countyreal")
# (controls: first_stage = ~ x | countyreal + year; weights: weights = "w")
R_MPDTA = {
    "plain": {"ATT": (-0.0477099182785, 0.0134784088078),
              "ev-4": (-0.0098491569058, 0.0090009285784),
              "ev-3": (0.0095357893043, 0.0063669014395),
              "ev-2": (0.0076435901912, 0.0060172478823),
              "ev+0": (-0.0310669271926, 0.0136430663401),
              "ev+1": (-0.0522348567485, 0.0189638375332),
              "ev+2": (-0.1360781144403, 0.0353419721334),
              "ev+3": (-0.1047074715766, 0.0337658533578)},
    "controls": {"ATT": (-0.0511968075680, 0.0131099365792),
                 "ev-4": (-0.0087881342957, 0.0090769969735),
                 "ev-2": (0.0074612139327, 0.0059980777391),
                 "ev+0": (-0.0340238035332, 0.0136228157059),
                 "ev+3": (-0.1090005547972, 0.0325101656543)},
    "weights": {"ATT": (-0.0158522396027, 0.0203343512301),
                "ev-4": (-0.0010082226861, 0.0102136363938),
                "ev-2": (-0.0086496663324, 0.0063470333343),
                "ev+1": (0.0126580910678, 0.0330393321520),
                "ev+3": (-0.0624606821289, 0.0210515163074)},
}
#: vcov(event) of the plain fit: (rel -2, rel 0), (rel 0, rel 3), (rel -2, rel 3)
R_MPDTA_COV = {("ev-2", "ev+0"): 3.04931056404027e-06, ("ev+0", "ev+3"): 9.89483805608410e-05,
               ("ev-2", "ev-2"): 3.62072720769697e-05, ("ev-2", "ev+3"): -4.19014874051669e-06}


@pytest.mark.parametrize("case", list(R_MPDTA))
def test_mpdta_matches_r_did2s(mpdta, case):
    kw = {"plain": {}, "controls": {"controls": ("x",)}, "weights": {"weights": "w"}}[case]
    est = TwoStageDID("lemp", **kw).fit(mpdta)
    _check(est, R_MPDTA[case])
    assert est.n_obs == 2500 and est.n_clusters == 500
    if case == "plain":
        for (a, b), v in R_MPDTA_COV.items():
            assert est.event_cov.loc[a, b] == pytest.approx(v, rel=1e-8)


def test_mpdta_without_never_treated_drops_unpredictable_rows_as_r(mpdta):
    # did2s(mp[mp$first.treat != 0, ], ...) with rel = year - first.treat and
    # i(rel, ref = -1): in 2007 every county is treated, so stage 1 has no 2007 effect;
    # did2s drops those 191 rows (nobs 764): static -0.0442470605869 (0.0210301166546)
    est = TwoStageDID("lemp").fit(mpdta[mpdta["cohort"] > 0])
    _check(est, {"ATT": (-0.0442470605869, 0.0210301166546),
                 "ev-4": (-0.0037425350630, 0.0042661104335),
                 "ev+0": (0.0005205823665, 0.0173119203189),
                 "ev+2": (-0.1302098471339, 0.0382332234601)})
    assert est.n_obs == 764
    assert "ev+3" not in set(est.terms["term"])  # only observed in 2007
    assert any("191 treated row(s) left out of stage 2" in n and "[2007]" in n
               for n in est.notes)


# --- R did2s on its own df_het ----------------------------------------------------------------
#   df <- read.csv(gzfile("tests/data/df_het.csv.gz"))
#   df$treat <- df$g > 0 & df$year >= df$g
#   df$rel_year <- ifelse(df$g == 0, Inf, df$year - df$g)
# static: did2s(df, "dep_var", ~ 0 | unit + year, ~ i(treat, ref = FALSE), "treat", "state")
# event:  did2s(df, "dep_var", ~ 0 | unit + year, ~ i(rel_year, ref = c(-1, Inf)), "treat",
#               "state")
# static, cluster_var = "unit": 2.2304816184608 (0.0214077252093)
R_DF_HET = {"ATT": (2.2304816184608, 0.0247086087189),
            "ev-20": (-0.0582258312391, 0.0358089993392),
            "ev-5": (-0.0393260966394, 0.0234823715559),
            "ev-2": (0.0011694580443, 0.0250944390840),
            "ev+0": (1.3730783362807, 0.0395352646658),
            "ev+1": (1.6021020992153, 0.0505111289736),
            "ev+5": (2.0592033294077, 0.0422566871774),
            "ev+10": (2.5013383536518, 0.0428578222335),
            "ev+20": (2.9119654644503, 0.0689605032581)}


def test_df_het_matches_r_did2s(df_het):
    est = TwoStageDID("y", cluster="state").fit(df_het)
    _check(est, R_DF_HET)
    assert est.n_clusters == 40
    ev = est.terms.dropna(subset=["event_time"])
    assert list(ev["event_time"]) == [k for k in range(-20, 21) if k != -1]
    unit = TwoStageDID("y").fit(df_het)
    assert unit.std_error == pytest.approx(0.0214077252093, rel=1e-8)


# --- identities and truth ---------------------------------------------------------------------

def test_point_estimates_are_the_imputation_estimates(staggered, mpdta):
    """Gardner's two-stage estimates are the BJS imputation estimates (the same untreated
    model, averaged over treated rows); only the variances differ."""
    for panel, y in ((staggered, "lnce"), (mpdta, "lemp")):
        a = TwoStageDID(y).fit(panel).terms.set_index("term")["estimate"]
        b = Imputation(y, pretrend_leads=0).fit(panel).terms.set_index("term")["estimate"]
        for term in b.index:
            assert a[term] == pytest.approx(b[term], abs=1e-12), term


def test_exact_parallel_trends_recover_the_estimand():
    """y = unit effect + year effect + te: every term equals its estimand exactly."""
    p = draw_city(np.random.default_rng(3), CityDGP(cohort_design="thirds"),
                  effect=Effect(att=0.1, dynamics="growing", slope=0.05, het_cohort=0.02))
    rng = np.random.default_rng(0)
    units, years = p["unit"].unique(), p["time"].unique()
    a = dict(zip(units, rng.normal(size=units.size)))
    lam = dict(zip(years, rng.normal(size=years.size)))
    p = p.assign(y=p["unit"].map(a) + p["time"].map(lam) + p["te_nqpf"], te_y=p["te_nqpf"],
                 wt=rng.uniform(0.5, 2.0, len(p)))
    for est in (TwoStageDID("y"), TwoStageDID("y", weights="wt", leads=3, lags=5)):
        fit = est.fit(p).terms.set_index("term")["estimate"]
        truth = est.estimand(p)
        assert set(truth) == set(fit.index)
        for term, value in truth.items():
            assert fit[term] == pytest.approx(value, abs=1e-10), term


def test_window_only_selects_terms(mpdta):
    full = TwoStageDID("lemp").fit(mpdta).terms.set_index("term")
    cut = TwoStageDID("lemp", leads=2, lags=1).fit(mpdta).terms.set_index("term")
    assert list(cut.index) == ["ATT", "ev-2", "ev+0", "ev+1"]
    pd.testing.assert_frame_equal(cut, full.loc[cut.index])


def test_robust_se_is_clustering_by_row(mpdta):
    a = TwoStageDID("lemp", se="robust").fit(mpdta)
    b = TwoStageDID("lemp", cluster="row").fit(mpdta.assign(row=np.arange(len(mpdta))))
    assert a.std_error == pytest.approx(b.std_error, rel=1e-12)
    assert a.n_clusters == 0 and "robust" in a.inference


@pytest.mark.parametrize("bad, match", [
    ({"ssc": "stata"}, "ssc='stata'"), ({"se": "conventional"}, "se='conventional'"),
    ({"leads": -1}, "leads=-1"), ({"lags": 1.5}, "lags=1.5"), ({"alpha": 0}, "alpha=0"),
    ({"controls": ("y",)}, "controls"),
])
def test_bad_options_are_refused_by_name(bad, match):
    with pytest.raises(OptionError, match=match):
        TwoStageDID("y", **bad).check()


# --- Monte Carlo: unbiased where TWFE is not --------------------------------------------------

def _design() -> Design:
    from experiments.build import _draw_city
    from simulate.design import Assignment, Timing

    draw = functools.partial(_draw_city, CityDGP(cohort_design="thirds"), Assignment(),
                             Timing(kind="market_open"),
                             Effect(att=0.0, dynamics="growing", slope=0.06, het_cohort=0.03))
    return Design(draw, {("nqpf", "twfe"): TWFE("nqpf"), ("nqpf", "did2s"): TwoStageDID("nqpf")})


def test_unbiased_under_dynamic_heterogeneous_effects_where_twfe_is_not():
    diag = diagnose(run_reps(_design(), 8, range(30))).query("term == 'ATT'").set_index("estimator")
    d = diag.loc["did2s"]
    assert abs(d["bias"]) < 3 * d["bias_mcse"] + 1e-3
    assert diag.loc["twfe", "mean_truth"] == pytest.approx(d["mean_truth"])  # same ATT
    assert diag.loc["twfe", "bias"] < -0.15


@pytest.mark.slow
def test_covers_at_least_at_nominal_rate():
    """The GMM variance counts the spread of the effects across treated rows (cohorts
    differ here) as noise, so it is conservative where effects are heterogeneous within
    a term (ev+0 covers 99% in 400 draws): coverage within the binomial band or above."""
    n = 400
    diag = diagnose(run_reps(_design(), 9, range(n))).set_index(["estimator", "term"])
    lo, _ = binomial_band(0.95, n)
    for term in ("ATT", "ev+0", "ev+4", "ev-3"):
        row = diag.loc[("did2s", term)]
        assert lo <= row["coverage"] <= 1.0, term
        assert abs(row["bias"]) < 3 * row["bias_mcse"], term
