"""Right answers on the panel shapes applied work meets: always-treated units, gaps between
years, no never-treated unit, a single treated unit. Each case gives the reference answer
or one clear refusal -- never a number computed on a silently altered design."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from estimators import catalog
from estimators.callaway_santanna import CallawaySantAnna
from estimators.event_study import EventStudy
from estimators.imputation import Imputation
from estimators.panel import EstimationError, PanelError, check_panel
from estimators.sun_abraham import SunAbraham
from simulate.design import Effect, Timing
from simulate.province import draw_province
from tests.test_contract import make


@pytest.fixture(scope="module")
def stag() -> pd.DataFrame:
    p = draw_province(np.random.default_rng(7), timing=Timing(kind="market_open"),
                      effect=Effect(dynamics="ramp"))
    return p.assign(east=(p["unit"] % 2).astype(int))


def _fit(est, panel):
    rng = np.random.default_rng(0) if catalog.capabilities(est).needs_rng else None
    return est.fit(panel, rng=rng)


# --- 1. always-treated units ----------------------------------------------------------------

@pytest.mark.parametrize("kind", [e.kind for e in catalog.entries()
                                  if e.kind not in ("oaxaca", "changes_in_changes")
                                  and not e.capabilities.switching])
def test_always_treated_units_are_excluded_with_a_note(stag, kind):
    """Four never-treated provinces made treated from the first year: every estimator gives
    exactly its answer on the panel without them, and says how many it excluded. (Oaxaca is
    descriptive -- pilots against the rest -- and changes-in-changes needs one date;
    estimators of switching treatment (dCDH) use units treated from the start as the
    comparisons of units that switch off, and are tested in tests/test_dcdh.py.)"""
    never = sorted(stag.loc[stag["cohort"] == 0, "unit"].unique())[:4]
    always = stag.copy()
    always.loc[always["unit"].isin(never), ["cohort", "d"]] = [2000, 1]
    without = stag[~stag["unit"].isin(never)]
    est = make(catalog.entry(kind))
    a, b = _fit(est, always), _fit(est, without)
    assert a.estimate == b.estimate and a.std_error == b.std_error
    assert any("4 always-treated unit(s)" in n and "excluded" in n for n in a.notes)
    if catalog.entry(kind).capabilities.truth:
        np.testing.assert_equal(est.estimand(always), est.estimand(without))  # NaN == NaN


def test_only_always_treated_units_is_refused(stag):
    p = stag.assign(cohort=np.where(stag["cohort"] > 0, 2000, 0))
    p["d"] = (p["cohort"] > 0).astype(int)
    with pytest.raises(EstimationError, match="always-treated unit.*no other treated unit"):
        SunAbraham("lnce").fit(p)


# --- 2. gaps between years --------------------------------------------------------------------

def biennial(panel: pd.DataFrame) -> pd.DataFrame:
    """The same panel relabelled to every other year (t -> 2t - 2000), cohorts likewise."""
    out = panel.copy()
    out["time"] = 2 * out["time"] - 2000
    out["cohort"] = np.where(out["cohort"] > 0, 2 * out["cohort"] - 2000, 0)
    return out


@pytest.mark.parametrize("make_est", [
    lambda: EventStudy("lnce", leads=4, lags=4),
    lambda: EventStudy("lnce", leads=None, lags=None),
    lambda: SunAbraham("lnce"),
    lambda: Imputation("lnce", pretrend_leads=3),
    lambda: CallawaySantAnna("lnce", aggregation="dynamic"),
    lambda: CallawaySantAnna("lnce", base_period="universal"),
])
def test_event_time_counts_periods_not_years(stag, make_est):
    """Relabelling years to a two-year step changes no number: event time -1 is the period
    before treatment (before, the calendar reference -1 had no rows and a post period was
    silently made the reference)."""
    est = make_est()
    a, b = est.fit(stag), est.fit(biennial(stag))
    assert b.estimate == pytest.approx(a.estimate, abs=1e-12)
    assert b.std_error == pytest.approx(a.std_error, abs=1e-12)
    ev_a = a.terms.dropna(subset=["event_time"]).set_index("event_time")["estimate"]
    ev_b = b.terms.dropna(subset=["event_time"]).set_index("event_time")["estimate"]
    pd.testing.assert_series_equal(ev_a, ev_b, atol=1e-12, rtol=0)
    for key in ("pretrend_p", "pretrend_F", "pretrend_chi2"):
        if key in a.diagnostics:
            assert b.diagnostics[key] == pytest.approx(a.diagnostics[key], abs=1e-10)


def test_irregular_gaps_count_positions(stag):
    """Years 2000..2018 with 2001 and 2003 missing: event time counts observed periods."""
    kept = stag[~stag["time"].isin([2001, 2003])]
    es = EventStudy("lnce", leads=3, lags=3).fit(kept)
    rel = es.terms.dropna(subset=["event_time"])["event_time"]
    assert sorted(rel) == [-3, -2, 0, 1, 2, 3]


def test_cohort_between_periods_is_refused(stag):
    p = biennial(stag)
    p.loc[p["cohort"] == 2026, "cohort"] = 2025  # treated in a year the survey skips
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    for est in (EventStudy("lnce"), SunAbraham("lnce"), CallawaySantAnna("lnce")):
        with pytest.raises(EstimationError, match="cohort 2025 does not fall on the panel's periods"):
            est.fit(p)


# --- 3-5. Callaway-Sant'Anna ----------------------------------------------------------------

def test_universal_base_period_estimates_every_period(stag):
    """R did's att_gt with base_period = "universal" returns ATT(g, t) for every g and t,
    the base period's as 0: groups x periods cells; the pre-test uses the non-base
    pre-period cells."""
    est = CallawaySantAnna("lnce", base_period="universal").fit(stag)
    cells = est.terms[est.terms["aggregation"] == "group_time"]
    n_groups, n_periods = stag.loc[stag["cohort"] > 0, "cohort"].nunique(), stag["time"].nunique()
    assert len(cells) == n_groups * n_periods
    first = cells[cells["term"].str.endswith(":2000")]
    assert len(first) == n_groups and first["estimate"].ne(0).all()
    base = cells[cells["term"].isin([f"group_time:{g}:{g - 1}" for g in (2013, 2014)])]
    assert (base["estimate"] == 0).all()
    # ev-1 is the reference of the dynamic aggregation, not an estimate
    dyn = est.terms[est.terms["aggregation"] == "dynamic"]
    assert "dynamic:-1" not in set(dyn["term"])


def test_not_yet_treated_without_never_treated_units(stag):
    """No never-treated unit: the last cohort's periods from its start have no comparison
    and drop out, as in R did; no ZeroDivisionError."""
    treated_only = stag[stag["cohort"] > 0]
    est = CallawaySantAnna("lnce", control_group="notyettreated").fit(treated_only)
    cells = est.terms[est.terms["aggregation"] == "group_time"]
    last = treated_only["cohort"].max()
    assert not cells["term"].str.startswith(f"group_time:{last}:{last}").any()
    assert np.isfinite(est.estimate) and np.isfinite(est.std_error)
    groups = est.terms[(est.terms["aggregation"] == "group") & (est.terms["term"] != "group:overall")]
    assert list(groups["term"]) == [f"group:{treated_only['cohort'].min()}"]


def test_singular_pretest_is_explained(stag):
    treated_only = stag[stag["cohort"] > 0]
    wald = CallawaySantAnna("lnce", control_group="notyettreated", pretest="wald")
    est = wald.fit(treated_only)
    assert "pretrend_p" not in est.diagnostics and "pretrend_wald_p" not in est.diagnostics
    assert any("pre-test of parallel trends not computed" in n and "singular" in n
               for n in est.notes)
    # the max-|t| test needs no inverse: it is there
    assert "pretrend_sidak_p" in est.diagnostics


# --- 7. values as the user wrote them ---------------------------------------------------------

def test_error_messages_show_plain_values():
    p = pd.DataFrame({"unit": [0, 0, 1, 1], "time": [2005, 2006, 2005, 2006],
                      "cohort": [0, 0, 0, 0], "d": [0, 0, 0, 0], "y": [1.0, np.nan, 1.0, 2.0]})
    with pytest.raises(PanelError) as info:
        check_panel(p, ("y",), ())
    assert "(unit=0, time=2006)" in str(info.value) and "np." not in str(info.value)


# --- 6. placebo with one treated unit -----------------------------------------------------------

def test_placebo_with_one_treated_unit_skips_leave_one_out(tmp_path):
    """Leave-one-out needs two treated units: it is skipped with its reason, and the timing
    placebo and randomization inference are written; a file's own outcomes are used."""
    from experiments.run import compose, run

    cfg = compose(["data=example", "experiment=placebo", "data.treated_units=[Beijing]",
                   "experiment.placebo.n_perm=99", "experiment.figures=false"])
    out = run(cfg, tmp_path)
    assert set(out["timing"]["outcome"]) == {"lnce", "lncei"}
    assert (tmp_path / "placebo_randomization.csv").exists()
    assert not (tmp_path / "leave_one_out.csv").exists()
    skipped = out["skipped"]
    assert set(skipped["test"]) == {"leave one out"}
    text = (tmp_path / "report.md").read_text()
    assert "do not apply to this panel" in text


