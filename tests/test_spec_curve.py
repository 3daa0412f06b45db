"""Specification curve: every row equals an individual run of the same specification."""

import numpy as np
import pytest

from estimators.event_study import EventStudy
from estimators.panel import OptionError
from estimators.twfe import TWFE
from experiments.run import compose, run
from experiments.spec_curve import specifications


def test_spec_curve_rows_equal_individual_fits(tmp_path):
    cfg = compose(["experiment=spec_curve", "backend=loky", "backend.n_jobs=2",
                   "experiment.spec.treatment_year=[2011,2012]", "experiment.outcomes=[lnce]"])
    out = run(cfg, tmp_path)
    table = out["spec_curve"]
    assert len(table) == len(specifications(cfg)) == 1 * 3 * 1 * 1 * 2 * 2 * 2
    assert (tmp_path / "spec_curve.csv").exists() and (tmp_path / "figures" / "spec_curve.png").exists()
    from experiments.build import load_or_draw

    panel, _ = load_or_draw(cfg)
    controls = {"none": (), "all": tuple(cfg.data.controls), "score": tuple(cfg.data.score_covariates)}
    for row in table.sample(6, random_state=0).itertuples():
        data = panel.query("time <= 2016") if row.sample == "to_2016" else panel
        data = data.assign(cohort=np.where(data["cohort"] > 0, int(row.treatment_year), 0))
        data = data.assign(d=((data["cohort"] > 0) & (data["time"] >= data["cohort"])).astype(int))
        cls = TWFE if row.estimator == "twfe" else EventStudy
        ref = cls("lnce", controls=controls[row.controls]).fit(data)
        assert row.estimate == ref.estimate and row.std_error == ref.std_error
    s = out["summary"]
    assert s["share_significant_negative"] == pytest.approx(
        np.mean((table["p_value"] < 0.05) & (table["estimate"] < 0)))


def test_region_by_year_and_absorbed_specifications(province):
    from experiments.spec_curve import Spec, run_spec

    panel = province.assign(region=province["unit"] % 3)
    base = dict(outcome="lnce", controls="none", control_columns=(), cluster="unit",
                treatment_year="data", sample="all", query="", estimator="twfe")
    row = run_spec(panel, Spec(time_effects="region", **base))
    ref = TWFE("lnce", time_by="region").fit(panel)
    assert row["error"] == "" and row["estimate"] == ref.estimate
    # pilot-by-year effects absorb the treatment: recorded as a failed specification
    bad = run_spec(panel, Spec(time_effects="pilot_profile", **base))
    assert np.isnan(bad["estimate"]) and "absorbed" in bad["error"]


def test_bad_spec_estimator():
    cfg = compose(["experiment=spec_curve", "experiment.spec.estimators=[ols]"])
    with pytest.raises(OptionError, match="experiment.spec.estimators entry='ols'"):
        specifications(cfg)
