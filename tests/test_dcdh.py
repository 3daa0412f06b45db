"""de Chaisemartin-D'Haultfoeuille DID_l (estimators/dcdh.py) against R DIDmultiplegtDYN
2.1.2 (R 4.2.2), an exact truth and a Monte Carlo.

Reference numbers: R `DIDmultiplegtDYN` 2.1.2 (github chaisemartinPackages/did_multiplegt_dyn,
with its dependency `matlib`'s Ginv), `library(DIDmultiplegtDYN)`; each R call is written
beside its numbers. Estimates are pinned to 1e-9, standard errors and p-values to 1e-6
(relative): R prints 15 significant digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.dcdh import DCDH
from estimators.panel import EstimationError, OptionError, PanelError
from estimators.twfe import TWFE

DATA = Path(__file__).resolve().parent / "data"


def draw_switching(rng: np.random.Generator, n_units: int = 60, n_periods: int = 8,
                   lags: int = 2, share_treated: float = 0.35, share_never: float = 0.3,
                   p_off: float = 0.5, effect: float = 1.0, noise: float = 0.5) -> pd.DataFrame:
    """A panel whose binary treatment switches on and off, with known potential outcomes.

    A share of units starts treated; the others untreated. Switchers change at a random
    period (3rd to last) and half of them switch back 1-3 periods later. Outcomes carry
    unit and period effects (the baseline-treated units at a higher level), AR-free noise
    and a heterogeneous dynamic effect of the current and ``lags`` past treatments:
    ``y = y_sq + sum_k beta_gk (d_{t-k} - d_g1)`` with ``beta_gk`` unit-specific and growing
    in ``k``, treatment before the panel equal to the first period's. Truth columns:
    ``y0_y`` (never treated), ``ysq_y`` (the first period's treatment kept: the status quo
    of dCDH), ``te_y = y - y0_y``.
    """
    G, T = n_units, n_periods
    d1 = (rng.random(G) < share_treated).astype(int)
    never = rng.random(G) < share_never
    d = np.repeat(d1[:, None], T, axis=1)
    for g in range(G):
        if never[g]:
            continue
        f = rng.integers(2, T)          # 0-based first switch period 2..T-1
        d[g, f:] = 1 - d1[g]
        if rng.random() < p_off:        # switches back after 1-3 periods
            back = f + rng.integers(1, 4)
            d[g, back:] = d1[g]
    beta = (effect * (1 + rng.standard_normal((G, 1)) * 0.5)
            * (1 + np.arange(lags + 1))[None, :] / (lags + 1))
    a = rng.standard_normal(G) + 0.5 * d1
    lam = np.cumsum(rng.standard_normal(T)) * 0.3
    e = rng.standard_normal((G, T)) * noise
    y0 = a[:, None] + lam[None, :] + e
    dpad = np.concatenate([np.repeat(d1[:, None], lags, axis=1), d], axis=1)
    eff = sum(beta[:, [k]] * (dpad[:, lags - k:lags - k + T] - d1[:, None])
              for k in range(lags + 1))
    ysq = y0 + d1[:, None] * beta.sum(axis=1, keepdims=True)
    y = ysq + eff
    unit = np.repeat(np.arange(1, G + 1), T)
    time = np.tile(np.arange(2001, 2001 + T), G)
    p = pd.DataFrame({"unit": unit, "time": time, "d": d.ravel(), "y": y.ravel(),
                      "y0_y": y0.ravel(), "ysq_y": ysq.ravel()})
    p["te_y"] = p["y"] - p["y0_y"]
    return with_cohort(p)


def with_cohort(p: pd.DataFrame) -> pd.DataFrame:
    """``cohort`` = the first period with d = 1 (0 if never), the data contract's."""
    first = p[p["d"] == 1].groupby("unit")["time"].min()
    return p.assign(cohort=p["unit"].map(first).fillna(0).astype(int))


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    raw = pd.read_csv(DATA / "mpdta.csv")
    p = pd.DataFrame({"unit": raw["countyreal"], "time": raw["year"],
                      "cohort": raw["first.treat"], "lemp": raw["lemp"]})
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
    return p


@pytest.fixture(scope="module")
def switching() -> pd.DataFrame:
    return with_cohort(pd.read_csv(DATA / "dcdh_switching.csv"))


def rows(est, names=None):
    t = est.terms.set_index("term")
    return t if names is None else t.loc[names]


# --- R pins ---------------------------------------------------------------------------------

