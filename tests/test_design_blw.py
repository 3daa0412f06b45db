"""experiment=blw2022: Baker, Larcker and Wang's (2022) six simulations (simulate/staggered.py).

The paper prints figures, not tables, so TWFE's bias is checked against its exact
population value: TWFE fitted to the noiseless effect surface (the firm and year effects are
absorbed, so that is TWFE on ``te``), which Goodman-Bacon (2021) writes as the weighted
average of the 2x2 comparisons; here it is recomputed independently by Frisch-Waugh-Lovell.
"""

import numpy as np
import pandas as pd
import pytest

from estimators.callaway_santanna import CallawaySantAnna
from estimators.imputation import Imputation
from estimators.panel import OptionError
from estimators.stacked import StackedDID
from estimators.sun_abraham import SunAbraham
from estimators.twfe import TWFE
from experiments.build import build_draw
from experiments.designs import library
from experiments.run import compose
from simulate.design import Assignment, Effect, Timing
from simulate.staggered import StaggeredDGP, draw


def _draw(sim: int, seed: int, **kw) -> pd.DataFrame:
    return draw(StaggeredDGP(simulation=sim, **kw), Assignment(), Timing(), Effect(),
                np.random.default_rng(seed))


def _fwl_twfe(panel: pd.DataFrame, y: str) -> float:
    """TWFE coefficient of d by Frisch-Waugh-Lovell on a balanced panel: two-way demeaned
    d against y (independent of estimators/)."""
    wide_d = panel.pivot(index="unit", columns="time", values="d").to_numpy(float)
    wide_y = panel.pivot(index="unit", columns="time", values=y).to_numpy(float)
    dt = wide_d - wide_d.mean(1, keepdims=True) - wide_d.mean(0, keepdims=True) + wide_d.mean()
    return float((dt * wide_y).sum() / (dt * wide_d).sum())


def test_config_composes_and_paper_numbers_point_at_its_estimators():
    cfg = compose(["experiment=blw2022"])
    assert cfg.data.kind == "staggered" and cfg.experiment.kind == "montecarlo"
    assert list(cfg.experiment.grid["data.simulation"]) == [1, 2, 3, 4, 5, 6]
    assert set(cfg.estimator) == {"twfe", "cs_notyet", "sun_abraham", "imputation", "stacked"}
    assert cfg.estimator.cs_notyet.control_group == "notyettreated"
    assert cfg.estimator.twfe.cluster == "state"
    info = library()["blw2022"]
    assert info.numbers and all(n.estimator in cfg.estimator for n in info.numbers)
    for n in info.numbers:
        assert int(n.cell["data.simulation"]) in cfg.experiment.grid["data.simulation"]
    for sim in (1, 6):   # every cell builds a draw function from its composed config
        cell = compose(["experiment=blw2022", f"data.simulation={sim}"])
        panel = build_draw(cell)(np.random.default_rng(0))
        assert panel.shape == (1000 * 36, 8)


def test_panel_follows_the_authors_code():
    # JFE_DID Code/1b run_sim: states 1-17 -> 1989, 18-35 -> 1998, 36-50 -> 2007
    p = _draw(6, 3)
    states = p.groupby("cohort")["state"].nunique()
    assert states.to_dict() == {1989: 17, 1998: 18, 2007: 15}
    assert p.groupby("state")["cohort"].nunique().max() == 1      # treatment is by state
    sd = np.sqrt(3) * 0.5
    row = p[(p.cohort == 1989) & (p.time == 1995)].iloc[0]        # k = 6: 0.05 sd (6 + 1)
    assert row.te_roa == pytest.approx(0.05 * sd * 7, abs=1e-12)
    row = p[(p.cohort == 2007) & (p.time == 2015)].iloc[0]        # k = 8: 0.01 sd (8 + 1)
    assert row.te_roa == pytest.approx(0.01 * sd * 9, abs=1e-12)
    assert (p.loc[p.d == 0, "te_roa"] == 0).all()
    np.testing.assert_allclose(p.roa, p.y0_roa + p.te_roa)
    one = _draw(1, 3)
    assert one.groupby("cohort")["state"].nunique().to_dict() == {0: 25, 1998: 25}
    assert set(one.loc[one.d == 1, "te_roa"].round(12)) == {round(0.5 * sd, 12)}
    # the residual is iid N(0, 0.5^2): the within-firm, within-year residual of y0
    y0 = one.pivot(index="unit", columns="time", values="y0_roa").to_numpy()
    resid = y0 - y0.mean(1, keepdims=True) - y0.mean(0, keepdims=True) + y0.mean()
    dof = (y0.shape[0] - 1) * (y0.shape[1] - 1)
    assert np.sqrt((resid**2).sum() / dof) == pytest.approx(0.5, abs=0.01)


