"""Bertrand, Duflo and Mullainathan (2004): the state panel (simulate/states.py), the block
bootstrap and the collapsed estimator (estimators/bdm.py), experiment=bdm2004.

References: BDM's Table II panel B (AR(1) Monte Carlo: rejection rates of conventional OLS
with placebo laws, 50 states x 21 years), reproduced within Monte Carlo error; the collapsed
estimator against a literal two-step statsmodels computation; the block bootstrap against
a loop that refits didlab's TWFE on every resampled panel with the same draws; the
simulator against its configured parameters.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from estimators.bdm import BlockBootstrap, Collapse, twfe_t
from estimators.panel import EstimationError, OptionError
from estimators.resample import draw_units
from estimators.twfe import TWFE
from experiments.build import build_draw, build_estimators
from experiments.designs import library
from experiments.montecarlo import estimator_seed
from experiments.run import compose
from simulate import states
from simulate.design import Assignment, Effect, Timing

RANDOM = Assignment(kind="random")


def _draw(seed: int = 0, effect: Effect | None = None, timing: Timing | None = None,
          **kw) -> pd.DataFrame:
    return states.draw(states.StatesDGP(**kw), RANDOM, timing or Timing(),
                       effect or Effect(att=0.0), np.random.default_rng(seed))


def _stack(rho: float, n: int, seed: int, n_states: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``n`` placebo-law panels as (n, states, years) outcome and treatment arrays."""
    rng = np.random.default_rng(seed)
    dgp = states.StatesDGP(rho=rho, n_states=n_states)
    ys, ds = [], []
    for _ in range(n):
        p = states.draw(dgp, RANDOM, Timing(), Effect(att=0.0), rng)
        ys.append(p["y"].to_numpy().reshape(n_states, -1))
        ds.append(p["d"].to_numpy().reshape(n_states, -1))
    return np.array(ys), np.array(ds, dtype=float)


# --- the simulator ------------------------------------------------------------------------

def test_default_draw_is_bdms_placebo_law_design():
    p = _draw(3)
    assert p.shape == (50 * 21, 8)
    assert (p["time"].min(), p["time"].max()) == (1979, 1999)
    cohort = p.groupby("unit")["cohort"].first()
    assert (cohort > 0).sum() == 25                      # exactly half the states (p. 255)
    assert cohort[cohort > 0].between(1985, 1995).all()  # law year uniform on 1985-1995
    assert np.array_equal(p["d"], ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int))
    np.testing.assert_allclose(p["y"], p["y0_y"] + p["te_y"])
    assert (p["te_y"] == 0).all()
    pd.testing.assert_frame_equal(p, _draw(3))
    # law years cover the whole window over draws (each year appears)
    years = np.concatenate([_draw(s).groupby("unit")["cohort"].first().to_numpy()
                            for s in range(20)])
    assert set(years[years > 0]) == set(range(1985, 1996))


def test_ar1_error_is_stationary_with_the_configured_persistence_and_scale():
    x = states._ar1(np.random.default_rng(0), (200_000, 3), 0.8, 0.035)
    np.testing.assert_allclose(x.std(axis=0), 0.035, rtol=0.01)
    r1 = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    r2 = np.corrcoef(x[:, 0], x[:, 2])[0, 1]
    assert abs(r1 - 0.8) < 0.005 and abs(r2 - 0.64) < 0.006


def test_population_sizes_scale_the_error_by_inverse_root_population():
    kw = dict(unit_sd=0.0, year_sd=0.0, treated_share=0.0, law_first=1990, law_last=1990,
              sigma_size=1.0)
    a = states.draw(states.StatesDGP(**kw), RANDOM, Timing(), Effect(att=0.0),
                    np.random.default_rng(1))
    b = states.draw(states.StatesDGP(sizes="population", **kw), RANDOM, Timing(),
                    Effect(att=0.0), np.random.default_rng(1))
    pop = np.array(list(states.STATE_POP.values()))
    factor = (pop / np.exp(np.log(pop).mean())) ** -0.5
    np.testing.assert_allclose(b["y0_y"] / a["y0_y"], np.repeat(factor, 21), rtol=1e-12)
    np.testing.assert_array_equal(b["pop"], np.repeat(pop, 21))
    assert a["cohort"].gt(0).groupby(a["unit"]).first().sum() == 6   # assignment.n_pilots


def test_effect_and_anticipation_follow_the_shared_knobs():
    p = _draw(2, effect=Effect(att=0.02), timing=Timing(anticipation=2))
    k = p["time"] - p["cohort"]
    treated = p["cohort"] > 0
    np.testing.assert_allclose(p.loc[treated & (k >= -2), "te_y"], 0.02)
    assert (p.loc[~treated | (k < -2), "te_y"] == 0).all()
    assert np.array_equal(p["d"], (treated & (k >= 0)).astype(int))  # d keeps the law year