def test_mpdta_matches_r(mpdta):
    # m <- read.csv("tests/data/mpdta.csv"); m$d <- as.integer(m$first.treat > 0 & m$year >= m$first.treat)
    # r <- did_multiplegt_dyn(m, "lemp", "countyreal", "year", "d", effects = 4, placebo = 3,
    #                         effects_equal = TRUE, graph_off = TRUE)
    # ("The number of placebos which can be estimated is at most 2.")
    ref = {  # term: estimate, SE, N, Switchers
        "Effect_1": (-0.0189221990834249, 0.0120676857453897, 1420, 191),
        "Effect_2": (-0.0535893473848319, 0.0170398416607259, 849, 60),
        "Effect_3": (-0.1362743463286779, 0.0362263577117899, 460, 20),
        "Effect_4": (-0.1008113630854042, 0.0351004237277422, 329, 20),
        "Placebo_1": (0.02426890341450757, 0.0144871739509518, 920, 171),
        "Placebo_2": (-0.00376929367371419, 0.0317031650347378, 349, 40),
        "Av_tot_eff": (-0.0397636256230437, 0.0118262692609417, 2000, 291),
    }
    e = DCDH("lemp", effects=4, placebo=3).fit(mpdta)
    t = rows(e)
    assert list(t.index) == list(ref)
    for name, (b, se, n, sw) in ref.items():
        assert t.loc[name, "estimate"] == pytest.approx(b, abs=1e-9), name
        assert t.loc[name, "std_error"] == pytest.approx(se, rel=1e-6), name
        assert (t.loc[name, "n_obs"], t.loc[name, "n_switchers"]) == (n, sw), name
    assert e.term == "Av_tot_eff" and e.estimate == t.loc["Av_tot_eff", "estimate"]
    # r$results$p_jointeffects, p_equality_effects, p_jointplacebo, delta_D_avg_total
    dg = e.diagnostics
    assert dg["p_joint_effects"] == pytest.approx(0.00252613371060384, rel=1e-6)
    assert dg["p_equal_effects"] == pytest.approx(0.0169597729984525, rel=1e-6)
    assert dg["p_joint_placebos"] == pytest.approx(0.223124401183909, rel=1e-6)
    assert dg["avg_periods_accumulated"] == pytest.approx(1.5498281786941581, rel=1e-12)
    assert any("2 placebo(s) estimable, 3 asked" in n for n in e.notes)
    # event times on didlab's axis: the first switched period is 0, reference -1 = F_g - 1
    assert list(t["event_time"].dropna()) == [0, 1, 2, 3, -2, -3]
    assert list(t["l"]) == [1, 2, 3, 4, -1, -2, 0]