# --- against R's did and fixest on mpdta (tests/data/mpdta.csv) --------------------------------
# Reference numbers: R 4.2.2, did 2.5.1, fixest 0.12.2; the R calls are written beside each.

@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    from pathlib import Path

    raw = pd.read_csv(Path(__file__).resolve().parent / "data" / "mpdta.csv")
    p = pd.DataFrame({"unit": raw["countyreal"], "time": raw["year"],
                      "cohort": raw["first.treat"], "lemp": raw["lemp"],
                      "w": np.exp(raw["lpop"])})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


#: the 10 never-treated counties made "always treated" (first.treat = 2003)
ALWAYS = [13011, 13013, 13019, 13021, 13037, 13039, 13049, 13057, 13077, 13079]


def with_always_treated(p: pd.DataFrame) -> pd.DataFrame:
    out = p.copy()
    m = out["unit"].isin(ALWAYS)
    out.loc[m, "cohort"] = 2003
    out.loc[m, "d"] = 1
    return out


def test_mpdta_callaway_santanna_matches_r_did(mpdta):
    # att_gt(yname="lemp", tname="year", idname="countyreal", gname="first.treat",
    #        data=mpdta, control_group="nevertreated", bstrap=FALSE)
    # aggte(., type="simple"): -0.03995127516 (0.01203401277)
    # aggte(., type="dynamic"): -0.07723982146 (0.01996498906)
    s = CallawaySantAnna("lemp").fit(mpdta)
    assert s.estimate == pytest.approx(-0.03995127516, abs=1e-9)
    assert s.std_error == pytest.approx(0.01203401277, rel=1e-6)
    d = CallawaySantAnna("lemp", aggregation="dynamic").fit(mpdta)
    assert d.estimate == pytest.approx(-0.07723982146, abs=1e-9)
    assert d.std_error == pytest.approx(0.01996498906, rel=1e-6)


