"""Extended two-way fixed effects (Wooldridge 2021, 2023): pinned to R etwfe on mpdta,
identities with Callaway-Sant'Anna, Sun-Abraham and the imputation estimator, and Monte
Carlo truth on staggered panels where TWFE (linear) or linear parallel trends (Poisson)
fail."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.callaway_santanna import CallawaySantAnna
from estimators.etwfe import ETWFE, poisson_irls
from estimators.imputation import Imputation
from estimators.panel import EstimationError, OptionError
from estimators.sun_abraham import SunAbraham
from estimators.twfe import TWFE
from experiments.montecarlo import Design, binomial_band, diagnose, run_reps
from simulate.city import CityDGP
from simulate.design import Effect


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    raw = pd.read_csv(Path(__file__).resolve().parent / "data" / "mpdta.csv")
    p = pd.DataFrame({"unit": raw["countyreal"], "time": raw["year"],
                      "cohort": raw["first.treat"], "lemp": raw["lemp"], "lpop": raw["lpop"],
                      "emp": np.exp(raw["lemp"])})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


# --- R etwfe on mpdta ------------------------------------------------------------------------
# R 4.2.2, etwfe 0.4.0, marginaleffects 0.18.0, fixest 0.12.2 (insight 0.19.7), on
# tests/data/mpdta.csv with mpdta$emp <- exp(mpdta$lemp). Each case is
#   mod <- etwfe(<fml>, tvar = year, gvar = first.treat, data = mpdta, vcov = ~countyreal, ...)
#   emfx(mod, type = <simple | event | group | calendar>, numderiv = "richardson")
# (numderiv = "richardson": marginaleffects' default forward differences move SEs in the
# 6th digit). fe = "none" puts the cohort and period effects and the controls' slopes in as
# dummies: the same model as etwfe's default fe = "vs", whose SEs differ only because
# fixest counts one redundant varying slope in the small-sample factor (linear; see
# test_etwfe_default_fe_vs_differs_only_by_fixests_parameter_count) and, for Poisson, because
# the delta method then holds the absorbed effects fixed.
# Terms: "ATT" = emfx simple, "ev+e" = event, "group:g" = group, "calendar:t" = calendar.
R_ETWFE: dict[str, dict[str, tuple[float, float]]] = {}  # filled below
# case -> (didlab options, R call)
R_CASES = {
    # the etwfe README example: emfx(mod) -0.0506 (0.0125)
    "lin_ny_none": (dict(outcome="lemp", controls=("lpop",), fe="cohort"),
                    'etwfe(lemp ~ lpop, ..., fe = "none")'),
    "lin_nv_none": (dict(outcome="lemp", controls=("lpop",), fe="cohort",
                         control_group="nevertreated"),
                    'etwfe(lemp ~ lpop, ..., fe = "none", cgroup = "never")'),
    "lin_ny_nox": (dict(outcome="lemp", fe="cohort"), "etwfe(lemp ~ 1, ...)"),
    "lin_nv_nox": (dict(outcome="lemp", fe="cohort", control_group="nevertreated"),
                   'etwfe(lemp ~ 1, ..., cgroup = "never")'),
    "lin_ny_unit": (dict(outcome="lemp", controls=("lpop",)),
                    'etwfe(lemp ~ lpop, ..., ivar = countyreal, fe = "feo")'),
    # glm.tol = 3e-12 (fixest's smallest) so that R's estimates are converged to 1e-10
    "po_ny_none": (dict(outcome="emp", controls=("lpop",), family="poisson"),
                   'etwfe(emp ~ lpop, ..., family = "poisson", fe = "none", glm.tol = 3e-12)'),
    "po_nv_none": (dict(outcome="emp", controls=("lpop",), family="poisson",
                        control_group="nevertreated"),
                   'etwfe(emp ~ lpop, ..., family = "poisson", fe = "none", cgroup = "never", '
                   'glm.tol = 3e-12)'),
    "po_ny_nox": (dict(outcome="emp", family="poisson"),
                  'etwfe(emp ~ 1, ..., family = "poisson", fe = "none", glm.tol = 3e-12)'),
}
R_ETWFE.update({
    "lin_ny_none": {
        "ATT": (-0.0506270331229, 0.0124972552727),
        "ev+0": (-0.0332122037837, 0.0133659646591),
        "ev+1": (-0.0573456479257, 0.0171496439436),
        "ev+2": (-0.137870386661, 0.0307883605558),
        "ev+3": (-0.109539455365, 0.0323152812669),
        "group:2004": (-0.0876269608796, 0.0230474089175),
        "group:2006": (-0.0212783329359, 0.0185912211139),
        "group:2007": (-0.0459545277368, 0.0179714466513),
        "calendar:2004": (-0.0212480022226, 0.0217240176222),
        "calendar:2005": (-0.0818499992699, 0.0273693782056),
        "calendar:2006": (-0.044265591299, 0.0173733617005),
        "calendar:2007": (-0.0524323095862, 0.0150158259956),
    },
    "lin_nv_none": {
        "ATT": (-0.0419686124215, 0.0109250750316),
        "ev-4": (0.00689611000552, 0.0246893555479),
        "ev-3": (0.0275946667661, 0.018148442134),
        "ev-2": (0.0234649547539, 0.0145314863896),
        "ev+0": (-0.0211467366918, 0.0113935577517),
        "ev+1": (-0.0533558653415, 0.0157744284793),
        "ev+2": (-0.141080104629, 0.0322891829558),
        "ev+3": (-0.107544274673, 0.0329231641612),
        "group:2004": (-0.0851329850144, 0.0237553509444),
        "group:2006": (-0.0203850557514, 0.0167860508894),
        "group:2007": (-0.0287894881938, 0.0161541652788),
        "calendar:2004": (-0.0149112377903, 0.0222514406668),
        "calendar:2005": (-0.076996322966, 0.0278075774459),
        "calendar:2006": (-0.0465163515252, 0.0184283012487),
        "calendar:2007": (-0.039705413131, 0.0127222286188),
    },
    "lin_ny_nox": {
        "ATT": (-0.0477099182785, 0.0132729623878),
        "ev+0": (-0.0310669271926, 0.0136290776988),
        "ev+1": (-0.0522348567485, 0.0188842388375),
        "ev+2": (-0.13607811444, 0.0354768818088),
        "ev+3": (-0.104707471577, 0.0338947465559),
        "group:2004": (-0.0846192621887, 0.0257144056819),
        "group:2006": (-0.0183394368249, 0.0200940747855),
        "group:2007": (-0.0431060328087, 0.0184422693078),
        "calendar:2004": (-0.0193723636759, 0.0223952764633),
        "calendar:2005": (-0.0783190990621, 0.0305062360824),
        "calendar:2006": (-0.0436834635188, 0.0188423132467),
        "calendar:2007": (-0.0487369065609, 0.0157542253401),
    },
    "lin_nv_nox": {
        "ATT": (-0.0399512751552, 0.011803410125),
        "ev-4": (0.00330635669251, 0.0245699428375),
        "ev-3": (0.0250218295976, 0.0181653215473),
        "ev-2": (0.0244587449712, 0.0142754186773),
        "ev+0": (-0.0199318167893, 0.0118647086885),
        "ev+1": (-0.0509573670652, 0.0168808793446),
        "ev+2": (-0.137258738889, 0.0366116000022),
        "ev+3": (-0.100811363085, 0.0345251351113),
        "group:2004": (-0.0797491265747, 0.0264951207672),
        "group:2006": (-0.0229095392495, 0.0167839850479),
        "group:2007": (-0.0260544107192, 0.0167358589127),
        "calendar:2004": (-0.010503246221, 0.0233633078382),
        "calendar:2005": (-0.0704231581031, 0.0311343819073),
        "calendar:2006": (-0.048815984265, 0.0185244722743),
        "calendar:2007": (-0.037059339936, 0.0137150864004),
    },
    "lin_ny_unit": {
        "ATT": (-0.0506270331229, 0.0124795841775),
        "ev+0": (-0.0332122037838, 0.0133470652129),
        "ev+1": (-0.0573456479258, 0.0171253943642),
        "ev+2": (-0.137870386661, 0.0307448258392),
        "ev+3": (-0.109539455365, 0.0322695874798),
        "group:2004": (-0.0876269608796, 0.0230148198931),
        "group:2006": (-0.0212783329359, 0.0185649332269),
        "group:2007": (-0.0459545277368, 0.0179460350468),
        "calendar:2004": (-0.0212480022226, 0.0216932998494),
        "calendar:2005": (-0.0818499992699, 0.0273306779191),
        "calendar:2006": (-0.044265591299, 0.01734879588),
        "calendar:2007": (-0.0524323095862, 0.014994593635),
    },
    "po_ny_none": {
        "ATT": (-28.5748079168, 17.9413189424),
        "ev+0": (-25.3497484147, 15.8863274501),
        "ev+1": (1.09175119964, 40.2952684647),
        "ev+2": (-75.1246321238, 23.1541761248),
        "ev+3": (-101.823979305, 27.0878273546),
        "group:2004": (-55.7543371678, 19.7986466135),
        "group:2006": (58.7334754878, 54.3986310742),
        "group:2007": (-65.2946577816, 15.2742793799),
        "calendar:2004": (-10.5921251251, 14.0697594377),
        "calendar:2005": (-35.4766121176, 26.1408574704),
        "calendar:2006": (40.352468037, 39.1832684831),
        "calendar:2007": (-51.38765676, 18.6309886329),
    },
    "po_nv_none": {
        "ATT": (-26.4413154395, 11.5501768536),
        "ev-4": (37.6080015167, 23.671496739),
        "ev-3": (36.3828625801, 20.8545332009),
        "ev-2": (7.36764039897, 12.7366745291),
        "ev+0": (-13.3591223379, 8.68719845421),
        "ev+1": (-18.8239657981, 30.0276463534),
        "ev+2": (-93.8096310646, 28.7820981531),
        "ev+3": (-106.859992858, 29.2417984944),
        "group:2004": (-61.7785371831, 22.5483346032),
        "group:2006": (23.0577890015, 30.1224494044),
        "group:2007": (-35.0897934226, 10.1842003997),
        "calendar:2004": (-8.00636461764, 15.4135480806),
        "calendar:2005": (-38.4381601918, 27.8884592305),
        "calendar:2006": (5.48508738119, 25.8747427421),
        "calendar:2007": (-37.1446991601, 12.7207127152),
    },
    "po_ny_nox": {
        "ATT": (-28.9138327588, 23.7820552424),
        "ev+0": (-25.5720489385, 21.8099181078),
        "ev+1": (0.873630146436, 53.2170837997),
        "ev+2": (-76.7465725006, 28.0362774812),
        "ev+3": (-102.357517217, 41.5906837317),
        "group:2004": (-56.868739925, 24.3717445137),
        "group:2006": (58.4398814589, 72.5036957674),
        "group:2007": (-65.1879134009, 23.5609318142),
        "calendar:2004": (-11.6419430549, 14.3551754841),
        "calendar:2005": (-36.7289269278, 27.3011651881),
        "calendar:2006": (39.2210453226, 49.6022781055),
        "calendar:2007": (-51.3076997514, 24.8389316572),
    },
})

#: placebo Wald F (see test_never_treated_pretrend_wald)
R_PRETREND_F = {"lin_nv_nox": 1.54330710699, "lin_nv_none": 1.3660603822}
#: etwfe(<fml>, ..., data = mpdta[mpdta$first.treat != 0, ], fe = "none"[, family =
#: "poisson", glm.tol = 3e-12]) then emfx(., type = "simple" / "event", numderiv =
#: "richardson"): etwfe takes gref = 2007 and drops the years from 2007 on (nobs 764)
R_NO_NEVER = {
    "linear": {"ATT": (-0.0441879626239, 0.0180605535459),
               "ev+0": (0.000276682405608, 0.0153855129495),
               "ev+1": (-0.091802466276990, 0.0305252672869),
               "ev+2": (-0.129967394059143, 0.0345396643020)},
    "poisson": {"ATT": (39.8642103858, 23.1334891808),
                "ev+0": (89.2274574984, 36.2405559961),
                "ev+1": (-31.3713265952, 32.2206067616),
                "ev+2": (-36.9899939710, 26.6263312892)},
}


def _term(frame: pd.DataFrame, term: str) -> tuple[float, float]:
    row = frame.loc[term]
    return float(row["estimate"]), float(row["std_error"])


@pytest.mark.parametrize("case", list(R_CASES))
def test_matches_r_etwfe_on_mpdta(mpdta, case):
    options, _call = R_CASES[case]
    est = ETWFE(**options).fit(mpdta)
    terms = est.terms.set_index("term")
    for term, (ref, ref_se) in R_ETWFE[case].items():
        got, got_se = _term(terms, term)
        # estimates to 1e-8 (Poisson: relative, the outcome is in levels of ~1e3)
        assert got == pytest.approx(ref, rel=1e-8, abs=1e-8), (case, term)
        assert got_se == pytest.approx(ref_se, rel=1e-6), (case, term)
    assert est.term == "ATT"
    assert est.estimate == pytest.approx(R_ETWFE[case]["ATT"][0], rel=1e-8, abs=1e-8)
    assert est.n_obs == 2500 and est.n_units == 500 and est.n_clusters == 500


def test_readme_example_published_numbers(mpdta):
    # etwfe README: emfx(etwfe(lemp ~ lpop, tvar = year, gvar = first.treat, data = mpdta,
    # vcov = ~countyreal)) prints ATT -0.0506 (std. error 0.0125)
    e = ETWFE("lemp", controls=("lpop",), fe="cohort").fit(mpdta)
    assert round(e.estimate, 4) == -0.0506 and round(e.std_error, 4) == 0.0125


def test_etwfe_default_fe_vs_differs_only_by_fixests_parameter_count(mpdta):
    # etwfe's default fe = "vs" (cohort and year effects with varying slopes on lpop):
    # emfx(mod) -0.0506270331229 (0.0124997856511); mod$nparams = 31, one more than the
    # model's rank (30, fe = "none"): the four cohort slopes and five year slopes on lpop
    # span lpop twice. With K = 31 in fixest's (n - 1) / (n - K) the SEs agree.
    e = ETWFE("lemp", controls=("lpop",), fe="cohort").fit(mpdta)
    assert e.estimate == pytest.approx(-0.0506270331229, abs=1e-12)
    n = 2500
    assert e.std_error * np.sqrt((n - 30) / (n - 31)) == pytest.approx(0.0124997856511,
                                                                       rel=1e-6)


def test_aggregation_headlines(mpdta):
    # the overall numbers are the averages R did's aggte takes of emfx's levels
    ref = R_ETWFE["lin_ny_none"]
    opts = dict(outcome="lemp", controls=("lpop",), fe="cohort")
    ev = ETWFE(aggregation="event", **opts).fit(mpdta)
    assert ev.term == "ATT_dynamic"
    assert ev.estimate == pytest.approx(np.mean([ref[f"ev+{e}"][0] for e in range(4)]),
                                        abs=1e-10)
    cal = ETWFE(aggregation="calendar", **opts).fit(mpdta)
    assert cal.term == "ATT_calendar"
    assert cal.estimate == pytest.approx(
        np.mean([ref[f"calendar:{t}"][0] for t in range(2004, 2008)]), abs=1e-10)
    grp = ETWFE(aggregation="group", **opts).fit(mpdta)
    sizes = {2004: 20, 2006: 40, 2007: 131}  # counties per cohort (tests/data/README.md)
    assert grp.term == "ATT_group"
    assert grp.estimate == pytest.approx(
        sum(ref[f"group:{g}"][0] * s for g, s in sizes.items()) / sum(sizes.values()),
        abs=1e-10)
    # every headline's SE is the delta method over the same covariance: the event
    # covariance is what the honest sensitivity analysis reads
    assert list(ev.event_cov.index) == ["ev+0", "ev+1", "ev+2", "ev+3"]
    w = np.full(4, 0.25)
    assert ev.std_error == pytest.approx(np.sqrt(w @ ev.event_cov.to_numpy() @ w), rel=1e-12)


def test_never_treated_pretrend_wald(mpdta):
    # b <- coef(mod)[pre]; V <- vcov(mod)[pre, pre]; t(b) %*% solve(V, b) / 5 for the five
    # placebo cells (year < first.treat) of etwfe(lemp ~ 1, ..., cgroup = "never")
    # (and of etwfe(lemp ~ lpop, ..., fe = "none", cgroup = "never"))
    e = ETWFE("lemp", fe="cohort", control_group="nevertreated").fit(mpdta)
    assert e.diagnostics["pretrend_df1"] == 5
    assert e.diagnostics["pretrend_F"] == pytest.approx(R_PRETREND_F["lin_nv_nox"], rel=1e-9)
    x = ETWFE("lemp", controls=("lpop",), fe="cohort", control_group="nevertreated").fit(mpdta)
    assert x.diagnostics["pretrend_F"] == pytest.approx(R_PRETREND_F["lin_nv_none"], rel=1e-9)
    # the placebo event times are reported and ev-1 is the reference
    ev = e.terms.dropna(subset=["event_time"])
    assert sorted(ev["event_time"]) == [-4, -3, -2, 0, 1, 2, 3]


def test_identities_with_callaway_santanna_sun_abraham_and_imputation(mpdta):
    # never-treated comparisons, no controls: each post cell is CS's ATT(g,t) (base g-1)
    # and each event time is Sun-Abraham's; not-yet-treated comparisons, no controls, unit
    # effects: the imputation estimator (Wooldridge 2021, Borusyak et al. 2024)
    never = ETWFE("lemp", control_group="nevertreated").fit(mpdta).terms.set_index("term")
    cs = CallawaySantAnna("lemp").fit(mpdta).terms.set_index("term")
    for g in (2004, 2006, 2007):
        for t in range(g, 2008):
            assert never.loc[f"ATT({g},{t})", "estimate"] == pytest.approx(
                cs.loc[f"group_time:{g}:{t}", "estimate"], abs=1e-12)
    assert never.loc["ATT", "estimate"] == pytest.approx(cs.loc["simple:ATT", "estimate"],
                                                         abs=1e-12)
    sa = SunAbraham("lemp").fit(mpdta).terms.set_index("term")
    for e in (-4, -3, -2, 0, 1, 2, 3):
        assert never.loc[f"ev{e:+d}", "estimate"] == pytest.approx(
            sa.loc[f"ev{e:+d}", "estimate"], abs=1e-12)
    ny = ETWFE("lemp").fit(mpdta)
    imp = Imputation("lemp", pretrend_leads=0).fit(mpdta)
    assert ny.estimate == pytest.approx(imp.estimate, abs=1e-12)
    it = imp.terms.set_index("term")
    for e in range(4):
        assert ny.terms.set_index("term").loc[f"ev+{e}", "estimate"] == pytest.approx(
            it.loc[f"ev+{e}", "estimate"], abs=1e-12)


def test_unit_and_cohort_effects_agree_in_a_balanced_panel_without_varying_controls(staggered):
    # two-way Mundlak equivalence (Wooldridge 2021): cohort dummies = unit effects
    a = ETWFE("lnce", fe="unit").fit(staggered)
    b = ETWFE("lnce", fe="cohort").fit(staggered)
    pd.testing.assert_series_equal(a.terms["estimate"], b.terms["estimate"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["linear", "poisson"])
def test_no_never_treated_uses_the_last_cohort(mpdta, family):
    p = mpdta[mpdta["cohort"] > 0]
    outcome = "lemp" if family == "linear" else "emp"
    e = ETWFE(outcome, controls=("lpop",), fe="cohort", family=family).fit(p)
    assert e.n_obs == 764
    assert any("last cohort (2007)" in n for n in e.notes)
    for term, (ref, ref_se) in R_NO_NEVER[family].items():
        got, got_se = _term(e.terms.set_index("term"), term)
        assert got == pytest.approx(ref, rel=1e-8, abs=1e-8), term
        assert got_se == pytest.approx(ref_se, rel=1e-6), term
    with pytest.raises(EstimationError, match="nevertreated.*needs never-treated"):
        ETWFE("lemp", control_group="nevertreated").fit(p)


def test_options_are_checked_by_name():
    for kw, name in ((dict(control_group="never"), "control_group"),
                     (dict(family="logit"), "family"), (dict(fe="firm"), "fe"),
                     (dict(aggregation="dynamic"), "aggregation"),
                     (dict(controls=("y",)), "controls"),
                     (dict(family="poisson", fe="unit"), "fe"),
                     (dict(family="poisson", se="conventional"), "se"),
                     (dict(alpha=0), "alpha")):
        with pytest.raises(OptionError, match=name):
            ETWFE("y", **kw).check()


def test_poisson_refuses_negative_and_separated_outcomes(mpdta):
    with pytest.raises(EstimationError, match="non-negative"):
        ETWFE("lemp", family="poisson").fit(mpdta.assign(lemp=mpdta["lemp"] - 9))
    zero = mpdta.assign(emp=np.where((mpdta["cohort"] == 2004) & (mpdta["time"] == 2005), 0.0,
                                     mpdta["emp"]))
    with pytest.raises(EstimationError, match="cohort 2004 in period 2005.*separation"):
        ETWFE("emp", family="poisson").fit(zero)


def test_poisson_irls_solves_the_score_equations():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(400), rng.standard_normal((400, 3))])
    y = rng.poisson(np.exp(x @ np.array([1.0, 0.5, -0.3, 0.2])))
    theta, mu, _ = poisson_irls(y.astype(float), x)
    assert np.abs(x.T @ (y - mu)).max() < 1e-8 * np.abs(x.T @ y).max()
    assert np.allclose(mu, np.exp(x @ theta))


def test_estimand_matches_the_staggered_truth(staggered):
    from estimators.callaway_santanna import staggered_truth

    truth = ETWFE("lnce").estimand(staggered)
    ref = staggered_truth(staggered, "lnce")
    for key in ("ATT", "ATT_dynamic", "ATT_group", "ATT_calendar", "ev+0", "ev+3"):
        assert truth[key] == pytest.approx(ref[key], abs=1e-12), key


# --- Monte Carlo -------------------------------------------------------------------------------

def city_design(never: bool = True) -> Design:
    """282 cities in three cohorts (2011, 2014, 2017; 5% never treated), effects growing
    with exposure: the design of tests/test_staggered.py where TWFE gets the wrong sign."""
    from experiments.build import _draw_city
    from simulate.design import Assignment, Timing

    draw = functools.partial(_draw_city, CityDGP(cohort_design="thirds", never_share=0.05),
                             Assignment(), Timing(kind="market_open"),
                             Effect(att=0.0, dynamics="growing", slope=0.06))
    ests = {("nqpf", "twfe"): TWFE("nqpf"), ("nqpf", "etwfe"): ETWFE("nqpf")}
    if never:
        ests[("nqpf", "etwfe_never")] = ETWFE("nqpf", control_group="nevertreated",
                                              label="etwfe_never")
    return Design(draw, ests)


def test_growing_effects_twfe_wrong_sign_etwfe_unbiased():
    diag = diagnose(run_reps(city_design(never=False), 8, range(30))).query(
        "term == 'ATT'").set_index("estimator")
    assert diag.loc["twfe", "mean_truth"] > 0.2 and diag.loc["twfe", "mean_estimate"] < 0
    assert abs(diag.loc["etwfe", "bias"]) < 3 * diag.loc["etwfe", "bias_mcse"] + 1e-3


def multiplicative_panel(rng: np.random.Generator, n: int = 240, periods: int = 8) -> pd.DataFrame:
    """A positive, skewed outcome with multiplicative unit, period and treatment effects:
    parallel trends hold for log E[y] but not for E[y] (the cohorts start at different
    levels and share a 10% yearly growth), and the effects differ by cohort and grow with
    exposure. ``te_y`` is each observation's effect on the mean given its unit effect."""
    years = np.arange(2001, 2001 + periods)
    cohort_of = np.array([0, 2004, 2006])[np.arange(n) % 3]
    level = np.select([cohort_of == 2004, cohort_of == 2006], [2.0, 1.5], 1.0)
    a = level + 0.5 * rng.standard_normal(n)
    unit = np.repeat(np.arange(n), periods)
    time = np.tile(years, n)
    g = cohort_of[unit]
    d = ((g > 0) & (time >= g)).astype(int)
    e = np.where(g > 0, time - g, 0)
    tau = np.where(g == 2004, -0.1 - 0.05 * e, -0.2 - 0.02 * e) * d
    mu0 = np.exp(a[unit] + 0.1 * (time - 2001))
    sigma = 0.3  # lognormal noise with mean one
    y = mu0 * np.exp(tau) * np.exp(sigma * rng.standard_normal(n * periods) - sigma**2 / 2)
    return pd.DataFrame({"unit": unit, "time": time, "cohort": g, "d": d, "y": y,
                         "te_y": mu0 * (np.exp(tau) - 1)})


