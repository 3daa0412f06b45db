"""The province simulator: calibration to seed 002, accounting, truth, knobs; the treatment
assignment the three simulators share and the design knobs each of them accepts."""

import numpy as np
import pandas as pd
import pytest

from estimators.panel import OptionError, validate_panel
from simulate.calibrated import CalibratedDGP, draw_calibrated
from simulate.city import CITY_GROUPS, CityDGP, draw_city
from simulate.design import (KNOB_DEFAULTS, Assignment, DesignSupport, Effect, Timing,
                             assign_cohorts, pick_pilots, validate_design)
from simulate.emissions import EMISSION_FACTORS, FUELS, carbon_emissions
from simulate.province import (MARKET_OPENED, PILOTS, PROVINCES, TABLE3, ProvinceDGP,
                               draw_province, lognormal_params, true_att)


def test_table3_means_and_sds_within_15_percent():
    # seed 002 Table 3 (seed002_tables.yaml, descriptives), averaged over 100 draws
    stats = []
    for s in range(100):
        p = draw_province(np.random.default_rng(s))
        grp = np.where(p["pilot_profile"], "pilot", "non_pilot")
        stats.append(p.groupby(grp)[["pgdp", "people", "is2", "fdi", "tech", "es"]].agg(["mean", "std"]))
    avg = sum(stats) / len(stats)
    for group, targets in TABLE3.items():
        for var, (mean, sd) in targets.items():
            assert avg.loc[group, (var, "mean")] == pytest.approx(mean, rel=0.15), (group, var)
            assert avg.loc[group, (var, "std")] == pytest.approx(sd, rel=0.15), (group, var)


def test_lognormal_params_hit_population_moments():
    years = np.arange(2000, 2019)
    m, s = lognormal_params(5.1, 3.4, 0.09, 0.03, years, n_units=10**9)
    rng = np.random.default_rng(0)
    a = m + s * rng.standard_normal(400_000)
    tau = rng.choice(years - years.mean(), 400_000)
    x = np.exp(a + 0.09 * tau + 0.03 * rng.standard_normal(400_000))
    assert x.mean() == pytest.approx(5.1, rel=0.01)
    assert x.std() == pytest.approx(3.4, rel=0.02)


def test_carbon_formula_by_hand():
    fuels = {f: np.array([0.0]) for f in FUELS}
    fuels["coal"] = np.array([100.0])
    fuels["natural_gas"] = np.array([10.0])
    # 100 * 0.7143 * 0.7559 + 10 * 1.2143 * 0.4483 (seed 002, Table 2)
    assert carbon_emissions(fuels)[0] == pytest.approx(53.99393700 + 5.44370690, rel=1e-12)
    assert EMISSION_FACTORS["coke"] == (0.9714, 0.8550)


def test_emissions_are_the_formula_of_the_fuels(province):
    fuels = {f: province[f].to_numpy() for f in FUELS}
    np.testing.assert_allclose(carbon_emissions(fuels), province["ce"], rtol=1e-12)
    np.testing.assert_allclose(np.log(province["ce"]), province["lnce"], rtol=1e-12)
    np.testing.assert_allclose(province["lncei"], province["lnce"] - np.log(province["gdp"]), rtol=1e-12)
    # coal share of standard-coal energy equals the covariate es
    sce = sum(province[f] * EMISSION_FACTORS[f][0] for f in FUELS)
    np.testing.assert_allclose(province["coal"] * EMISSION_FACTORS["coal"][0] / sce, province["es"],
                               rtol=1e-10)


def test_panel_contract_and_shape(province):
    info = validate_panel(province, ["lnce", "lncei"], ["lnpgdp", "lnes"])
    assert (info.n_units, info.n_periods, info.n_obs) == (30, 19, 570)
    assert set(province.loc[province["cohort"] > 0, "province"]) == set(PILOTS)
    assert info.cohorts == (2011,)


def test_truth_columns(province):
    np.testing.assert_allclose(province["y0_lnce"] + province["te_lnce"], province["lnce"], atol=1e-10)
    assert (province.loc[province["d"] == 0, "te_lnce"] == 0).all()
    assert true_att(province, "lnce") == pytest.approx(-0.3)


def test_deterministic_given_generator():
    a = draw_province(np.random.default_rng(5))
    b = draw_province(np.random.default_rng(5))
    c = draw_province(np.random.default_rng(6))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["lnce"], c["lnce"])