#: did_multiplegt_dyn(s, "y", "unit", "time", "d", effects = 3, placebo = 2,
#:                    effects_equal = TRUE, graph_off = TRUE, <option>) on
#: s <- read.csv("tests/data/dcdh_switching.csv"); per term: estimate, SE, N, Switchers;
#: then p_jointeffects, p_jointplacebo, p_equality_effects, delta_D_avg_total
R_SWITCHING = {
    "base": ({}, {
        "Effect_1": (0.77113662299206, 0.161487672038237, 168, 25),
        "Effect_2": (1.33237732597539, 0.322771053638382, 128, 18),
        "Effect_3": (2.09145410198452, 0.350968756320183, 96, 16),
        "Placebo_1": (0.146374979936243, 0.158245879510503, 168, 25),
        "Placebo_2": (0.146198404788191, 0.210260444044401, 91, 12),
        "Av_tot_eff": (1.447631567436053, 0.244550651972462, 215, 59),
    }, (8.75788330745308e-10, 0.559591676042717, 0.000328206140893017, 1.92452830188679)),
    # switchers = "in"
    "in": ({"switchers": "in"}, {
        "Effect_1": (0.858457222675004, 0.204470306610755, 101, 17),
        "Effect_2": (1.396082416025776, 0.389830612826301, 78, 13),
        "Effect_3": (2.279459811670295, 0.452178654856626, 59, 12),
        "Placebo_1": (0.237105179434205, 0.215240813962468, 101, 17),
        "Placebo_2": (0.179773072575921, 0.276092566471089, 55, 8),
        "Av_tot_eff": (1.624225998212262, 0.326933730593752, 126, 42),
    }, (6.05036901690781e-08, 0.478820825671587, 0.0028421345966112, 1.97297297297297)),
    # switchers = "out": units starting treated and switching off, sign flipped as the package
    "out": ({"switchers": "out"}, {
        "Effect_1": (0.585580348665804, 0.256672667309375, 67, 8),
        "Effect_2": (1.166744091844378, 0.568229438235647, 50, 5),
        "Effect_3": (1.527436972927203, 0.361490336572696, 37, 4),
        "Placebo_1": (-0.0464266939969255, 0.188004790421128, 67, 8),
        "Placebo_2": (0.0790490692127298, 0.304920756796530, 36, 4),
        "Av_tot_eff": (1.039256946266071, 0.290916055648531, 89, 17),
    }, (0.000194117661298066, 0.912940987883867, 0.0452223242376928, 1.8125)),
    # only_never_switchers = TRUE
    "never": ({"only_never_switchers": True}, {
        "Effect_1": (0.739971914506476, 0.162553584091181, 107, 25),
        "Effect_2": (1.276711977027108, 0.307968079638447, 85, 18),
        "Effect_3": (2.012055276032794, 0.340220020167691, 68, 16),
        "Placebo_1": (0.168725713270595, 0.161653636019613, 107, 25),
        "Placebo_2": (0.169511340529609, 0.225696485475199, 64, 12),
        "Av_tot_eff": (1.390056563503294, 0.230733618000378, 149, 59),
    }, (2.53882015410767e-09, 0.496511163318459, 0.000503550198686864, 1.92452830188679)),
    # normalized = TRUE
    "normalized": ({"normalized": True}, {
        "Effect_1": (0.771136622992060, 0.161487672038237, 168, 25),
        "Effect_2": (0.685222624787342, 0.165996541871168, 128, 18),
        "Effect_3": (0.796744419803627, 0.133702383360070, 96, 16),
        "Placebo_1": (0.146374979936243, 0.158245879510503, 168, 25),
        "Placebo_2": (0.076277428585143, 0.109701101240557, 91, 12),
        "Av_tot_eff": (1.447631567436053, 0.244550651972462, 215, 59),
    }, (8.75788330745308e-10, 0.559591676080633, 0.644218046652593, 1.92452830188679)),
    # weight = "w"
    "weight": ({"weights": "w"}, {
        "Effect_1": (0.610872064643283, 0.155434897610236, 168, 25),
        "Effect_2": (1.203475352807412, 0.311309649787716, 128, 18),
        "Effect_3": (2.030576038548530, 0.356060730304603, 96, 16),
        "Placebo_1": (0.0663570942166161, 0.176339337893195, 168, 25),
        "Placebo_2": (0.0886570724041889, 0.228006645898376, 91, 12),
        "Av_tot_eff": (1.35123672154267, 0.25390459367770, 215, 59),
    }, (6.89875132575679e-08, 0.887793968174889, 3.34597579195739e-05, 1.92452830188679)),
    # cluster = "state" (10 clusters of 4 units)
    "cluster": ({"cluster": "state"}, {
        "Effect_1": (0.77113662299206, 0.166860111451365, 168, 25),
        "Effect_2": (1.33237732597539, 0.363671783777836, 128, 18),
        "Effect_3": (2.09145410198452, 0.389996361770189, 96, 16),
        "Placebo_1": (0.146374979936243, 0.181701741450005, 168, 25),
        "Placebo_2": (0.146198404788191, 0.171840570684597, 91, 12),
        "Av_tot_eff": (1.447631567436053, 0.275030433613406, 215, 59),
    }, (9.10015818256227e-09, 0.213972935441691, 0.00107225787830112, 1.92452830188679)),
}

#: set.seed(1); drop <- sample(nrow(s), 25); s <- s[-drop, ]  (R's 1-based row numbers)
UNBALANCED_DROP = [20, 37, 40, 42, 44, 70, 79, 85, 89, 105, 111, 121, 129, 165, 167, 187, 213,
                   217, 263, 270, 277, 289, 290, 299, 307]
R_SWITCHING["unbalanced"] = ({}, {
    "Effect_1": (0.820118935796709, 0.177728577395960, 130, 20),
    "Effect_2": (1.263931093049897, 0.356282733586126, 99, 15),
    "Effect_3": (1.945043631238449, 0.444771257998341, 72, 12),
    "Placebo_1": (0.0469033973079242, 0.168333352667439, 121, 19),
    "Placebo_2": (0.0126859697248261, 0.291963678600705, 48, 8),
    "Av_tot_eff": (1.365159736896373, 0.270746926276622, 189, 47),
}, (2.06188845552902e-07, 0.961849581932539, 0.0359313102796848, 1.93023255813953))


