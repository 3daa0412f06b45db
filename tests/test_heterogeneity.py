"""Heterogeneity by subgroup and the entropy-weight index."""

import numpy as np
import pandas as pd
import pytest
from linearmodels import PanelOLS
from scipy import stats

from estimators.heterogeneity import Heterogeneity, holm
from estimators.panel import EstimationError, PanelError
from experiments.montecarlo import binomial_band
from simulate.city import CityDGP, draw_city
from simulate.index import entropy_weights


@pytest.fixture(scope="module")
def city():
    return draw_city(np.random.default_rng(3), CityDGP(het_developed=0.1))


def test_group_effects_and_equality_match_linearmodels(city):
    est = Heterogeneity("nqpf", by="developed", controls=("lnpgdp",), ssc="linearmodels", dist="normal")
    e = est.fit(city)
    p = city.assign(**{f"g{k}": city["d"] * (city["developed"] == k) for k in (0, 1)}).set_index(["unit", "time"])
    ref = PanelOLS(p["nqpf"], p[["g0", "g1", "lnpgdp"]], entity_effects=True, time_effects=True).fit(
        cov_type="clustered", cluster_entity=True)
    t = e.terms.set_index("term")
    np.testing.assert_allclose(t["estimate"], ref.params[["g0", "g1"]], rtol=1e-8)
    np.testing.assert_allclose(t["std_error"], ref.std_errors[["g0", "g1"]], rtol=1e-8)
    diff = ref.params["g1"] - ref.params["g0"]
    v = ref.cov.loc["g1", "g1"] + ref.cov.loc["g0", "g0"] - 2 * ref.cov.loc["g0", "g1"]
    assert e.estimate == pytest.approx(diff, rel=1e-8)
    assert e.diagnostics["equality_F"] == pytest.approx(diff**2 / v, rel=1e-8)
    assert e.diagnostics["equality_p"] == pytest.approx(stats.chi2.sf(diff**2 / v, 1), rel=1e-8)
    truth = est.estimand(city)
    assert truth["gap"] == pytest.approx(0.1)


def test_holm_by_hand():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm(np.array([0.2, 0.001])), [0.2, 0.002])


def test_bad_group_columns(city):
    with pytest.raises(PanelError, match="'region' is not in the panel"):
        Heterogeneity("nqpf", by="region").fit(city)
    with pytest.raises(PanelError, match="constant within each unit"):
        Heterogeneity("nqpf", by="time").fit(city)
    with pytest.raises(EstimationError, match="at least two"):
        Heterogeneity("nqpf", by="group").fit(city[city["group"].isin(["other", "Hubei"])])


def test_size_under_no_difference_and_power_under_one():
    n = 150
    null_rej, alt_rej = 0, 0
    for s in range(n):
        null = draw_city(np.random.default_rng(900 + s), CityDGP(cohort_design="thirds", never_share=0.3))
        alt = draw_city(np.random.default_rng(900 + s), CityDGP(cohort_design="thirds", never_share=0.3,
                                                               het_developed=0.05))
        null_rej += Heterogeneity("nqpf").fit(null).diagnostics["equality_p"] < 0.05
        alt_rej += Heterogeneity("nqpf").fit(alt).diagnostics["equality_p"] < 0.05
    lo, hi = binomial_band(0.05, n)
    assert lo <= null_rej / n <= hi
    assert alt_rej / n > 0.8


def test_entropy_weights_by_hand():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 10.0, 20.0], "c": [5.0, 1.0, 3.0]})
    index, w = entropy_weights(frame, {"a": 1, "b": 1, "c": -1})
    # a -> (0, .5, 1), p = (0, 1/3, 2/3); b -> (0, 0, 1), p = (0, 0, 1); c (less is better)
    # -> (0, 1, .5), p = (0, 2/3, 1/3)
    ln3 = np.log(3)
    e_a = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3)) / ln3
    e_b = 0.0
    e_c = e_a
    d = np.array([1 - e_a, 1 - e_b, 1 - e_c])
    np.testing.assert_allclose(w.to_numpy(), d / d.sum(), rtol=1e-12)
    z = np.array([[0, 0, 0], [0.5, 0, 1], [1, 1, 0.5]])
    np.testing.assert_allclose(index.to_numpy(), z @ (d / d.sum()), rtol=1e-12)
    with pytest.raises(PanelError, match="does not vary"):
        entropy_weights(frame.assign(b=1.0), {"b": 1})


def test_contract(city):
    import pickle

    before = city.copy()
    est = Heterogeneity("nqpf", by="resource")
    a, b = est.fit(city), est.fit(city)
    pd.testing.assert_frame_equal(city, before)
    assert a.estimate == b.estimate and pickle.loads(pickle.dumps(a)).estimate == a.estimate
    assert {"term", "estimate", "std_error", "p_value", "p_holm"} <= set(a.terms.columns)


def test_cli_forest_plot(tmp_path):
    from experiments.run import compose, run

    run(compose(["data=city", "timing=market_open", "estimator=[twfe,heterogeneity]",
                 "data.het_developed=0.1"]), tmp_path)
    assert (tmp_path / "figures" / "heterogeneity_heterogeneity.png").exists()
    assert "Effects by subgroup" in (tmp_path / "report.md").read_text()