def test_market_open_timing():
    p = draw_province(np.random.default_rng(1), timing=Timing(kind="market_open"))
    cohorts = p.groupby("province")["cohort"].first()
    assert cohorts["Beijing"] == 2013 and cohorts["Hubei"] == 2014 and cohorts["Chongqing"] == 2014
    late = draw_province(np.random.default_rng(1),
                         timing=Timing(kind="market_open", open_rule="first_full_half"))
    # openings after 30 June (Beijing, Tianjin, Shanghai, Guangdong in Nov/Dec 2013) count from 2014
    assert set(late.groupby("province")["cohort"].first()[list(PILOTS)]) == {2014}


def test_anticipation_moves_the_effect_before_the_date():
    p = draw_province(np.random.default_rng(2), timing=Timing(year=2013, anticipation=2))
    pre = p[(p["cohort"] > 0) & (p["time"].isin([2011, 2012]))]
    assert (pre["d"] == 0).all() and np.allclose(pre["te_lnce"], -0.3)


def test_random_and_selected_pilots():
    rich = []
    for s in range(40):
        p = draw_province(np.random.default_rng(s), assignment=Assignment(kind="selected", strength=4.0))
        base = p[p["time"] == 2000].set_index("unit")["lnpgdp"]
        treated = p[p["time"] == 2000].set_index("unit")["cohort"] > 0
        rich.append(base[treated].mean() - base[~treated].mean())
        assert treated.sum() == 6
    assert np.mean(rich) > 0.5
    counts = np.zeros(30)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        counts[pick_pilots(np.arange(30.0), 6, 0.0, rng)] += 1
    assert counts.min() > 0.2 * 3000 * 0.6 and counts.max() < 0.2 * 3000 * 1.4


def test_effect_heterogeneity_and_dynamics():
    p = draw_province(np.random.default_rng(3), effect=Effect(dynamics="ramp", ramp_years=4))
    k = p["time"] - p["cohort"]
    treated = p[(p["cohort"] > 0) & (k >= 0)]
    np.testing.assert_allclose(treated.loc[k[treated.index] == 0, "te_lnce"], -0.075)
    np.testing.assert_allclose(treated.loc[k[treated.index] >= 3, "te_lnce"], -0.3)
    h = draw_province(np.random.default_rng(3), effect=Effect(het_sd=0.1))
    assert h.loc[h["d"] == 1].groupby("unit")["te_lnce"].first().std() > 0.02


def test_bad_knobs_are_named():
    with pytest.raises(OptionError, match="data.rho=1.2"):
        draw_province(np.random.default_rng(0), ProvinceDGP(rho=1.2))
    with pytest.raises(OptionError, match="assignment.kind='best'"):
        draw_province(np.random.default_rng(0), assignment=Assignment(kind="best"))
    with pytest.raises(OptionError, match="leave no pre- or post-treatment period"):
        draw_province(np.random.default_rng(0), timing=Timing(year=2030))
    with pytest.raises(OptionError, match="effect.dynamics"):
        draw_province(np.random.default_rng(0), effect=Effect(dynamics="wave"))


# --- the shared treatment assignment -----------------------------------------------------
# The two functions below are the simulators' own assignment code as it was before they
# shared simulate.design.assign_cohorts (range checks left out); the shared function must
# draw the same pilots and dates from the same generator, and leave it in the same state.

def _legacy_province(assignment, timing, baseline, rng, actual, open_dates):
    """simulate.province.assign before the change."""
    if assignment.kind == "actual":
        pilots, dates = actual, list(open_dates)
    else:
        strength = assignment.strength if assignment.kind == "selected" else 0.0
        z = (baseline - baseline.mean()) / baseline.std()
        pilots = pick_pilots(z, assignment.n_pilots, strength, rng)
        dates = [open_dates[i % len(open_dates)] for i in rng.permutation(len(pilots))]
    cohort = np.zeros(baseline.shape[0], dtype=np.int64)
    if timing.kind == "common":
        cohort[pilots] = timing.year
    else:
        for unit, (y, m, d) in zip(pilots, dates):
            late = (m, d) > (6, 30)
            cohort[unit] = y + 1 if (timing.open_rule == "first_full_half" and late) else y
    return cohort


def _legacy_keep_sizes(assignment, actual_cohort, score, rng):
    """draw_city's and draw_calibrated's assignment before the change: the actual cohorts
    (``actual_cohort``, 0 = never) go to random or selected units."""
    if assignment.kind == "actual":
        return actual_cohort
    strength = assignment.strength if assignment.kind == "selected" else 0.0
    z = (score - score.mean()) / (score.std() or 1.0)
    treated = pick_pilots(z, int((actual_cohort > 0).sum()), strength, rng)
    cohort = np.zeros(score.size, dtype=np.int64)
    cohort[treated] = rng.permutation(actual_cohort[actual_cohort > 0])
    return cohort


