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

@pytest.mark.parametrize("kind", [k for k in catalog.kinds()
                                  if k not in ("oaxaca", "changes_in_changes")])
def test_always_treated_units_are_excluded_with_a_note(stag, kind):
    """Four never-treated provinces made treated from the first year: every estimator gives
    exactly its answer on the panel without them, and says how many it excluded. (Oaxaca is
    descriptive -- pilots against the rest -- and changes-in-changes needs one date.)"""
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
    est = CallawaySantAnna("lnce", control_group="notyettreated").fit(treated_only)
    assert "pretrend_p" not in est.diagnostics
    assert any("pre-test of parallel trends not computed" in n and "singular" in n
               for n in est.notes)


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