def test_mpdta_always_treated_counties_are_dropped_as_r_did(mpdta):
    # R did on the data with 10 never-treated counties given first.treat = 2003 warns
    # "Dropped 10 units that were already treated in the first period." and gives
    # simple -0.04049968991 (0.01189886078), dynamic -0.07643280242 (0.01990565174);
    # fixest on the data without them: sunab ATT -0.04049968991 (0.01169187219).
    p = with_always_treated(mpdta)
    s = CallawaySantAnna("lemp").fit(p)
    assert s.estimate == pytest.approx(-0.04049968991, abs=1e-9)
    assert s.std_error == pytest.approx(0.01189886078, rel=1e-6)
    assert any("10 always-treated unit(s)" in n for n in s.notes)
    d = CallawaySantAnna("lemp", aggregation="dynamic").fit(p)
    assert d.estimate == pytest.approx(-0.07643280242, abs=1e-9)
    assert d.std_error == pytest.approx(0.01990565174, rel=1e-6)
    sa = SunAbraham("lemp").fit(p)
    assert sa.estimate == pytest.approx(-0.04049968991, abs=1e-9)
    assert sa.std_error == pytest.approx(0.01169187219, rel=1e-6)
    assert any("10 always-treated unit(s)" in n for n in sa.notes)
    # (the issue's -0.0324 came from keeping the 2003 cohort as treated; not a number to get)