ASSIGNMENT_CASES = [Assignment(), Assignment(kind="random"), Assignment(kind="random", n_pilots=10),
                    Assignment(kind="selected"),
                    Assignment(kind="selected", n_pilots=3, strength=4.0)]
TIMING_CASES = [Timing(), Timing(year=2005), Timing(kind="market_open"),
                Timing(kind="market_open", open_rule="first_full_half")]


@pytest.mark.parametrize("assignment", ASSIGNMENT_CASES, ids=lambda a: f"{a.kind}-{a.n_pilots}")
@pytest.mark.parametrize("timing", TIMING_CASES, ids=lambda t: f"{t.kind}-{t.open_rule}-{t.year}")
def test_shared_assignment_draws_the_province_pilots_as_before(assignment, timing):
    actual = np.flatnonzero([p in PILOTS for p in PROVINCES])
    dates = [MARKET_OPENED[PROVINCES[i]] for i in actual]
    years = np.arange(2000, 2019)
    for seed in range(5):
        baseline = np.random.default_rng(100 + seed).normal(1.0, 0.5, len(PROVINCES))
        old_rng, new_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        old = _legacy_province(assignment, timing, baseline, old_rng, actual, dates)
        new = assign_cohorts(assignment, timing, years, actual, dates, baseline, new_rng,
                             n_pilots=assignment.n_pilots)
        np.testing.assert_array_equal(new, old)
        assert new_rng.bit_generator.state == old_rng.bit_generator.state


@pytest.mark.parametrize("assignment", [a for a in ASSIGNMENT_CASES if a.n_pilots == 6]
                         + [Assignment(kind="selected", strength=4.0)], ids=lambda a: a.kind)
@pytest.mark.parametrize("timing", TIMING_CASES[::2], ids=lambda t: t.kind)
def test_shared_assignment_keeps_city_and_calibrated_cohort_sizes_as_before(assignment, timing):
    years = np.arange(2004, 2023)
    # the city: pilot cities by opening date (random / selected keep the cohort sizes)
    pilots = np.arange(sum(count for count, _ in CITY_GROUPS.values()))
    dates = [date for count, date in CITY_GROUPS.values() for _ in range(count)]
    first = np.array([timing.year if timing.kind == "common" else y for y, _, _ in dates])
    # the calibrated panel: fitted cohorts, first treated years only
    fitted = np.array([2009] * 3 + [2012] * 4 + [2015] * 5)
    for n_units, actual, recorded, first_years in ((282, pilots, dates, first),
                                                   (40, np.arange(12), list(fitted), fitted)):
        if timing.kind == "common":
            first_years = np.full(first_years.size, timing.year)
        actual_cohort = np.zeros(n_units, dtype=np.int64)
        actual_cohort[actual] = first_years
        for seed in range(5):
            score = np.random.default_rng(200 + seed).standard_normal(n_units)
            old_rng, new_rng = np.random.default_rng(seed), np.random.default_rng(seed)
            old = _legacy_keep_sizes(assignment, actual_cohort, score, old_rng)
            new = assign_cohorts(assignment, timing, years, actual, recorded, score, new_rng)
            np.testing.assert_array_equal(new, old)
            assert new_rng.bit_generator.state == old_rng.bit_generator.state


def _cohorts(panel):
    c = panel.groupby("unit")["cohort"].first()
    return {int(u): int(g) for u, g in c[c > 0].items()}