def _poisson_mc(reps: range) -> dict[str, np.ndarray]:
    out: dict[str, list] = {"poisson": [], "linear": []}
    for r in reps:
        p = multiplicative_panel(np.random.default_rng(r))
        for fam in out:
            est = ETWFE("y", family=fam)
            f = est.fit(p)
            truth = est.estimand(p)["ATT"]
            out[fam].append((f.estimate - truth, f.conf_low <= truth <= f.conf_high))
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def test_poisson_unbiased_where_linear_parallel_trends_fail():
    res = _poisson_mc(range(40))
    err = res["poisson"][:, 0]
    assert abs(err.mean()) < 3 * err.std(ddof=1) / np.sqrt(err.size)
    lin = res["linear"][:, 0]
    assert lin.mean() > 10 * lin.std(ddof=1) / np.sqrt(lin.size)  # linear ETWFE: biased


@pytest.mark.slow
def test_poisson_covers_at_nominal_rate():
    n = 400
    res = _poisson_mc(range(n))
    lo, hi = binomial_band(0.95, n)
    assert lo <= res["poisson"][:, 1].mean() <= hi
    err = res["poisson"][:, 0]
    assert abs(err.mean()) < 3 * err.std(ddof=1) / np.sqrt(n)


@pytest.mark.slow
def test_etwfe_covers_at_nominal_rate():
    n = 300
    diag = diagnose(run_reps(city_design(), 9, range(n))).query("term == 'ATT'").set_index(
        "estimator")
    lo, hi = binomial_band(0.95, n)
    for label in ("etwfe", "etwfe_never"):
        assert lo <= diag.loc[label, "coverage"] <= 1.0, label
        assert abs(diag.loc[label, "bias"]) < 3 * diag.loc[label, "bias_mcse"], label
    assert diag.loc["twfe", "coverage"] < lo