def test_mpdta_sun_abraham_matches_fixest(mpdta):
    # feols(lemp ~ sunab(first.treat, year) | countyreal + year, mpdta, cluster=~countyreal)
    # summary(., agg = "ATT"): -0.03995127516 (0.01179627744); rel 2: -0.137258738889
    # (0.03658947596)
    sa = SunAbraham("lemp").fit(mpdta)
    assert sa.estimate == pytest.approx(-0.03995127516, abs=1e-9)
    assert sa.std_error == pytest.approx(0.01179627744, rel=1e-6)
    t = sa.terms.set_index("term")
    assert t.loc["ev+2", "estimate"] == pytest.approx(-0.137258738889, abs=1e-9)
    assert t.loc["ev+2", "std_error"] == pytest.approx(0.03658947596, rel=1e-6)


@pytest.mark.parametrize("relabel", [False, True])
def test_mpdta_event_study_matches_fixest_on_even_years(mpdta, relabel):
    # d$rel <- ifelse(first.treat == 0, -1000, year - first.treat)
    # es <- feols(lemp ~ i(rel, ref = c(-1, -1000)) | countyreal + year, d, cluster=~countyreal)
    # mean of rel 0..3: -0.07141448788 (0.01813897086); wald(es, keep = "rel::-"):
    # F = 1.631565611 on (3, 1989), p = 0.1800380736. With years relabelled 2004, 2006, ...
    # and rel counted in periods, fixest gives the same numbers bit for bit. didlab refers
    # F to F(3, G - 1 = 499), as Stata's test after xtreg/reghdfe does; fixest's wald()
    # uses the residual degrees of freedom, hence its p-value from the same F.
    p = biennial(mpdta.assign(time=mpdta["time"] - 1000, cohort=np.where(
        mpdta["cohort"] > 0, mpdta["cohort"] - 1000, 0))) if relabel else mpdta
    es = EventStudy("lemp", leads=None, lags=None).fit(p)
    assert es.estimate == pytest.approx(-0.07141448788, abs=1e-9)
    assert es.std_error == pytest.approx(0.01813897086, rel=1e-6)
    assert es.diagnostics["pretrend_F"] == pytest.approx(1.631565611, rel=1e-7)
    from scipy import stats

    assert stats.f.sf(es.diagnostics["pretrend_F"], 3, 1989) == pytest.approx(0.1800380736,
                                                                               rel=1e-6)
    assert es.diagnostics["pretrend_p"] == pytest.approx(
        stats.f.sf(es.diagnostics["pretrend_F"], 3, 499), rel=1e-12)


def test_mpdta_universal_base_period_matches_r_did(mpdta):
    # att_gt(..., base_period = "universal", bstrap = FALSE): 15 cells, the base cells 0;
    # pre-test W = 7.791236627, df 5, p = 0.1681224949 (the same with "varying", 12 cells)
    for base, n_cells in (("universal", 15), ("varying", 12)):
        e = CallawaySantAnna("lemp", base_period=base, pretest="wald").fit(mpdta)
        assert (e.terms["aggregation"] == "group_time").sum() == n_cells
        assert e.diagnostics["pretrend_df1"] == 5
        assert e.diagnostics["pretrend_chi2"] == pytest.approx(7.791236627, rel=1e-7)
        assert e.diagnostics["pretrend_p"] == pytest.approx(0.1681224949, rel=1e-6)
        assert e.diagnostics["pretrend_wald_p"] == e.diagnostics["pretrend_p"]
    t = CallawaySantAnna("lemp", base_period="universal").fit(mpdta).terms.set_index("term")
    assert t.loc["group_time:2007:2004", "estimate"] == pytest.approx(0.033813012276, abs=1e-9)
    assert t.loc["group_time:2006:2005", "estimate"] == 0