def test_pilots_drawn_by_the_simulators_are_unchanged():
    # drawn with the simulators' own assignment code before they shared assign_cohorts
    p = draw_province(np.random.default_rng(0), assignment=Assignment(kind="selected"),
                      timing=Timing(kind="market_open"))
    assert _cohorts(p) == {9: 2013, 17: 2013, 18: 2014, 19: 2013, 20: 2013, 22: 2014}
    cov = {"x1": dict(mean_treated=1.0, mean_control=0.5, sd_treated=0.3, sd_control=0.4,
                      trend=0.02, rho=0.6, sigma=0.1),
           "x2": dict(mean_treated=0.0, mean_control=0.2, sd_treated=0.5, sd_control=0.5,
                      trend=0.0, rho=0.3, sigma=0.2)}
    dgp = CalibratedDGP(n_units=40, cohort_sizes={"2012": 4, "2009": 3, "2015": 5}, covariates=cov)
    c = draw_calibrated(np.random.default_rng(0), dgp, Assignment(kind="selected"))
    assert _cohorts(c) == {1: 2009, 2: 2015, 3: 2012, 6: 2012, 7: 2015, 8: 2015, 11: 2015,
                           12: 2009, 20: 2015, 22: 2009, 34: 2012, 39: 2012}
    city = draw_city(np.random.default_rng(0), CityDGP(n_cities=100), Assignment(kind="random"))
    assert _cohorts(city) == {
        1: 2013, 2: 2016, 4: 2014, 6: 2013, 17: 2013, 18: 2013, 19: 2016, 21: 2014, 23: 2016,
        26: 2013, 28: 2013, 33: 2013, 34: 2016, 35: 2013, 36: 2013, 39: 2014, 42: 2014,
        44: 2013, 45: 2014, 46: 2013, 47: 2013, 51: 2014, 55: 2016, 56: 2013, 59: 2014,
        60: 2013, 64: 2013, 65: 2014, 66: 2016, 68: 2014, 69: 2013, 71: 2014, 72: 2013,
        75: 2013, 76: 2013, 77: 2014, 78: 2016, 80: 2013, 81: 2013, 85: 2014, 88: 2013,
        89: 2016, 90: 2014, 93: 2013, 96: 2013, 98: 2016}


def test_city_dates_must_leave_pre_and_post_years():
    # the city's own assignment did not check this before it shared the province's
    with pytest.raises(OptionError, match="leave no pre- or post-treatment period inside 2009"):
        draw_city(np.random.default_rng(0), timing=Timing(year=2009))


# --- the design knobs each simulator accepts -----------------------------------------------

DRAW = {ProvinceDGP: draw_province, CityDGP: draw_city, CalibratedDGP: draw_calibrated}

REFUSED = [
    (ProvinceDGP(), Assignment(), Timing(), Effect(het_cohort=0.05),
     "effect.het_cohort=0.05 is ignored by data=province, which accepts only "
     "effect.het_cohort=0.0: effect.het_cohort is used by the city panel"),
    (CityDGP(), Assignment(), Timing(), Effect(het_pgdp=-0.1),
     "effect.het_pgdp=-0.1 is ignored by data=city, which accepts only effect.het_pgdp=0.0"),
    (CityDGP(), Assignment(kind="random", n_pilots=10), Timing(), Effect(),
     "assignment.n_pilots=10 is ignored by data=city, which accepts only assignment.n_pilots=6"),
    (CityDGP(), Assignment(n_pilots=3), Timing(), Effect(), "assignment.n_pilots=3"),
    (CityDGP(cohort_design="thirds"), Assignment(kind="selected"), Timing(), Effect(),
     "assignment.kind='selected' is ignored by data=city with data.cohort_design=thirds, "
     "which accepts only assignment.kind='actual'"),
    (CityDGP(cohort_design="thirds"), Assignment(), Timing(year=2012), Effect(),
     "timing.year=2012 is ignored by data=city with data.cohort_design=thirds"),
    (CityDGP(cohort_design="thirds"), Assignment(),
     Timing(kind="market_open", open_rule="first_full_half"), Effect(),
     "timing.open_rule='first_full_half' is ignored"),
    (CalibratedDGP(), Assignment(kind="selected", n_pilots=4), Timing(), Effect(),
     "assignment.n_pilots=4 is ignored by data=calibrated"),
    (CalibratedDGP(), Assignment(), Timing(kind="market_open", open_rule="first_full_half"),
     Effect(), "timing.open_rule='first_full_half' is ignored by data=calibrated"),
    (CalibratedDGP(), Assignment(), Timing(), Effect(het_pgdp=0.2),
     "effect.het_pgdp=0.2 is ignored by data=calibrated"),
    (CalibratedDGP(), Assignment(), Timing(), Effect(het_cohort=0.05),
     "effect.het_cohort=0.05 is ignored by data=calibrated"),
]


@pytest.mark.parametrize("dgp,assignment,timing,effect,message", REFUSED,
                         ids=[m.split(" is")[0] + "-" + type(c[0]).__name__ for *c, m in REFUSED])
