"""TWFE pinned to linearmodels PanelOLS, statsmodels OLS with dummies, and published SEs."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from linearmodels import PanelOLS

from estimators.fe import within_balanced, within_general
from estimators.design import fe_arrays
from estimators.panel import EstimationError, OptionError
from estimators.twfe import TWFE

from .conftest import CONTROLS, lm_panel

TOL = 1e-8


def lm_fit(panel, outcome, regs, **kw):
    p = lm_panel(panel)
    return PanelOLS(p[outcome], p[list(regs)], entity_effects=True, time_effects=True).fit(**kw)


def dummies_ols(panel, outcome, regs, weights=None):
    X = pd.get_dummies(panel[["unit", "time"]].astype(str), drop_first=True).astype(float)
    X = sm.add_constant(X)
    for r in regs:
        X[r] = panel[r].to_numpy(float)
    y = panel[outcome].to_numpy(float)
    if weights is None:
        return sm.OLS(y, X), list(regs)
    return sm.WLS(y, X, weights=weights), list(regs)


def ours(panel, outcome, controls, **kw):
    e = TWFE(outcome, controls=controls, **kw).fit(panel)
    t = e.terms.set_index("term")
    names = ["d", *controls]
    return t.loc[names, "estimate"].to_numpy(), t.loc[names, "std_error"].to_numpy()


@pytest.mark.parametrize("data", ["province", "unbalanced"])
@pytest.mark.parametrize("controls", [(), CONTROLS])
def test_coefficients_and_se_match_linearmodels(request, data, controls):
    panel = request.getfixturevalue(data)
    regs = ["d", *controls]
    cases = [
        # (our options, linearmodels fit kwargs)
        (dict(se="cluster", ssc="linearmodels"), dict(cov_type="clustered", cluster_entity=True)),
        (dict(se="cluster", ssc="full"),
         dict(cov_type="clustered", cluster_entity=True, group_debias=True)),
        (dict(se="robust", ssc="linearmodels"), dict(cov_type="robust")),
        (dict(se="conventional", ssc="linearmodels"), dict(cov_type="unadjusted")),
    ]
    for opts, kw in cases:
        ref = lm_fit(panel, "lnce", regs, **kw)
        b, se = ours(panel, "lnce", controls, **opts)
        np.testing.assert_allclose(b, ref.params[regs].to_numpy(), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(se, ref.std_errors[regs].to_numpy(), rtol=TOL, atol=1e-12,
                                   err_msg=str(opts))


@pytest.mark.parametrize("data", ["province", "unbalanced"])
def test_se_match_statsmodels_dummy_regression(request, data):
    panel = request.getfixturevalue(data)
    model, regs = dummies_ols(panel, "lnce", ["d", "lnpgdp", "lnes"])
    controls = ("lnpgdp", "lnes")
    for opts, kw in [
        (dict(se="cluster", ssc="full"), dict(cov_type="cluster", cov_kwds={"groups": panel["unit"]})),
        (dict(se="robust", ssc="stata"), dict(cov_type="HC1")),
        (dict(se="robust", ssc="none"), dict(cov_type="HC0")),
        (dict(se="conventional", ssc="stata"), dict(cov_type="nonrobust")),
    ]:
        ref = model.fit(**kw)
        b, se = ours(panel, "lnce", controls, **opts)
        np.testing.assert_allclose(b, ref.params[regs].to_numpy(), rtol=TOL)
        np.testing.assert_allclose(se, ref.bse[regs].to_numpy(), rtol=TOL, err_msg=str(opts))


def test_stata_convention_is_the_full_one_with_nested_effects_uncounted(province):
    # Stata xtreg fe vce(cluster unit): G/(G-1)(N-1)/(N-K), K = regressors + constant +
    # year dummies; the unit effects (nested in the clusters) are not counted.
    n, g, t, k = 570, 30, 19, 3
    _, se_full = ours(province, "lnce", ("lnpgdp", "lnes"), ssc="full")
    _, se_stata = ours(province, "lnce", ("lnpgdp", "lnes"), ssc="stata")
    k_full, k_stata = k + g + t - 1, k + 1 + (t - 1)
    np.testing.assert_allclose(se_stata / se_full, np.sqrt((n - k_full) / (n - k_stata)), rtol=1e-12)
    _, se_none = ours(province, "lnce", ("lnpgdp", "lnes"), ssc="none")
    np.testing.assert_allclose(se_stata / se_none, np.sqrt(g / (g - 1) * (n - 1) / (n - k_stata)),
                               rtol=1e-12)


def test_organ_donations_published(organ):
    # The Effect (Huntington-Klein), ch. 18: -0.0225, state-clustered SE 0.006; full
    # precision from published_results.md: -0.0224590, CRV1 0.0061312, iid 0.0204969.
    e = TWFE("Rate").fit(organ)
    assert e.estimate == pytest.approx(-0.0224590, abs=5e-8)
    assert e.std_error == pytest.approx(0.0061312, abs=5e-8)
    assert TWFE("Rate", se="conventional").fit(organ).std_error == pytest.approx(0.0204969, abs=5e-8)
    assert e.n_clusters == 27 and e.n_obs == 162


def test_castle_published(castle):
    # Cunningham, Mixtape Table 9.8: 0.069; full precision 0.0693984, CRV1(sid) 0.05586.
    e = TWFE("l_homicide").fit(castle)
    assert e.estimate == pytest.approx(0.0693984, abs=5e-8)
    assert e.std_error == pytest.approx(0.05586, abs=5e-6)


def test_real_data_matches_linearmodels(castle):
    ref = lm_fit(castle, "l_homicide", ["d"], cov_type="clustered", cluster_entity=True)
    b, se = ours(castle, "l_homicide", (), ssc="linearmodels")
    np.testing.assert_allclose(b, ref.params.to_numpy(), rtol=TOL)
    np.testing.assert_allclose(se, ref.std_errors.to_numpy(), rtol=TOL)


def test_balanced_fast_path_equals_general_path(province):
    a = fe_arrays(province, "lnce", ("d", *CONTROLS))
    z = np.column_stack([a.y, a.x])
    fast = within_balanced(z, a.n_units, a.n_periods)
    slow = within_general(z, a.unit, a.time, a.n_units, a.n_periods)
    np.testing.assert_allclose(fast, slow, atol=1e-10)


def test_row_order_does_not_matter(province):
    shuffled = province.sample(frac=1.0, random_state=1)
    a = TWFE("lnce", controls=CONTROLS).fit(province)
    b = TWFE("lnce", controls=CONTROLS).fit(shuffled)
    assert a.estimate == pytest.approx(b.estimate, rel=1e-12)
    assert a.std_error == pytest.approx(b.std_error, rel=1e-10)


def test_weighted_matches_wls_with_dummies(province):
    w = np.random.default_rng(0).uniform(0.2, 3.0, province["unit"].nunique())
    panel = province.assign(w=w[province["unit"].to_numpy() - 1])
    model, regs = dummies_ols(panel, "lnce", ["d", "lnpgdp"], weights=panel["w"].to_numpy())
    ref = model.fit(cov_type="cluster", cov_kwds={"groups": panel["unit"]})
    e = TWFE("lnce", controls=("lnpgdp",), weights="w", ssc="full").fit(panel)
    t = e.terms.set_index("term")
    np.testing.assert_allclose(t.loc[regs, "estimate"], ref.params[regs], rtol=TOL)
    np.testing.assert_allclose(t.loc[regs, "std_error"], ref.bse[regs], rtol=TOL)


def test_zero_weights_drop_units(province):
    w = (province["unit"] != 3).astype(float)
    e = TWFE("lnce", weights="w").fit(province.assign(w=w))
    ref = TWFE("lnce").fit(province[province["unit"] != 3])
    assert e.estimate == pytest.approx(ref.estimate, rel=1e-10)
    assert e.n_units == 29


def test_paper_terms_reported_not_identified(province):
    # seed 002 Table 4 puts `policy` and `time` beside both fixed effects
    e = TWFE("lnce", paper_terms=True).fit(province)
    t = e.terms.set_index("term")
    assert not t.loc["policy", "identified"] and not t.loc["post", "identified"]
    assert np.isnan(t.loc["policy", "estimate"])
    assert any("policy not identified" in n for n in e.notes)
    assert e.estimate == pytest.approx(TWFE("lnce").fit(province).estimate, rel=1e-12)


def test_time_invariant_control_is_absorbed(province):
    panel = province.assign(region=(province["unit"] % 3).astype(float))
    e = TWFE("lnce", controls=("region", "lnpgdp")).fit(panel)
    t = e.terms.set_index("term")
    assert t.loc["region", "note"] == "absorbed by the fixed effects"
    assert t.loc["lnpgdp", "identified"]


def test_collinear_control_is_reported(province):
    panel = province.assign(dup=2 * province["lnpgdp"] + 1)
    e = TWFE("lnce", controls=("lnpgdp", "dup")).fit(panel)
    assert e.terms.set_index("term").loc["dup", "note"] == "collinear with the other regressors"


def test_conventional_t_and_normal_critical_values(province):
    t = TWFE("lnce").fit(province)
    z = TWFE("lnce", dist="normal").fit(province)
    assert t.std_error == z.std_error
    assert (t.conf_high - t.conf_low) > (z.conf_high - z.conf_low)
    assert "t(29)" in t.inference and "normal" in z.inference


def test_bad_options_list_accepted_values(province):
    with pytest.raises(OptionError, match="se='clustered' is not accepted; use one of 'cluster'"):
        TWFE("lnce", se="clustered").fit(province)
    with pytest.raises(OptionError, match="ssc="):
        TWFE("lnce", ssc="r").fit(province)
    with pytest.raises(OptionError, match="alpha"):
        TWFE("lnce", alpha=1.5).fit(province)


def test_treatment_absorbed_is_an_error(province):
    panel = province.copy()
    panel["cohort"] = np.where(panel["cohort"] > 0, 2000, 0)  # treated from the first year
    panel["d"] = (panel["cohort"] > 0).astype(int)
    # every pilot is always treated: excluded, and nothing is left to estimate
    with pytest.raises(EstimationError, match="6 always-treated unit.*no other treated unit"):
        TWFE("lnce").fit(panel)
    # a treatment that varies only between units, with cohorts inside the panel: absorbed
    panel = province.assign(d=(province["cohort"] > 0).astype(int))
    from estimators.design import fe_arrays
    from estimators.regression import fit_fe

    with pytest.raises(EstimationError, match=r"\['d'\] are absorbed by the fixed effects"):
        fit_fe(fe_arrays(panel, "lnce", ("d",), cluster="unit", validate=False), "cluster",
               "stata", "t")


def test_region_by_year_effects_match_dummy_regression(province):
    panel = province.assign(region=(province["unit"] % 4))
    # full-rank dummies: every unit, and region-by-year cells less each region's first year
    units = pd.get_dummies(panel["unit"].astype(str)).astype(float)
    cell = panel["region"].astype(str) + ":" + panel["time"].astype(str)
    cells = pd.get_dummies(cell).astype(float)
    first = {f"{r}:{panel['time'].min()}" for r in panel["region"].unique()}
    cells = cells.drop(columns=sorted(first))
    X = pd.concat([units, cells], axis=1)
    X["d"] = panel["d"].to_numpy(float)
    X["lnpgdp"] = panel["lnpgdp"].to_numpy(float)
    assert np.linalg.matrix_rank(X.to_numpy()) == X.shape[1]
    ref = sm.OLS(panel["lnce"].to_numpy(), X).fit(cov_type="cluster", cov_kwds={"groups": panel["unit"]})
    e = TWFE("lnce", controls=("lnpgdp",), time_by="region", ssc="full").fit(panel)
    t = e.terms.set_index("term")
    np.testing.assert_allclose(t.loc[["d", "lnpgdp"], "estimate"], ref.params[["d", "lnpgdp"]], rtol=1e-8)
    np.testing.assert_allclose(t.loc[["d", "lnpgdp"], "std_error"], ref.bse[["d", "lnpgdp"]], rtol=1e-8)
    conv = sm.OLS(panel["lnce"].to_numpy(), X).fit()
    c = TWFE("lnce", controls=("lnpgdp",), time_by="region", se="conventional").fit(panel)
    np.testing.assert_allclose(c.terms.set_index("term").loc[["d", "lnpgdp"], "std_error"],
                               conv.bse[["d", "lnpgdp"]], rtol=1e-8)
    with pytest.raises(Exception, match="constant within each unit"):
        TWFE("lnce", time_by="time").fit(panel)


@pytest.mark.parametrize("column", ["constant", "unit_level"])
def test_outcome_explained_by_the_fixed_effects_is_refused(province, column):
    """A constant outcome gave -1.5e-31 with p = 0.0117 (printed -0.0000**), and the event
    study a raw LinAlgError: both now refuse with one line."""
    from estimators.event_study import EventStudy

    panel = province.assign(constant=1.0, unit_level=province["unit"] * 0.5)
    for est in (TWFE(column), TWFE(column, controls=("lnpgdp",)), EventStudy(column)):
        with pytest.raises(EstimationError, match="does not vary within units and periods"):
            est.fit(panel)
