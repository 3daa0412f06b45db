"""Event study pinned to linearmodels with explicit event-time dummies."""

import numpy as np
import pytest
from linearmodels import PanelOLS
from scipy import stats

from estimators.design import event_time
from estimators.event_study import EventStudy, event_dummies
from estimators.panel import OptionError

from .conftest import lm_panel


def explicit(panel, leads, lags, ref=-1, binned=True):
    rel = event_time(panel)
    k = np.clip(rel, -leads, lags) if binned else rel
    cols = {}
    for e in range(-leads, lags + 1):
        if e != ref:
            cols[f"ev{e:+d}"] = (k == e).astype(float)
    return panel.assign(**cols), list(cols)


@pytest.mark.parametrize("data", ["province", "staggered", "unbalanced"])
def test_matches_linearmodels_with_explicit_dummies(request, data):
    panel = request.getfixturevalue(data)
    wide, names = explicit(panel, 4, 3)
    p = lm_panel(wide)
    regs = names + ["lnpgdp"]
    ref = PanelOLS(p["lnce"], p[regs], entity_effects=True, time_effects=True).fit(
        cov_type="clustered", cluster_entity=True)
    e = EventStudy("lnce", controls=("lnpgdp",), leads=4, lags=3, ssc="linearmodels").fit(panel)
    t = e.terms.set_index("term")
    np.testing.assert_allclose(t.loc[regs, "estimate"], ref.params[regs], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(t.loc[regs, "std_error"], ref.std_errors[regs], rtol=1e-8)
    # headline: mean of post coefficients, its SE from the covariance
    post = [n for n in names if not n.startswith("ev-")]
    w = np.array([1.0 / len(post) if n in post else 0.0 for n in regs])
    assert e.estimate == pytest.approx(w @ ref.params[regs].to_numpy(), rel=1e-8)
    assert e.std_error == pytest.approx(np.sqrt(w @ ref.cov.loc[regs, regs].to_numpy() @ w), rel=1e-8)
    # pre-trend Wald: b' V^-1 b / q against F(q, G-1)
    pre = [n for n in names if n.startswith("ev-")]
    b = ref.params[pre].to_numpy()
    v = ref.cov.loc[pre, pre].to_numpy()
    f = b @ np.linalg.solve(v, b) / len(pre)
    assert e.diagnostics["pretrend_F"] == pytest.approx(f, rel=1e-8)
    g = panel["unit"].nunique()
    assert e.diagnostics["pretrend_p"] == pytest.approx(stats.f.sf(f, len(pre), g - 1), rel=1e-8)


def test_normal_reference_uses_chi2(province):
    e = EventStudy("lnce", dist="normal").fit(province)
    q = e.diagnostics["pretrend_df1"]
    assert e.diagnostics["pretrend_p"] == pytest.approx(
        stats.chi2.sf(e.diagnostics["pretrend_F"] * q, q), rel=1e-10)


def test_full_window_without_binning(province):
    e = EventStudy("lnce", leads=None, lags=None).fit(province)
    times = e.terms["event_time"].dropna()
    assert times.min() == -11 and times.max() == 7 and -1 not in set(times)
    assert not e.terms["binned"].any()


def test_unbinned_window_drops_outside_rows(province):
    e = EventStudy("lnce", leads=3, lags=2, bin_endpoints=False).fit(province)
    n_out = int(((event_time(province) < -3) | (event_time(province) > 2)).sum())
    assert e.n_obs == len(province) - n_out
    assert any("dropped" in n for n in e.notes)


def test_reference_period_option(province):
    e = EventStudy("lnce", ref=-2).fit(province)
    assert "ev-2" not in set(e.terms["term"]) and "ev-1" in set(e.terms["term"])
    with pytest.raises(OptionError, match="ref=0 must be a pre-treatment"):
        EventStudy("lnce", ref=0).fit(province)
    with pytest.raises(OptionError, match="leads=-1"):
        EventStudy("lnce", leads=-1).fit(province)


def test_estimand_tracks_dynamic_truth(staggered):
    es = EventStudy("lnce", leads=4, lags=4)
    truth = es.estimand(staggered)
    # ramp over 3 years to -0.3: -0.1, -0.2, -0.3, -0.3 ... pre-periods 0
    assert truth["ev+0"] == pytest.approx(-0.1)
    assert truth["ev+1"] == pytest.approx(-0.2)
    assert truth["ev+2"] == pytest.approx(-0.3)
    assert truth["ev-3"] == 0.0
    assert truth["ATT_post"] == pytest.approx(np.mean([-0.1, -0.2, -0.3, -0.3, -0.3]))


def test_event_dummies_binning():
    rel = np.array([np.nan, -8, -2, -1, 0, 3, 9])
    cols, times, keep = event_dummies(rel, 3, 2, -1, True)
    assert times == [-3, -2, 0, 1, 2]
    assert cols["ev-3"].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert cols["ev+2"].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert keep.all()
    _, _, keep = event_dummies(rel, 3, 2, -1, False)
    assert keep.tolist() == [True, False, True, True, True, False, False]


@pytest.mark.parametrize("data", ["staggered", "unbalanced"])
def test_weighted_event_study_matches_linearmodels(request, data):
    """A population-weighted event study: weighted least squares with explicit dummies,
    clustered by unit (linearmodels PanelOLS with weights)."""
    panel = request.getfixturevalue(data)
    wide, names = explicit(panel, 4, 3)
    p = lm_panel(wide)
    ref = PanelOLS(p["lnce"], p[names], entity_effects=True, time_effects=True,
                   weights=p["people"]).fit(cov_type="clustered", cluster_entity=True)
    e = EventStudy("lnce", leads=4, lags=3, ssc="linearmodels", weights="people").fit(panel)
    t = e.terms.set_index("term")
    np.testing.assert_allclose(t.loc[names, "estimate"], ref.params[names], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(t.loc[names, "std_error"], ref.std_errors[names], rtol=1e-8)
    unweighted = EventStudy("lnce", leads=4, lags=3).fit(panel)
    assert e.estimate != pytest.approx(unweighted.estimate, rel=1e-6)


def test_weighted_sun_abraham_equals_weighted_cells(staggered):
    """Sun-Abraham with weights: the weighted interaction regression, each cell counted by
    its total weight in the aggregates."""
    from estimators.sun_abraham import SunAbraham

    e = SunAbraham("lnce", weights="people").fit(staggered)
    cells = e.terms[e.terms["term"].str.startswith("g")].set_index("term")["estimate"]
    rel = event_time(staggered)
    post = (rel >= 0) & (staggered["cohort"] > 0)
    num = den = 0.0
    for name, coef in cells.items():
        g, k = name[1:].split(":e")
        m = post & (staggered["cohort"] == int(g)).to_numpy() & (rel == int(k))
        if int(k) >= 0:
            wsum = staggered.loc[m, "people"].sum()
            num, den = num + coef * wsum, den + wsum
    assert e.estimate == pytest.approx(num / den, rel=1e-10)


def test_sidak_pretest_over_the_pre_terms(province):
    """pretest="sidak": 1 - (1 - p_min)^q over the pre-period terms' own p-values; the Wald
    test stays in the diagnostics either way."""
    from estimators.event_study import EventStudy

    e = EventStudy("lnce", leads=4, lags=3, se="cr2", dist="satterthwaite",
                   pretest="sidak").fit(province)
    pre = e.terms[e.terms["event_time"] < -1]
    q = len(pre)
    assert q == e.diagnostics["pretrend_df1"] == 3
    assert e.diagnostics["pretrend_p"] == pytest.approx(1 - (1 - pre["p_value"].min()) ** q,
                                                        rel=1e-12)
    wald = EventStudy("lnce", leads=4, lags=3, se="cr2", dist="satterthwaite").fit(province)
    assert wald.diagnostics["pretrend_p"] == e.diagnostics["pretrend_wald_p"]
    with pytest.raises(Exception, match="pretest"):
        EventStudy("lnce", pretest="joint").check()
