"""Quantile DID and changes-in-changes."""

import numpy as np
import pytest
import statsmodels.api as sm

pytestmark = [pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.IterationLimitWarning")]

from estimators.quantile import ChangesInChanges, QuantileDID, quantile_regression
from simulate.design import Assignment, Effect
from simulate.province import draw_province


def test_quantile_regression_engel_published():
    # Koenker's Engel data (statsmodels ships it); R quantreg rq(foodexp ~ income, tau = .5):
    # (Intercept) 81.4822474, income 0.5601806 (quantreg documentation / Koenker 2005)
    d = sm.datasets.engel.load_pandas().data
    x = sm.add_constant(d["income"].to_numpy())
    b = quantile_regression(d["foodexp"].to_numpy(), x, 0.5)
    assert b[0] == pytest.approx(81.4822474, abs=5e-7)
    assert b[1] == pytest.approx(0.5601806, abs=5e-8)


@pytest.mark.parametrize("q", [0.1, 0.9])
def test_quantile_regression_equals_statsmodels_where_it_converges(province, q):
    # the pooled DID design (constant, pilot, post, d, a control): statsmodels' IRLS
    # converges here at q = 0.1 and 0.9 (at the median it cycles), so the two must agree
    pilot = (province["cohort"] > 0).astype(float)
    post = (province["time"] >= 2011).astype(float)
    x = np.column_stack([np.ones(len(province)), pilot, post, province["d"], province["lnpgdp"]])
    y = province["lnce"].to_numpy()
    ours = quantile_regression(y, x, q)
    ref = sm.QuantReg(y, x).fit(q=q, p_tol=1e-12, max_iter=20000).params
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantile_did_with_unit_dummies_is_the_lp_optimum(province, q):
    # with 30 unit and 19 year dummies statsmodels' IRLS stops short of the optimum: the
    # exact LP solution must have a check loss no larger than statsmodels'
    est = QuantileDID("lnce", quantiles=(q,), n_boot=0)
    y, x = est._design(province)
    ours = quantile_regression(y, x, q)
    ref = sm.QuantReg(y, x).fit(q=q, p_tol=1e-10, max_iter=3000).params
    loss = lambda b: np.sum((y - x @ b) * (q - ((y - x @ b) < 0)))  # noqa: E731
    assert loss(ours) <= loss(ref) + 1e-9
    assert est.fit(province).terms["estimate"].iloc[0] == pytest.approx(ours[1], abs=1e-12)


def test_cic_recovers_known_quantile_effects():
    # the effect is larger for richer provinces (het_pgdp), so it differs across the
    # treated units' outcome distribution; random pilots, common date 2011
    n = 60
    err = []
    for s in range(n):
        p = draw_province(np.random.default_rng(300 + s), assignment=Assignment(kind="random", n_pilots=10),
                          effect=Effect(att=-0.3, het_pgdp=-0.15))
        est = ChangesInChanges("lnce", quantiles=(0.25, 0.5, 0.75), n_boot=0)
        fit = est.fit(p).terms.set_index("term")["estimate"]
        truth = est.estimand(p)
        err.append([fit[k] - truth[k] for k in ("q0.25", "q0.5", "q0.75")])
    err = np.array(err)
    bias, mcse = err.mean(axis=0), err.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(bias) < 3 * mcse + 0.01), (bias, mcse)


def test_cic_bootstrap_and_one_date_only(province, staggered):
    a = ChangesInChanges("lnce", n_boot=30).fit(province, rng=np.random.default_rng(0))
    b = ChangesInChanges("lnce", n_boot=30).fit(province, rng=np.random.default_rng(0))
    assert a.std_error == b.std_error > 0 and len(a.terms) == 9
    with pytest.raises(Exception, match="one treatment date"):
        ChangesInChanges("lnce").fit(staggered)


def test_quantile_did_bootstrap(province):
    e = QuantileDID("lnce", quantiles=(0.25, 0.5, 0.75), n_boot=10).fit(province, rng=np.random.default_rng(1))
    assert (e.terms["std_error"] > 0).all() and e.term == "tau_q0.5"