@pytest.mark.parametrize("kw,message", [
    (dict(assignment=Assignment(kind="actual")), "assignment.kind='actual' has no meaning"),
    (dict(assignment=Assignment(kind="selected")), "needs data.sizes='population'"),
    (dict(assignment=Assignment(kind="random", n_pilots=3)), "assignment.n_pilots=3 is ignored"),
    (dict(timing=Timing(year=2000)), "timing.year=2000 is ignored by data=states"),
    (dict(dgp=dict(sizes="population", n_states=20)), "needs data.n_states=50"),
    (dict(dgp=dict(law_first=1979)), "data.law_first=1979"),
    (dict(dgp=dict(rho=1.0)), "data.rho=1.0 must lie in"),
    (dict(dgp=dict(treated_share=0.01)), "treats 0 of 50"),
    (dict(dgp=dict(sizes="big")), "data.sizes='big' is not accepted"),
])
def test_bad_knobs_are_refused_in_one_line(kw, message):
    with pytest.raises(OptionError, match=message) as err:
        states.draw(states.StatesDGP(**kw.get("dgp", {})), kw.get("assignment", RANDOM),
                    kw.get("timing", Timing()), Effect(), np.random.default_rng(0))
    assert "\n" not in str(err.value)


# --- the estimators: references -------------------------------------------------------------

def test_vectorised_twfe_t_is_didlabs_twfe():
    p = _draw(4, effect=Effect(att=0.02))
    y, d = p["y"].to_numpy().reshape(50, 21), p["d"].to_numpy().reshape(50, 21).astype(float)
    for se, est in (("conventional", TWFE("y", se="conventional")), ("cluster", TWFE("y"))):
        b, s = twfe_t(y, d, se)
        ref = est.fit(p)
        assert b == pytest.approx(ref.estimate, rel=1e-10)
        assert s == pytest.approx(ref.std_error, rel=1e-10)


@pytest.mark.parametrize("se", ["conventional", "cluster"])
def test_block_bootstrap_matches_a_loop_refitting_twfe_on_each_resampled_panel(se):
    """Reference: the same draws (draw_units with the same seed), each resampled panel
    built as a DataFrame (slot j of a draw is unit j, with its whole series and law) and
    fitted by TWFE; t_r = |(b_r - b) / se_r|."""
    p = _draw(5, n_states=10)
    est = BlockBootstrap("y", n_boot=40, se=se)
    beta, s, draws, t_r = est.bootstrap(p, np.random.default_rng(11))
    np.testing.assert_array_equal(
        draws, draw_units(np.zeros(10, dtype=np.int64), 40, np.random.default_rng(11)))
    twfe = TWFE("y", se=se)
    ref = twfe.fit(p)
    assert (beta, s) == pytest.approx((ref.estimate, ref.std_error), rel=1e-10)
    blocks = {u: g for u, g in p.groupby("unit")}
    units = sorted(blocks)
    expected = np.full(40, np.nan)
    for b, row in enumerate(draws):
        panel = pd.concat([blocks[units[i]].assign(unit=j + 1) for j, i in enumerate(row)])
        try:
            e = twfe.fit(panel)
        except EstimationError:        # no treated (or no control) state drawn
            continue
        expected[b] = abs((e.estimate - ref.estimate) / e.std_error)
    assert np.isnan(expected).sum() == np.isnan(t_r).sum()
    np.testing.assert_allclose(t_r, expected, rtol=1e-8, equal_nan=True)
    fit = est.fit(p, rng=np.random.default_rng(11))
    valid = expected[np.isfinite(expected)]
    assert fit.p_value == pytest.approx(np.mean(valid >= abs(ref.estimate / ref.std_error)))
    crit = np.quantile(valid, 0.95)
    assert (fit.conf_low, fit.conf_high) == pytest.approx(
        (ref.estimate - crit * ref.std_error, ref.estimate + crit * ref.std_error))
    assert fit.diagnostics["n_failed"] == np.isnan(expected).sum()


def test_block_bootstrap_refuses_bad_options_and_shapes():
    with pytest.raises(OptionError, match="n_boot"):
        BlockBootstrap("y", n_boot=5).check()
    with pytest.raises(OptionError, match="se='robust'"):
        BlockBootstrap("y", se="robust").check()
    with pytest.raises(OptionError, match="rng"):
        BlockBootstrap("y").fit(_draw(0))
    with pytest.raises(EstimationError, match="balanced"):
        BlockBootstrap("y").fit(_draw(0).iloc[1:], rng=np.random.default_rng(0))


