"""Estimands when every unit is eventually treated (no never-treated unit).

Callaway-Sant'Anna with not-yet-treated comparisons and Sun-Abraham then use the last
cohort as the comparison group and estimate only the cells before its adoption (minus
anticipation); the imputation estimator (Stata ``did_imputation, autosample``) drops the
treated observations whose period effect has no untreated observation. Each estimator's
``estimand()`` must average the same cells with the same weights as its estimate: on a
noiseless panel (two-way effects plus the treatment effect) estimate and estimand agree to
rounding, and on a noisy one the estimates are pinned to R (did, fixest, didimputation).

The panel is :func:`all_treated_panel` (seeded); the R numbers were computed on it written
to CSV (``all_treated_panel().to_csv("panel.csv", index=False)``, R 4.2.2, did 2.5.1,
fixest 0.12.2, didimputation 0.4.0 from github:kylebutts/didimputation@2b6dc49,
its unused MatrixExtra import dropped from DESCRIPTION to install).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from estimators.callaway_santanna import CallawaySantAnna, staggered_truth
from estimators.imputation import Imputation
from estimators.panel import EstimationError, OptionError
from estimators.sun_abraham import SunAbraham

LAST = 2008
AGGREGATIONS = {"simple": "ATT", "dynamic": "ATT_dynamic", "group": "ATT_group",
                "calendar": "ATT_calendar"}


def all_treated_panel(seed: int = 20240607, noise: bool = True, never: int = 0) -> pd.DataFrame:
    """36 units x 2001-2010, cohorts 2004 / 2006 / 2008 (12 units each; ``never`` more
    units never treated), unit and year effects, effects that differ by cohort and grow
    with event time (``te_y``), N(0, 0.5^2) noise unless ``noise=False``."""
    rng = np.random.default_rng(seed)
    periods = np.arange(2001, 2011)
    cohorts = np.r_[np.repeat([2004, 2006, 2008], 12), np.zeros(never, dtype=int)]
    n = cohorts.size
    unit_fe = rng.normal(0.0, 1.0, n)
    time_fe = 0.1 * (periods - periods[0]) + rng.normal(0.0, 0.2, periods.size)
    u, t = np.meshgrid(np.arange(n), np.arange(periods.size), indexing="ij")
    u, t = u.ravel(), t.ravel()
    g, yr = cohorts[u], periods[t]
    d = ((yr >= g) & (g > 0)).astype(int)
    te = d * (0.5 + 0.2 * (yr - g) + 0.3 * (g == 2006))
    y = unit_fe[u] + time_fe[t] + te + (rng.normal(0.0, 0.5, u.size) if noise else 0.0)
    return pd.DataFrame({"unit": u + 1, "time": yr, "cohort": g, "d": d, "y": y, "te_y": te})


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return all_treated_panel()


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return all_treated_panel(noise=False)


def _cell_mean(p: pd.DataFrame, mask: np.ndarray) -> float:
    return float(p.loc[mask, "te_y"].mean())


# --- Callaway-Sant'Anna, not-yet-treated comparisons ----------------------------------------

def test_cs_not_yet_treated_matches_r_did_and_reports_its_cells(panel):
    # att_gt(yname = "y", tname = "time", idname = "unit", gname = "cohort", data = df,
    #        control_group = "notyettreated", bstrap = FALSE, cband = FALSE): 12 cells,
    #        g in {2004, 2006} x t in 2002..2007 (2008 is the comparison, years from 2008
    #        dropped); aggte(type = "simple") 0.942205692375 (SE 0.141225894367), dynamic
    #        0.972982486347, group 1.002121416253, calendar 0.851513174526
    r_did = {"simple": 0.942205692375, "dynamic": 0.972982486347, "group": 1.002121416253,
             "calendar": 0.851513174526}
    for agg, value in r_did.items():
        e = CallawaySantAnna("y", control_group="notyettreated", aggregation=agg).fit(panel)
        assert e.estimate == pytest.approx(value, abs=1e-9), agg
        if agg == "simple":
            assert e.std_error == pytest.approx(0.141225894367, rel=1e-7)
            cells = e.terms[e.terms["aggregation"] == "group_time"]["term"]
            assert sorted(cells) == sorted(f"group_time:{g}:{t}" for g in (2004, 2006)
                                           for t in range(2002, 2008))


def test_cs_estimand_is_the_mean_effect_over_the_cells_it_estimates(panel):
    truth = CallawaySantAnna("y", control_group="notyettreated").estimand(panel)
    t, d = panel["time"].to_numpy(), panel["d"].to_numpy() == 1
    # aggte simple: ATT(g,t) over post cells g <= t < 2008 weighted by cohort size (equal
    # cohorts here: every treated unit-period counts once)
    assert truth["ATT"] == pytest.approx(_cell_mean(panel, d & (t < LAST)), abs=1e-12)
    assert truth["ATT"] == pytest.approx(np.mean([0.5, 0.7, 0.9, 1.1, 0.8, 1.0]), abs=1e-12)
    # every treated unit-period would have given a different number (the old estimand)
    assert abs(truth["ATT"] - _cell_mean(panel, d)) > 0.1
    # group: 2004 over 2004-2007, 2006 over 2006-2007 (2008 has no post cell), size-weighted
    assert truth["ATT_group"] == pytest.approx((0.8 + 0.9) / 2, abs=1e-12)
    # calendar: mean over 2004..2007 of that year's treated cells
    assert truth["ATT_calendar"] == pytest.approx(np.mean([0.5, 0.7, (0.9 + 0.8) / 2,
                                                           (1.1 + 1.0) / 2]), abs=1e-12)
    # dynamic: e = 0 (both cohorts), 1 (both), 2, 3 (2004 only)
    assert truth["ATT_dynamic"] == pytest.approx(np.mean([0.65, 0.85, 0.9, 1.1]), abs=1e-12)
    assert truth["ev+3"] == pytest.approx(1.1) and "ev+4" not in truth


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # no noise: pre-test SE 0
@pytest.mark.parametrize("anticipation", [0, 1, 2])
def test_cs_estimate_equals_its_estimand_without_noise(clean, anticipation):
    """Two-way effects and the treatment effect only: every cell's 2x2 is exact, so each
    aggregation equals its estimand; with anticipation the periods from 2008 - a drop
    (and with a = 2 the 2006 cohort has no post cell: group drops it, as R did)."""
    est = CallawaySantAnna("y", control_group="notyettreated", anticipation=anticipation)
    truth = est.estimand(clean)
    assert all(np.isfinite(v) for v in truth.values())
    for agg, key in AGGREGATIONS.items():
        e = CallawaySantAnna("y", control_group="notyettreated", anticipation=anticipation,
                             aggregation=agg).fit(clean)
        assert e.estimate == pytest.approx(truth[key], abs=1e-9), (agg, anticipation)
    dyn = e.terms[e.terms["aggregation"] == "dynamic"]
    for term, value in zip(dyn["term"], dyn["estimate"]):
        k = term.split(":")[1]
        if k != "overall":
            assert value == pytest.approx(truth[f"ev{int(k):+d}"], abs=1e-9), term
    last_year = LAST - anticipation
    d = clean["d"].to_numpy() == 1
    assert truth["ATT"] == pytest.approx(
        _cell_mean(clean, d & (clean["time"].to_numpy() < last_year)), abs=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_cs_estimand_unchanged_with_never_treated_units():
    p = all_treated_panel(noise=False, never=8)
    for cg in ("nevertreated", "notyettreated"):
        est = CallawaySantAnna("y", control_group=cg)
        assert est.estimand(p) == staggered_truth(p, "y")
        assert est.fit(p).estimate == pytest.approx(est.estimand(p)["ATT"], abs=1e-9)


# --- Sun-Abraham, last-treated cohort as the comparison ---------------------------------------

def test_sun_abraham_matches_fixest_on_the_periods_before_the_last_cohort(panel):
    # fixest on the whole panel (no never-treated) drops 9 interactions as collinear and
    # reports ATT 0.020236845374: the treated 2008 cohort is the implicit reference after
    # 2008. SunAbraham follows Sun and Abraham (2021): the last cohort is the comparison
    # only before it is treated. fixest on that sample:
    # dr <- subset(df, time < 2008); dr$cohort[dr$cohort == 2008] <- 10000
    # f2 <- feols(y ~ sunab(cohort, time) | unit + time, dr, cluster = ~unit)
    # summary(f2, agg = "ATT"): 0.882571409349 (SE 0.142492580809); event times
    # -5..-2, 0..3: 0.308871832327 0.393543119242 0.289556700393 0.212705575884
    #               0.807722971900 0.774678387884 1.146915542214 0.983710194313
    e = SunAbraham("y").fit(panel)
    assert e.estimate == pytest.approx(0.882571409349, abs=1e-9)
    assert e.std_error == pytest.approx(0.142492580809, rel=1e-7)
    ev = e.terms.set_index("term")["estimate"]
    fixest = dict(zip((-5, -4, -3, -2, 0, 1, 2, 3),
                      (0.308871832327, 0.393543119242, 0.289556700393, 0.212705575884,
                       0.807722971900, 0.774678387884, 1.146915542214, 0.983710194313)))
    for k, v in fixest.items():
        assert ev[f"ev{k:+d}"] == pytest.approx(v, abs=1e-9)
    assert any("last cohort (2008) is the comparison" in n for n in e.notes)


@pytest.mark.parametrize("never,control", [(0, "nevertreated"), (0, "lasttreated"),
                                           (8, "nevertreated"), (8, "lasttreated")])
def test_sun_abraham_estimate_equals_its_estimand_without_noise(never, control):
    p = all_treated_panel(noise=False, never=never)
    est = SunAbraham("y", control_group=control)
    truth = est.estimand(p)
    e = est.fit(p)
    terms = e.terms.set_index("term")["estimate"]
    assert e.estimate == pytest.approx(truth["ATT"], abs=1e-9)
    evs = [k for k in terms.index if k.startswith("ev")]
    assert sorted(evs) == sorted(k for k in truth if k != "ATT" and k != "ev-1")
    for k in evs:
        assert terms[k] == pytest.approx(truth[k], abs=1e-9), k
    d, t = p["d"].to_numpy() == 1, p["time"].to_numpy()
    restricted = never == 0 or control == "lasttreated"
    assert truth["ATT"] == pytest.approx(
        _cell_mean(p, d & ((t < LAST) if restricted else True)), abs=1e-12)


def test_sun_abraham_weighted_estimand_weights_cells_by_total_weight():
    p = all_treated_panel(noise=False)
    p = p.assign(w=1.0 + (p["unit"] % 3))          # observation weights
    est = SunAbraham("y", weights="w")
    e = est.fit(p)
    truth = est.estimand(p)
    assert e.estimate == pytest.approx(truth["ATT"], abs=1e-9)
    m = (p["d"] == 1) & (p["time"] < LAST)
    assert truth["ATT"] == pytest.approx(np.average(p.loc[m, "te_y"], weights=p.loc[m, "w"]),
                                         abs=1e-12)


# --- imputation with autosample ----------------------------------------------------------------

def _literal_imputation(p: pd.DataFrame) -> tuple[float, int]:
    """OLS of y on unit and year dummies on the untreated rows; impute y(0) for the treated
    rows whose unit and year both have an untreated row; average y - y0_hat over them."""
    units, years = np.unique(p["unit"]), np.unique(p["time"])
    z = np.column_stack([(p["unit"].to_numpy()[:, None] == units).astype(float),
                         (p["time"].to_numpy()[:, None] == years[1:]).astype(float)])
    d = p["d"].to_numpy() == 1
    beta, *_ = np.linalg.lstsq(z[~d], p["y"].to_numpy()[~d], rcond=None)
    ok_unit = np.isin(p["unit"], p.loc[~d, "unit"])
    ok_year = np.isin(p["time"], p.loc[~d, "time"])
    kept = d & ok_unit & ok_year
    tau = p["y"].to_numpy()[kept] - z[kept] @ beta
    return float(tau.mean()), int((d & ~kept).sum())


def test_imputation_autosample_matches_r_didimputation_and_the_literal_computation(panel):
    # did_imputation(df, yname = "y", gname = "cohort", tname = "time", idname = "unit")
    #   (R didimputation: rows whose prediction is NA drop out): 0.798061118434 (SE
    #   0.099509741434); horizon = TRUE: tau0..3 0.649238235345 0.692411991423
    #   1.134135802485 0.970930454584 (SE 0.117565823475 0.149119243009 0.215250637488
    #   0.215839263750), tau4..6 NaN (every such row is in 2008 or later).
    #   R's fixest demeaning stops at tolerance 1e-6 (the estimates differ at 4e-8).
    for fast in (True, False):
        e = Imputation("y", fast=fast).fit(panel)
        assert e.estimate == pytest.approx(0.798061118434, abs=1e-6)
        assert e.std_error == pytest.approx(0.099509741434, rel=1e-6)
        terms = e.terms.set_index("term")
        r_ev = {0: (0.649238235345, 0.117565823475), 1: (0.692411991423, 0.149119243009),
                2: (1.134135802485, 0.215250637488), 3: (0.970930454584, 0.215839263750)}
        assert [k for k in terms.index if k.startswith("ev")] == [f"ev+{k}" for k in r_ev]
        for k, (b, s) in r_ev.items():
            assert terms.loc[f"ev+{k}", "estimate"] == pytest.approx(b, abs=1e-6)
            assert terms.loc[f"ev+{k}", "std_error"] == pytest.approx(s, rel=1e-6)
        literal, dropped = _literal_imputation(panel)
        assert e.estimate == pytest.approx(literal, abs=1e-10)
        # 2008-2010: 36 units treated in each of 3 years
        assert e.diagnostics["n_dropped_treated_obs"] == dropped == 108
        assert e.diagnostics["n_treated_obs"] == 72
        assert any(n.startswith("autosample: 108 treated observations dropped") for n in e.notes)


def test_imputation_drops_units_without_an_untreated_period():
    # unit 1 (cohort 2004) observed only from 2004: treated in every period it has but not
    # "always treated" (the panel starts in 2001); its unit effect cannot be imputed
    p = all_treated_panel()
    p = p[~((p["unit"] == 1) & (p["time"] < 2004))].reset_index(drop=True)
    e = Imputation("y").fit(p)
    literal, dropped = _literal_imputation(p)
    assert e.estimate == pytest.approx(literal, abs=1e-10)
    assert dropped == 108 + 4 and e.diagnostics["n_dropped_treated_obs"] == dropped
    assert "7 in units with no untreated period" in e.notes[-1]
    with pytest.raises(EstimationError, match="units with no untreated period.*autosample"):
        Imputation("y", autosample=False).fit(p)


def test_imputation_estimand_is_the_mean_effect_over_the_kept_observations(panel, clean):
    truth = Imputation("y").estimand(panel)
    d, t = panel["d"].to_numpy() == 1, panel["time"].to_numpy()
    assert truth["ATT"] == pytest.approx(_cell_mean(panel, d & (t < LAST)), abs=1e-12)
    assert sorted(truth) == ["ATT", "ev+0", "ev+1", "ev+2", "ev+3"]
    est = Imputation("y", pretrend_leads=0)   # no noise: the lead test has no residual
    e = est.fit(clean)
    for k, v in est.estimand(clean).items():
        assert e.terms.set_index("term").loc[k, "estimate"] == pytest.approx(v, abs=1e-9), k
    # with never-treated units nothing is dropped and the estimand is every treated cell
    p = all_treated_panel(noise=False, never=8)
    e = est.fit(p)
    assert e.diagnostics["n_dropped_treated_obs"] == 0
    assert est.estimand(p)["ATT"] == pytest.approx(e.estimate, abs=1e-9)
    assert est.estimand(p)["ATT"] == pytest.approx(_cell_mean(p, p["d"].to_numpy() == 1))


def test_imputation_without_autosample_refuses_clearly(panel):
    with pytest.raises(EstimationError, match="108 treated observations are in periods with no "
                                              "untreated unit.*autosample=True"):
        Imputation("y", autosample=False).fit(panel)
    with pytest.raises(OptionError, match="autosample='yes'"):
        Imputation("y", autosample="yes").check()
    # cohort-2004 units seen only from 2004 (no untreated period), cohort-2008 units only
    # before 2008: a comparison exists in 2004-2007, but no treated row can be imputed
    p = all_treated_panel()
    none = p[((p["cohort"] == 2004) & (p["time"] >= 2004))
             | ((p["cohort"] == 2008) & (p["time"] < 2008))].reset_index(drop=True)
    with pytest.raises(EstimationError, match="no treated observation can be imputed"):
        Imputation("y").fit(none)