@pytest.mark.parametrize("case", list(R_SWITCHING))
def test_switching_panel_matches_r(switching, case):
    options, ref, (p_eff, p_pl, p_eq, accum) = R_SWITCHING[case]
    panel = switching
    if case == "unbalanced":
        panel = with_cohort(switching.drop(index=np.array(UNBALANCED_DROP) - 1))
    e = DCDH("y", effects=3, placebo=2, **options).fit(panel)
    t = rows(e)
    assert list(t.index) == list(ref)
    for name, (b, se, n, sw) in ref.items():
        assert t.loc[name, "estimate"] == pytest.approx(b, abs=1e-9), name
        assert t.loc[name, "std_error"] == pytest.approx(se, rel=1e-6), name
        assert (t.loc[name, "n_obs"], t.loc[name, "n_switchers"]) == (n, sw), name
    dg = e.diagnostics
    assert dg["p_joint_effects"] == pytest.approx(p_eff, rel=1e-6)
    assert dg["p_joint_placebos"] == pytest.approx(p_pl, rel=1e-6)
    assert dg["p_equal_effects"] == pytest.approx(p_eq, rel=1e-6)
    assert dg["avg_periods_accumulated"] == pytest.approx(accum, rel=1e-12)
    assert e.n_clusters == (10 if case == "cluster" else 40)


def test_event_cov_is_the_packages_influence_covariance(switching):
    # The package's own r$coef$vcov has wrong off-diagonals (it builds them with
    # ifelse(is.null(col), NA, col), which keeps only the first row of each influence
    # column). The reference is the covariance of its influence columns instead:
    # m <- DIDmultiplegtDYN:::did_multiplegt_main(s, "y", "unit", "time", "d", effects = 3,
    #   placebo = 2, ci_level = 95, switchers = "", only_never_switchers = FALSE,
    #   trends_nonparam = NULL, weight = NULL, controls = NULL, dont_drop_larger_lower = FALSE,
    #   drop_if_d_miss_before_first_switch = FALSE, cluster = NULL, same_switchers = FALSE,
    #   same_switchers_pl = FALSE, effects_equal = FALSE, save_results = NULL,
    #   normalized = FALSE, predict_het = NULL, trends_lin = FALSE,
    #   less_conservative_se = FALSE, continuous = NULL)
    # U <- m$df[first_obs_by_gp_XX == 1, c(U_Gg_var_glob_1..3_XX, U_Gg_var_glob_pl_1..2_XX)]
    # crossprod(U) / 40^2
    ref = np.array([
        [0.02607826822032932, 0.03146824551556933, 0.020294594517977094, 0.009938089005338269, 0.01713991170248241],
        [0.03146824551556933, 0.10418115306683141, 0.072652353926030241, 0.009274954282768222, 0.04717557331464544],
        [0.020294594517977094, 0.072652353926030241, 0.123179067912935786, -0.000486293034366134, 0.044709825394446998],
        [0.009938089005338269, 0.009274954282768222, -0.000486293034366134, 0.025041758382052644, 0.005392351997912203],
        [0.01713991170248241, 0.04717557331464544, 0.044709825394446998, 0.005392351997912203, 0.0442094543297487],
    ])
    e = DCDH("y", effects=3, placebo=2).fit(switching)
    assert list(e.event_cov.index) == ["ev+0", "ev+1", "ev+2", "ev-2", "ev-3"]
    np.testing.assert_allclose(e.event_cov.to_numpy(), ref, rtol=1e-6, atol=1e-12)
    se = e.terms.set_index("term")["std_error"].to_numpy()[:5]
    np.testing.assert_allclose(np.sqrt(np.diag(e.event_cov.to_numpy())), se, rtol=1e-12)


def test_sensitivity_reads_the_event_terms(switching):
    from estimators.sensitivity import event_inputs

    inp = event_inputs(DCDH("y", effects=3, placebo=2).fit(switching))
    assert list(inp.times) == [-3, -2, 0, 1, 2] and (inp.n_pre, inp.n_post) == (2, 3)