def test_ignored_knobs_are_refused_with_one_line_naming_them(dgp, assignment, timing, effect,
                                                            message):
    with pytest.raises(OptionError) as err:
        validate_design(dgp, assignment, timing, effect)
    assert message in str(err.value) and "\n" not in str(err.value)
    # and each simulator refuses them itself, before drawing
    draw = DRAW[type(dgp)]
    with pytest.raises(OptionError, match=message.split(" is ignored")[0]):
        draw(np.random.default_rng(0), dgp, assignment, timing, effect)


ACCEPTED = [
    (ProvinceDGP(), Assignment(), Timing(), Effect()),
    (ProvinceDGP(), Assignment(kind="selected", n_pilots=10, strength=4.0),
     Timing(kind="market_open", open_rule="first_full_half", anticipation=1),
     Effect(het_pgdp=-0.1, het_sd=0.05, dynamics="ramp")),
    (CityDGP(), Assignment(), Timing(kind="market_open"), Effect()),
    (CityDGP(), Assignment(), Timing(), Effect()),
    # the assignment configs (conf/assignment/*.yaml) set n_pilots and strength to defaults
    (CityDGP(), Assignment(kind="selected", n_pilots=6, strength=4.0),
     Timing(kind="market_open", open_rule="first_full_half"), Effect(het_cohort=0.05, het_sd=0.1)),
    (CityDGP(cohort_design="thirds"), Assignment(), Timing(kind="market_open", anticipation=2),
     Effect(dynamics="growing", het_cohort=0.05)),
    (CalibratedDGP(), Assignment(), Timing(kind="market_open"), Effect()),
    (CalibratedDGP(), Assignment(kind="selected", strength=1.5), Timing(year=2012, anticipation=1),
     Effect(het_sd=0.05)),
]


@pytest.mark.parametrize("dgp,assignment,timing,effect", ACCEPTED)
def test_defaults_and_honoured_knobs_pass(dgp, assignment, timing, effect):
    validate_design(dgp, assignment, timing, effect)
    draw = DRAW[type(dgp)]
    assert not draw(np.random.default_rng(0), dgp, assignment, timing, effect).empty


def test_range_checks_still_come_first_and_only_where_read():
    with pytest.raises(OptionError, match="assignment.kind='best'"):
        validate_design(CityDGP(cohort_design="thirds"), Assignment(kind="best"), Timing(),
                        Effect())
    with pytest.raises(OptionError, match="assignment.n_pilots=30 must lie between 1 and 29"):
        validate_design(ProvinceDGP(), Assignment(kind="random", n_pilots=30), Timing(), Effect())
    # a small calibrated panel does not draw n_pilots pilots, so the default 6 may exceed it
    validate_design(CalibratedDGP(n_units=5, cohort_sizes={"2011": 2}), Assignment(kind="random"),
                    Timing(), Effect())


def test_declarations_name_real_knobs():
    assert {"assignment.n_pilots", "timing.open_rule", "effect.het_cohort"} <= set(KNOB_DEFAULTS)
    assert ProvinceDGP().design_support().honours == set(KNOB_DEFAULTS) - {"effect.het_cohort"}
    assert "effect.het_cohort" in CityDGP().design_support().honours
    with pytest.raises(ValueError, match="unknown design knobs"):
        DesignSupport("data=x", 10, {"effect.het_gdp": "typo"})


def test_sigma_size_scales_the_error_by_population_without_new_draws():
    """data.sigma_size rescales the outcome's AR(1) error by province population (no new
    random numbers): with sigma_size = 1 a province's error is the homoskedastic one times
    s_i = (P_i / geometric mean P)^(-1/2), with 2 times s_i^2, so the two differences from
    the homoskedastic draw have the ratio s_i + 1 in every year."""
    import numpy as np

    from simulate.province import ProvinceDGP, draw_province

    draws = [draw_province(np.random.default_rng(3), dgp=ProvinceDGP(sigma_size=k))
             for k in (0.0, 1.0, 2.0)]
    assert (draws[0]["lnpgdp"] == draws[1]["lnpgdp"]).all()
    assert (draws[0]["cohort"] == draws[2]["cohort"]).all()
    d1 = draws[1]["y0_lnce"] - draws[0]["y0_lnce"]
    d2 = draws[2]["y0_lnce"] - draws[0]["y0_lnce"]
    log_pop = draws[0].groupby("unit")["lnpeople"].first()
    s = np.exp(-0.5 * (log_pop - log_pop.mean()))
    expected = draws[0]["unit"].map(s + 1)
    ok = d1.abs() > 1e-9
    np.testing.assert_allclose((d2 / d1)[ok], expected[ok], rtol=1e-6)
