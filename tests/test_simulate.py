"""The province simulator: calibration to seed 002, accounting, truth, knobs."""

import numpy as np
import pandas as pd
import pytest

from estimators.panel import OptionError, validate_panel
from simulate.design import Assignment, Effect, Timing, pick_pilots
from simulate.emissions import EMISSION_FACTORS, FUELS, carbon_emissions
from simulate.province import (PILOTS, TABLE3, ProvinceDGP, draw_province,
                               lognormal_params, true_att)


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