def test_data_file_is_the_documented_draw(switching):
    p = draw_switching(np.random.default_rng(20240101), n_units=40, n_periods=8)
    np.testing.assert_array_equal(p["d"].to_numpy(), switching["d"].to_numpy())
    np.testing.assert_allclose(p["y"].to_numpy(), switching["y"].to_numpy(), atol=1e-11)
    assert (switching["state"] == (switching["unit"] - 1) // 4 + 1).all()
    assert (switching["w"] == 1 + switching["unit"] % 3).all()


# --- truth ----------------------------------------------------------------------------------

def test_exact_truth_without_noise():
    """With no idiosyncratic noise, parallel trends hold in every draw: each DID_l, each
    placebo and the average total effect equal their estimands exactly."""
    p = draw_switching(np.random.default_rng(5), n_units=50, n_periods=9, noise=0.0)
    for opts in ({}, {"switchers": "out"}, {"normalized": True}, {"only_never_switchers": True}):
        est = DCDH("y", effects=4, placebo=2, **opts)
        e, truth = est.fit(p), est.estimand(p)
        t = rows(e)
        for name in t.index:
            assert t.loc[name, "estimate"] == pytest.approx(truth[name], abs=1e-10), (opts, name)
        assert truth["Placebo_1"] == 0.0
        assert truth["ev+0"] == truth["Effect_1"]
    # the truth is the switchers' effect, not a constant: heterogeneous and dynamic
    truth = DCDH("y", effects=4).estimand(p)
    assert truth["Effect_1"] < truth["Effect_2"] < truth["Effect_3"]


def test_estimand_of_switchers_out_needs_the_status_quo_outcome():
    p = draw_switching(np.random.default_rng(6), n_units=40, n_periods=8)
    with pytest.raises(EstimationError, match="ysq_y"):
        DCDH("y", effects=2).estimand(p.drop(columns="ysq_y"))
    # switchers in alone: y0 is their status quo
    a = DCDH("y", effects=2, switchers="in").estimand(p.drop(columns="ysq_y"))
    b = DCDH("y", effects=2, switchers="in").estimand(p)
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.slow
def test_monte_carlo_unbiased_with_covering_intervals():
    """Switching on and off, heterogeneous dynamic effects: over 300 draws the mean error
    of DID_1 (against each draw's true switchers' effect) is within 3 Monte Carlo SEs of
    0 and the 95% intervals cover within the binomial band."""
    rng = np.random.default_rng(20260101)
    est = DCDH("y", effects=2)
    err, cover = [], []
    for _ in range(300):
        p = draw_switching(rng, n_units=60, n_periods=8)
        t = rows(est.fit(p)).loc["Effect_1"]
        truth = est.estimand(p)["Effect_1"]
        err.append(t["estimate"] - truth)
        cover.append(t["conf_low"] <= truth <= t["conf_high"])
    err = np.array(err)
    assert abs(err.mean()) < 3 * err.std(ddof=1) / np.sqrt(err.size)
    n, c = len(cover), np.mean(cover)
    band = 3 * np.sqrt(0.95 * 0.05 / n)
    # the package's variance is conservative by design (cohort demeaning): allow above
    assert c > 0.95 - band


# --- panel shapes and options ---------------------------------------------------------------

def test_switching_off_is_refused_by_absorbing_estimators(switching):
    with pytest.raises(PanelError, match="switches off"):
        TWFE("y").fit(switching)
    DCDH("y").fit(switching)  # accepted here


def test_cohort_must_be_the_first_treated_period(switching):
    bad = switching.assign(cohort=np.where(switching["cohort"] > 0, switching["cohort"] + 1, 0))
    with pytest.raises(PanelError, match="first period with 'd' = 1"):
        DCDH("y").fit(bad)


def test_no_comparison_is_one_line():
    p = pd.DataFrame({"unit": np.repeat([1, 2, 3], 4), "time": np.tile([1, 2, 3, 4], 3),
                      "y": np.arange(12.0)})
    p["d"] = ((p["time"] >= 3)).astype(int)       # everyone switches in period 3
    p["cohort"] = 3
    with pytest.raises(EstimationError) as exc:
        DCDH("y").fit(p)
    assert "\n" not in str(exc.value) and "same date" in str(exc.value)


@pytest.mark.parametrize("name, value", [("effects", 0), ("placebo", -1), ("switchers", "up"),
                                         ("alpha", 1.5), ("normalized", "yes"),
                                         ("weights", "d")])
def test_bad_options_are_named(name, value):
    with pytest.raises(OptionError, match=name):
        DCDH("y", **{name: value}).check()


def test_placebos_cannot_exceed_effects():
    with pytest.raises(OptionError, match="placebo=3 must not exceed effects=2"):
        DCDH("y", effects=2, placebo=3).check()


def test_fewer_effects_than_asked_are_noted(switching):
    e = DCDH("y", effects=9).fit(switching)
    assert any("effect(s) estimable, 9 asked" in n for n in e.notes)
    assert e.diagnostics["n_effects"] < 9
