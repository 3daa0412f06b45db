"""Calibration recovers the simulator's own parameters; the calibrated config round-trips;
the Bertrand-Duflo-Mullainathan placebo keeps the data's cohort sizes."""

import numpy as np
import pytest

from experiments.calibrate import calibrate, fake_pilots, load_calibration, save_calibration
from experiments.run import compose, run
from simulate.calibrated import CalibratedDGP, draw_calibrated
from simulate.design import Effect

TRUE = CalibratedDGP(
    outcome="y", first_year=2000, last_year=2018, n_units=3000,
    cohort_sizes={"2011": 600, "2014": 300}, unit_sd=0.4, rho=0.6, sigma=0.1,
    treated_shift=-0.2, beta={"x1": 0.5, "x2": -0.3}, gamma={"x1": 0.2},
    year_effects=list(np.linspace(0.0, 0.9, 19)),
    covariates={
        "x1": {"mean_treated": 1.0, "mean_control": 0.4, "sd_treated": 0.5, "sd_control": 0.6,
               "trend": 0.05, "rho": 0.7, "sigma": 0.08},
        "x2": {"mean_treated": -0.5, "mean_control": -0.3, "sd_treated": 0.3, "sd_control": 0.3,
               "trend": -0.01, "rho": 0.4, "sigma": 0.05},
    },
)


@pytest.fixture(scope="module")
def fitted():
    panel = draw_calibrated(np.random.default_rng(0), TRUE, effect=Effect(att=-0.3))
    return calibrate(panel, "y", ["x1", "x2"]), panel


def test_recovers_outcome_parameters(fitted):
    est, _ = fitted
    # tolerances: a 3,000-unit panel; Nickell's correction is first-order in 1/T
    assert est.rho == pytest.approx(TRUE.rho, abs=0.05)
    assert est.sigma == pytest.approx(TRUE.sigma, rel=0.10)
    assert est.unit_sd == pytest.approx(TRUE.unit_sd, rel=0.10)
    assert est.treated_shift == pytest.approx(TRUE.treated_shift, abs=0.05)
    for k, v in TRUE.beta.items():
        assert est.beta[k] == pytest.approx(v, abs=0.03)
    assert est.gamma["x1"] == pytest.approx(0.2, abs=0.05)
    lam = np.asarray(est.year_effects)
    np.testing.assert_allclose(lam - lam[0], np.asarray(TRUE.year_effects) - TRUE.year_effects[0], atol=0.02)
    assert est.cohort_sizes == {"2011": 600, "2014": 300} and est.n_units == 3000


def test_recovers_covariate_parameters(fitted):
    est, _ = fitted
    for name, par in TRUE.covariates.items():
        got = est.covariates[name]
        assert got["rho"] == pytest.approx(par["rho"], abs=0.05), name
        assert got["sigma"] == pytest.approx(par["sigma"], rel=0.10), name
        assert got["trend"] == pytest.approx(par["trend"], abs=0.003), name
        for g in ("treated", "control"):
            assert got[f"mean_{g}"] == pytest.approx(par[f"mean_{g}"], abs=0.05), (name, g)
            assert got[f"sd_{g}"] == pytest.approx(par[f"sd_{g}"], rel=0.10), (name, g)
    assert est.selection > 0.5  # treated units have higher x1


def test_saved_calibration_round_trips(fitted, tmp_path):
    est, _ = fitted
    path = save_calibration(est, tmp_path / "calibrated.yaml", "test", ["x1", "x2"])
    loaded = load_calibration(path)
    assert loaded["rho"] == pytest.approx(est.rho) and loaded["outcomes"] == ["y"]
    cfg = compose(["data=calibrated", f"data.from={path}", "experiment.outcomes=[y]",
                   "estimator=[twfe]", "timing=market_open"])
    out = run(cfg, tmp_path / "run")
    head = out["table"]
    assert head["truth"].iloc[0] == pytest.approx(-0.3) and head["error"].iloc[0] == ""


def test_fake_pilots_keep_cohort_sizes(province):
    data = fake_pilots(province, "lnce", np.random.default_rng(0))
    assert data["unit"].nunique() == 24  # the never-treated units only
    assert (data.groupby("unit")["cohort"].first() > 0).sum() == 6
    assert (data["te_lnce"] == 0).all()


def test_calibrate_experiment_on_the_example(tmp_path):
    cfg = compose(["data=example", "experiment=calibrate", "experiment.outcomes=[lnce]",
                   "experiment.n_reps=20", "backend=sequential", f"experiment.store={tmp_path / 's'}"])
    out = run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "calibrated.yaml").exists()
    assert (tmp_path / "run" / "placebo_diagnosands.csv").exists()
    diag = out["placebo"]
    assert set(diag["estimator"]) == {"twfe", "twfe_controls", "event_study"}
    assert (diag["rejection_is"] == "size").all() and (diag["n_draws"] == 20).all()


def test_fake_pilots_with_an_injected_effect_and_selection_on_observables(province):
    """experiment.bdm.effect adds the effect to the fake pilots' treated cells and records
    it as the truth; experiment.bdm.selection draws them with probability rising in a
    column's first-period value (here: richer provinces far more often than uniform)."""
    plain = fake_pilots(province, "lnce", np.random.default_rng(0))
    hit = fake_pilots(province, "lnce", np.random.default_rng(0), effect=-0.1)
    treated = hit["d"] == 1
    assert np.allclose(hit["lnce"] - plain["lnce"], -0.1 * treated)
    assert np.allclose(hit["te_lnce"], -0.1 * treated)
    assert np.allclose(hit["y0_lnce"], plain["lnce"])
    first = province[province["cohort"] == 0].sort_values("time").groupby("unit")["lnpgdp"].first()
    share_rich = []
    for seed in range(200):
        sel = fake_pilots(province, "lnce", np.random.default_rng(seed), selection="lnpgdp",
                          strength=3.0)
        pilots = sel.loc[sel["cohort"] > 0, "unit"].unique()
        share_rich.append(np.mean(first.loc[pilots] > first.median()))
    assert np.mean(share_rich) > 0.75  # uniform draws would give 0.5


def test_calibrate_reports_coverage_horizons_and_a_verdict(tmp_path):
    cfg = compose(["data=example", "experiment=calibrate", "experiment.outcomes=[lnce]",
                   "experiment.n_reps=12", "backend=sequential", "experiment.figures=false",
                   "estimator=[twfe,twfe_cr2,event_study]", "experiment.bdm.effect=-0.1",
                   f"experiment.store={tmp_path / 's'}"])
    out = run(cfg, tmp_path / "run")
    v = out["verdict"].set_index("estimator")
    assert set(v.index) == {"twfe", "twfe_cr2", "event_study"}
    assert v["coverage"].notna().all() and v["size"].notna().all()
    assert (tmp_path / "run" / "placebo_by_horizon.csv").exists()
    assert {-2, 0}.issubset(set(out["horizons"]["event_time"]))