def test_cs_sidak_pretest_is_the_adjusted_max_t_over_pre_cells(mpdta):
    """pretest="sidak" (default): p = 1 - (1 - p_min)^q over the q pre-period ATT(g,t),
    p_min the smallest two-sided p-value of the cells with the small-cohort correction; the
    Wald test (R did's Wpval) stays in the diagnostics."""
    from scipy import stats

    e = CallawaySantAnna("lemp").fit(mpdta)
    cells = e.terms[e.terms["aggregation"] == "group_time"]
    g, t = (cells["level"].str.split(":", expand=True).astype(int)[i] for i in (0, 1))
    pre = cells[(t < g).to_numpy()]
    assert len(pre) == e.diagnostics["pretrend_df1"] == 5
    # each cell: t * sqrt((n_g - 1) / n_g) against t(n_g - 1), n_g the cohort's units
    n_g = mpdta.groupby("cohort")["unit"].nunique().reindex(g[(t < g).to_numpy()]).to_numpy()
    tt = np.abs(pre["estimate"] / pre["std_error"]).to_numpy() * np.sqrt((n_g - 1) / n_g)
    p_min = (2 * stats.t.sf(tt, n_g - 1)).min()
    assert e.diagnostics["pretrend_p"] == pytest.approx(1 - (1 - p_min) ** 5, rel=1e-10)
    assert e.diagnostics["pretrend_sidak_p"] == e.diagnostics["pretrend_p"]
    assert e.diagnostics["pretrend_wald_p"] == pytest.approx(0.1681224949, rel=1e-6)  # R did



def test_mpdta_not_yet_treated_without_never_treated_matches_r_did(mpdta):
    # att_gt(..., data = mpdta[mpdta$first.treat != 0, ], control_group = "notyettreated",
    #        bstrap = FALSE): six cells (the 2007 cohort only as a comparison, years from
    #        2007 dropped); simple -0.04179071495 (0.02045431507); pre-test W = 0.9977419525
    p = mpdta[mpdta["cohort"] > 0]
    e = CallawaySantAnna("lemp", control_group="notyettreated").fit(p)
    cells = e.terms[e.terms["aggregation"] == "group_time"]
    assert sorted(cells["term"]) == sorted(f"group_time:{g}:{t}" for g in (2004, 2006)
                                           for t in (2004, 2005, 2006))
    assert e.estimate == pytest.approx(-0.04179071495, abs=1e-9)
    assert e.std_error == pytest.approx(0.02045431507, rel=1e-6)
    assert e.diagnostics["pretrend_chi2"] == pytest.approx(0.9977419525, rel=1e-6)


def test_mpdta_weighted_event_study_and_sun_abraham_match_fixest(mpdta):
    # feols(lemp ~ i(rel, ref = c(-1, -1000)) | countyreal + year, d, weights = ~exp(lpop),
    #       cluster = ~countyreal): post mean -0.02001044594 (0.02098969997), lead Wald
    #       F = 1.135779052, p = 0.3332567013; weighted sunab ATT -0.01841258009 (0.01015318335)
    es = EventStudy("lemp", leads=None, lags=None, weights="w").fit(mpdta)
    assert es.estimate == pytest.approx(-0.02001044594, abs=1e-9)
    assert es.std_error == pytest.approx(0.02098969997, rel=1e-6)
    assert es.diagnostics["pretrend_F"] == pytest.approx(1.135779052, rel=1e-6)
    sa = SunAbraham("lemp", weights="w").fit(mpdta)
    assert sa.estimate == pytest.approx(-0.01841258009, abs=1e-9)
    assert sa.std_error == pytest.approx(0.01015318335, rel=1e-6)


def test_mpdta_weighted_callaway_santanna_matches_r_did(mpdta):
    # mpdta$w <- exp(mpdta$lpop); att_gt(..., weightsname = "w", control_group =
    #   "nevertreated", bstrap = FALSE): simple -0.01841258009 (0.01367130764), dynamic
    #   -0.03092209544 (0.01832609774), pre-test W = 15.44931343, p = 0.00861
    s = CallawaySantAnna("lemp", weights="w").fit(mpdta)
    assert s.estimate == pytest.approx(-0.01841258009, abs=1e-9)
    assert s.std_error == pytest.approx(0.01367130764, rel=1e-6)
    d = CallawaySantAnna("lemp", weights="w", aggregation="dynamic").fit(mpdta)
    assert d.estimate == pytest.approx(-0.03092209544, abs=1e-9)
    assert d.std_error == pytest.approx(0.01832609774, rel=1e-6)
    assert d.diagnostics["pretrend_chi2"] == pytest.approx(15.44931343, rel=1e-7)
    with pytest.raises(PanelError, match="constant within each unit"):
        CallawaySantAnna("lemp", weights="lemp").fit(mpdta)