def test_bad_options_name_the_key():
    for kw, key in (({"simulation": 7}, "data.simulation"),
                    ({"simulation": 3, "trend_slope": 0.1}, "data.trend_slope"),
                    ({"simulation": 0, "cohorts": [1990, 2000], "cohort_shares": [0.5]},
                     "data.cohorts"),
                    ({"simulation": 0, "cohorts": [1980], "cohort_shares": [0.5]}, "cohort 1980"),
                    ({"n_states": 1}, "data.n_states")):
        with pytest.raises(OptionError, match=key):
            StaggeredDGP(**kw).validate()
    with pytest.raises(OptionError, match="effect.att"):       # sims 1-6 fix the effect
        draw(StaggeredDGP(simulation=1), Assignment(), Timing(), Effect(att=0.2),
             np.random.default_rng(0))
    with pytest.raises(OptionError, match="timing.year"):
        draw(StaggeredDGP(simulation=0), Assignment(), Timing(year=2000), Effect(),
             np.random.default_rng(0))


def test_population_twfe_estimand_is_the_fwl_regression_of_the_effect_surface():
    twfe = TWFE("roa", cluster="state")
    for sim in range(1, 7):
        p = _draw(sim, 11, noise_sd=0.0)                 # firm + year effects + te only
        att = p.loc[p.d == 1, "te_roa"].mean()
        pop = twfe.fit(p).estimate
        assert pop == pytest.approx(_fwl_twfe(p, "te_roa"), abs=1e-9), sim
        if sim <= 3:      # one date, or constant equal effects: TWFE's estimand is the ATT
            assert pop == pytest.approx(att, abs=1e-9), sim
        else:             # cohort-unequal or dynamic staggered effects: it is not
            assert pop < att - 0.05, (sim, pop, att)
    assert pop < 0 < att   # simulation 6: wrong sign (the paper's headline)


def _twfe_errors(sim: int, n: int, seed: int = 100) -> tuple[np.ndarray, np.ndarray]:
    twfe = TWFE("roa", cluster="state")
    noise, gap = [], []
    for r in range(n):
        p = _draw(sim, seed + r)
        est = twfe.fit(p).estimate
        pop = _fwl_twfe(p, "te_roa")                # the draw's population estimand
        noise.append(est - pop)
        gap.append(pop - p.loc[p.d == 1, "te_roa"].mean())
    return np.array(noise), np.array(gap)


@pytest.mark.parametrize("sim", [4, 6])
def test_twfe_bias_is_the_population_gap_within_mc_error(sim):
    noise, gap = _twfe_errors(sim, 8)
    se = noise.std(ddof=1) / np.sqrt(noise.size)
    assert abs(noise.mean()) < 3.5 * se            # estimate - population estimand: mean 0
    assert abs(gap.mean()) > 20 * se               # and the bias is the Goodman-Bacon gap


def _clean_att(p: pd.DataFrame) -> float:
    """ATT over the cells CS (not yet treated) and Sun-Abraham identify when every firm is
    eventually treated: periods before the last cohort, cohorts before it."""
    last = p.cohort.max()
    m = (p.d == 1) & (p.time < last) & (p.cohort < last)
    return float(p.loc[m, "te_roa"].mean())


def _modern(sim: int, n: int, seed: int = 500) -> dict[str, np.ndarray]:
    ests = {"cs": CallawaySantAnna("roa", control_group="notyettreated"),
            "sa": SunAbraham("roa", cluster="state"),
            "stacked": StackedDID("roa", cluster="state")}
    if sim <= 2:
        ests["imputation"] = Imputation("roa")
    err: dict[str, list[float]] = {k: [] for k in ests}
    for r in range(n):
        p = _draw(sim, seed + r)
        for k, e in ests.items():
            truth = (_clean_att(p) if k in ("cs", "sa") and sim >= 3
                     else e.estimand(p)["ATT"])
            err[k].append(e.fit(p).estimate - truth)
    return {k: np.array(v) for k, v in err.items()}


def _assert_unbiased(errs: dict[str, np.ndarray]) -> None:
    for k, e in errs.items():
        se = e.std(ddof=1) / np.sqrt(e.size)
        assert abs(e.mean()) < 3.5 * se, (k, e.mean(), se)


def test_modern_estimators_recover_their_targets_in_simulation_6():
    _assert_unbiased(_modern(6, 6))


@pytest.mark.slow
@pytest.mark.parametrize("sim", range(1, 7))
def test_modern_estimators_recover_their_targets_in_every_simulation(sim):
    _assert_unbiased(_modern(sim, 60))


@pytest.mark.slow
@pytest.mark.parametrize("sim", range(1, 7))
def test_twfe_bias_matches_the_population_estimand_in_every_simulation(sim):
    noise, gap = _twfe_errors(sim, 60)
    se = noise.std(ddof=1) / np.sqrt(noise.size)
    assert abs(noise.mean()) < 3.5 * se


def test_estimands_match_what_cs_sa_and_imputation_estimate_when_all_are_treated():
    p = _draw(6, 1)
    for est in (CallawaySantAnna("roa", control_group="notyettreated"),
                SunAbraham("roa", cluster="state")):
        assert est.estimand(p)["ATT"] == pytest.approx(_clean_att(p), abs=1e-9)
    Imputation("roa").fit(p)