def test_residual_aggregation_is_the_literal_two_step_regression():
    """BDM IV.C: (1) y on state and year dummies (and a covariate), residuals; (2) treated
    states' residuals averaged before / from the law; (3) OLS of the two-period panel on
    state dummies and a post dummy (statsmodels, step by step)."""
    p = _draw(6, effect=Effect(att=0.02))
    p["x"] = np.random.default_rng(9).standard_normal(len(p))
    p["y"] = p["y"] + 0.01 * p["x"]
    shuffled = p.sample(frac=1.0, random_state=2)      # row order must not matter
    for controls, formula in (((), "y ~ C(unit) + C(time)"),
                              (("x",), "y ~ x + C(unit) + C(time)")):
        step1 = p.assign(r=smf.ols(formula, data=p).fit().resid)
        treated = step1[step1["cohort"] > 0].assign(post=lambda f: (f["time"] >= f["cohort"]).astype(int))
        two = treated.groupby(["unit", "post"], as_index=False)["r"].mean()
        ref = smf.ols("r ~ C(unit) + post", data=two).fit()
        got = Collapse("y", controls=controls).fit(shuffled)
        assert got.estimate == pytest.approx(ref.params["post"], rel=1e-9)
        assert got.std_error == pytest.approx(ref.bse["post"], rel=1e-9)
        assert got.p_value == pytest.approx(ref.pvalues["post"], rel=1e-7)
        low, high = ref.conf_int().loc["post"]
        assert (got.conf_low, got.conf_high) == pytest.approx((low, high), rel=1e-9)
        assert got.diagnostics["df"] == ref.df_resid == 24


def test_simple_aggregation_is_the_two_period_dd_regression():
    p = _draw(7, law_first=1990, law_last=1990, effect=Effect(att=0.02))
    p["post"] = (p["time"] >= 1990).astype(int)
    p["treated"] = (p["cohort"] > 0).astype(int)
    two = p.groupby(["unit", "post"], as_index=False).agg(y=("y", "mean"), treated=("treated", "first"))
    ref = smf.ols("y ~ C(unit) + post + post:treated", data=two).fit()
    got = Collapse("y", method="simple").fit(p)
    assert got.estimate == pytest.approx(ref.params["post:treated"], rel=1e-9)
    assert got.std_error == pytest.approx(ref.bse["post:treated"], rel=1e-9)
    assert got.p_value == pytest.approx(ref.pvalues["post:treated"], rel=1e-7)
    assert ref.df_resid == 48 == got.diagnostics["df"]
    with pytest.raises(EstimationError, match="one law date"):
        Collapse("y", method="simple").fit(_draw(7))
    with pytest.raises(OptionError, match="method='simple'"):
        Collapse("y", method="simple", controls=("x",)).check()


def test_residual_aggregation_attenuates_an_effect_by_the_share_absorbed_in_step_one():
    """On the noiseless effect surface (y = 0.02 d) the estimate is 0.02 times the treated
    states' mean post-minus-pre contrast of the two-way-demeaned treatment, below 1:
    step 1 absorbs part of the effect into the state and year effects."""
    p = _draw(8, effect=Effect(att=0.02))
    surface = p.assign(y=p["te_y"])
    d = p["d"].to_numpy().reshape(50, 21).astype(float)
    dt = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
    cohort = p.groupby("unit")["cohort"].first().to_numpy()
    years = np.arange(1979, 2000)
    contrast = [dt[s, years >= c].mean() - dt[s, years < c].mean()
                for s, c in enumerate(cohort) if c > 0]
    got = Collapse("y").fit(surface).estimate
    assert got == pytest.approx(0.02 * np.mean(contrast), rel=1e-9)
    assert 0.005 < got < 0.02


# --- the experiment ------------------------------------------------------------------------

def test_config_composes_and_paper_numbers_point_at_its_estimators_and_cells():
    info = library()["bdm2004"]
    cfg = compose(["experiment=bdm2004"])
    assert set(cfg.estimator) == {"twfe_conventional", "twfe", "bdm_bootstrap",
                                  "bdm_collapse", "ri_twfe"}
    grid = {k: [str(v) for v in vals] for k, vals in cfg.experiment.grid.items()}
    assert grid == {"data.rho": ["0.0", "0.4", "0.8"], "data.n_states": ["50", "20", "10", "6"],
                    "effect.att": ["0.0", "0.02"]}
    axes = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    for num in info.numbers:
        assert num.estimator in cfg.estimator
        assert sum(all(ax[k] == v for k, v in num.cell.items()) for ax in axes) == 1, num
    for n_states in grid["data.n_states"]:        # every size of panel validates and draws
        p = build_draw(compose(["experiment=bdm2004", f"data.n_states={n_states}"]))(
            np.random.default_rng(0))
        assert p["unit"].nunique() == int(n_states)
        assert p.groupby("unit")["cohort"].first().gt(0).sum() == int(n_states) // 2
    est = build_estimators(cfg, ["y"])
    assert est[("y", "bdm_bootstrap")].n_boot == 200 and est[("y", "ri_twfe")].n_perm == 199
    assert np.isfinite(info.seconds) and info.seconds < 300


def _bdm_band(p_paper: float, ours_n: int, paper_n: int = 200, z: float = 2.576) -> float:
    """Half-width of a 99% band for the difference of two independent binomial rates:
    ours over ``ours_n`` draws and BDM's over ``paper_n`` placebo laws (Table II's note:
    at least 200 per cell)."""
    return z * np.sqrt(p_paper * (1 - p_paper) * (1 / ours_n + 1 / paper_n))


def _rejection(y: np.ndarray, d: np.ndarray, se: str) -> float:
    b, s = twfe_t(y, d, se)
    n, t = y.shape[-2:]
    df = n - 1 if se == "cluster" else n * t - n - t
    return float(np.mean(np.abs(b / s) > stats.t.ppf(0.975, df)))


def test_table2_headline_conventional_ses_reject_37_percent_at_rho_08():
    """BDM Table II panel B: AR(1) with rho 0.8, 50 states, 21 years, OLS: 0.373. The
    clustered test on the same draws stays near 5%."""
    y, d = _stack(0.8, 1000, seed=2004)
    ours = _rejection(y, d, "conventional")
    assert abs(ours - 0.373) < _bdm_band(0.373, 1000)
    clustered = _rejection(y, d, "cluster")
    assert 0.05 - 2.576 * np.sqrt(0.05 * 0.95 / 1000) < clustered < \
        0.05 + 2.576 * np.sqrt(0.05 * 0.95 / 1000) + 0.01


@pytest.mark.slow
@pytest.mark.parametrize("rho,paper", [(-0.4, 0.008), (0.0, 0.053), (0.2, 0.123), (0.4, 0.19),
                                       (0.6, 0.333), (0.8, 0.373)])
def test_table2_panel_b_every_rho(rho, paper):
    """Every cell of BDM Table II panel B within the 99% band of the two Monte Carlo
    errors (3000 draws here, 200 there)."""
    y, d = _stack(rho, 3000, seed=1000 + int(10 * rho))
    ours = _rejection(y, d, "conventional")
    assert abs(ours - paper) < max(_bdm_band(paper, 3000), 0.01), (rho, ours)


def _fit_cell(rho: float, n_states: int, n: int, seed: int) -> dict[str, float]:
    """Rejection rate of each of the experiment's estimators over ``n`` draws of one cell,
    the estimators built from the config (as the Monte Carlo engine builds them)."""
    cfg = compose(["experiment=bdm2004", f"data.rho={rho}", f"data.n_states={n_states}"])
    draw = build_draw(cfg)
    ests = build_estimators(cfg, ["y"])
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {label: [] for _, label in ests}
    for rep in range(n):
        p = draw(rng)
        for (_, label), est in ests.items():
            e = est.fit(p, rng=np.random.default_rng(estimator_seed(seed, rep, label)))
            hits[label].append(e.p_value < 0.05)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def _band(n: int, p: float = 0.05, z: float = 2.576) -> tuple[float, float]:
    h = z * np.sqrt(p * (1 - p) / n)
    return p - h, p + h


@pytest.mark.slow
def test_pattern_with_50_states_every_repair_keeps_its_size():
    rates = _fit_cell(0.8, 50, 400, seed=50)
    low, high = _band(400)
    assert rates["twfe_conventional"] > 0.25
    for label in ("twfe", "bdm_bootstrap", "ri_twfe"):
        assert low <= rates[label] <= high, (label, rates)
    # residual aggregation is conservative (about 2%): its paired t ignores that step 1's
    # year effects, fitted on all states, absorb about half of each treated state's
    # contrast, so its standard error overstates the estimate's by about sqrt(2)
    assert rates["bdm_collapse"] <= high, rates


@pytest.mark.slow
def test_pattern_with_6_states_collapse_and_ri_keep_their_size():
    rates = _fit_cell(0.8, 6, 400, seed=6)
    low, high = _band(400)
    assert rates["twfe_conventional"] > 0.15
    for label in ("bdm_collapse", "ri_twfe"):
        assert rates[label] <= high, (label, rates)
