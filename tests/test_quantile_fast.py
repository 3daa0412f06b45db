"""The batched Frisch-Newton engine of the quantile DID (estimators.quantile, engine "ipm")
against the exact LP (HiGHS, engine "highs") and R quantreg.

Where the LP has one solution the engine must return it (1e-7 on every coefficient; it is a
vertex solved exactly, so in practice ~1e-14). Where it has a face of solutions -- common in
DID designs: at q = 0.5 a year of 30 units, or 48 treated cells, makes the dual degenerate
-- any vertex of the face is an exact minimiser: the engine must say so (status 1) and
reach the reference's loss; the panel's own estimates are then HiGHS's vertex anyway.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import estimators.quantile as Q
from estimators.design import codes_of
from estimators.panel import OptionError
from simulate.province import draw_province

DATA = Path(__file__).parent / "data"


def _loss(y, x, b, q):
    r = y - x @ b
    return float(np.sum(r * (q - (r < 0))))


def _batch(panel, qs, controls=(), engine="ipm"):
    est = Q.QuantileDID("lnce", controls=controls)
    y, x = est._design(panel)
    u, nu = codes_of(panel["unit"].to_numpy())
    t, nt = codes_of(panel["time"].to_numpy())
    b = len(qs)
    kd = 2 + len(controls)
    fit = Q.quantile_regression_batch(np.tile(y, (b, 1)), np.tile(x[:, :kd], (b, 1, 1)), np.asarray(qs),
                                      [(np.tile(u, (b, 1)), nu), (np.tile(t, (b, 1)), nt)], engine=engine)
    return y, x, fit


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("controls", [(), ("lnpgdp",)])
def test_unique_solutions_equal_the_lp(seed, controls):
    # 0.13, 0.37, 0.61, 0.83: q x (19, 30, 48, 570) not whole numbers, and the certificate
    # proves every one of these problems has a single solution (status 2)
    p = draw_province(np.random.default_rng(seed))
    qs = (0.13, 0.37, 0.61, 0.83)
    y, x, fit = _batch(p, qs, controls)
    assert fit.fallback == 0
    for i, q in enumerate(qs):
        if fit.status[i] == 2:
            np.testing.assert_allclose(fit.coef[i], Q.quantile_regression(y, x, q), rtol=0, atol=1e-7)
    assert (fit.status == 2).sum() >= 3          # at most one face among these quantiles


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("controls", [(), ("lnpgdp",)])
def test_faces_of_solutions_reach_the_lp_minimum(seed, controls):
    p = draw_province(np.random.default_rng(seed))
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    y, x, fit = _batch(p, qs, controls)
    assert set(fit.status.tolist()) <= {1, 2} and fit.fallback == 0
    for i, q in enumerate(qs):
        ref = Q.quantile_regression(y, x, q)
        assert _loss(y, x, fit.coef[i], q) == pytest.approx(_loss(y, x, ref, q), rel=1e-11)
        if fit.status[i] == 2:
            np.testing.assert_allclose(fit.coef[i], ref, rtol=0, atol=1e-7)
    # the studies' quantiles on this design: most have a face of solutions, so the LP's
    # own tau is one point of an interval (see the module docstring of estimators.quantile)
    assert (fit.status == 1).sum() >= 3


def test_bootstrap_draws_equal_the_lp(monkeypatch):
    # the same generator gives the same resampled panels under both engines; every draw's
    # problem at every quantile is re-solved by HiGHS here: unique ones must agree to 1e-7,
    # the others reach the same minimum loss
    p = draw_province(np.random.default_rng(4))
    seen = []
    real = Q.quantile_regression_batch

    def record(y, dense, taus, factors=(), engine=None, reference=None):
        out = real(y, dense, taus, factors, engine=engine, reference=reference)
        seen.append((y, dense, taus, factors, out))
        return out

    monkeypatch.setattr(Q, "quantile_regression_batch", record)
    Q.QuantileDID("lnce", quantiles=(0.25, 0.5, 0.61), controls=("lnpgdp",), n_boot=12).fit(
        p, rng=np.random.default_rng(7))
    (y, dense, taus, factors, out), = seen
    assert y.shape[0] == 13 * 3 and out.fallback <= 3
    n_unique = 0
    for i in range(y.shape[0]):
        x = Q._dense_design(dense[i], [(c[i], lv) for c, lv in factors])
        ref = Q.quantile_regression(y[i], x, taus[i])
        assert _loss(y[i], x, out.coef[i], taus[i]) == pytest.approx(_loss(y[i], x, ref, taus[i]), rel=1e-11)
        if out.status[i] == 2:
            n_unique += 1
            np.testing.assert_allclose(out.coef[i], ref, rtol=0, atol=1e-7)
    assert n_unique >= 10


def test_fit_engines_agree(province):
    # quantiles whose problems are all unique (point estimate and every draw): the whole
    # Estimate -- estimates and bootstrap SEs -- is the same under both engines. A face of
    # solutions needs q |S| whole for a set S of rows whose indicator X spans (a year:
    # 30 rows, ten years: 300, a unit: 19, ...): 0.3719 and 0.6143 avoid every such S here
    est = Q.QuantileDID("lnce", quantiles=(0.3719, 0.6143), n_boot=15)
    a = est.fit(province, rng=np.random.default_rng(2))
    try:
        Q.QR_ENGINE = "highs"
        b = est.fit(province, rng=np.random.default_rng(2))
    finally:
        Q.QR_ENGINE = "ipm"
    np.testing.assert_allclose(a.terms["estimate"], b.terms["estimate"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(a.terms["std_error"], b.terms["std_error"], rtol=0, atol=1e-7)
    # at the studies' quantiles the point estimates are HiGHS's (faces included)
    est = Q.QuantileDID("lnce", quantiles=(0.1, 0.5, 0.9), n_boot=0)
    c = est.fit(province)
    Q.QR_ENGINE = "highs"
    try:
        d = est.fit(province)
    finally:
        Q.QR_ENGINE = "ipm"
    np.testing.assert_allclose(c.terms["estimate"], d.terms["estimate"], rtol=0, atol=1e-10)


def test_dense_designs_without_dummies():
    # no factors: the plain Frisch-Newton path (Engel data, statsmodels ships it)
    sm = pytest.importorskip("statsmodels.api")
    d = sm.datasets.engel.load_pandas().data
    x = sm.add_constant(d["income"].to_numpy())
    y = d["foodexp"].to_numpy()
    qs = np.array([0.15, 0.5, 0.85])
    fit = Q.quantile_regression_batch(np.tile(y, (3, 1)), np.tile(x, (3, 1, 1)), qs)
    for i, q in enumerate(qs):
        np.testing.assert_allclose(fit.coef[i], Q.quantile_regression(y, x, q), rtol=0, atol=1e-7)
    # R quantreg rq(foodexp ~ income, tau = .5): 81.4822474, 0.5601806 (Koenker 2005)
    assert fit.coef[1, 0] == pytest.approx(81.4822474, abs=5e-7)
    assert fit.coef[1, 1] == pytest.approx(0.5601806, abs=5e-8)


def test_r_quantreg_on_a_small_panel():
    # tests/data/quantile_small_panel.csv (10 provinces x 2007-2015), R 4.2.2, quantreg 5.94:
    #   df <- read.csv("quantile_small_panel.csv")
    #   coef(rq(lnce ~ d + lnpgdp + factor(unit) + factor(time), tau = tau, data = df,
    #           method = "br"))[c("(Intercept)", "d", "lnpgdp")]
    # tau = 0.43: 9.3086730885 -0.3768059662 0.1168721216
    # tau = 0.61: 8.9909391995 -0.3938758820 0.6569419887
    # tau = 0.71: 9.1997649806 -0.4087447126 0.3146238268
    # (at tau = 0.37 rq warns "Solution may be nonunique", and our certificate says status 1)
    r = {0.43: (9.3086730885, -0.3768059662, 0.1168721216),
         0.61: (8.9909391995, -0.3938758820, 0.6569419887),
         0.71: (9.1997649806, -0.4087447126, 0.3146238268)}
    s = pd.read_csv(DATA / "quantile_small_panel.csv")
    qs = (0.37, 0.43, 0.61, 0.71)
    _, _, fit = _batch(s, qs, ("lnpgdp",))
    assert fit.status.tolist() == [1, 2, 2, 2]
    for i, q in enumerate(qs[1:], start=1):
        np.testing.assert_allclose(fit.coef[i, :3], r[q], rtol=0, atol=1e-9)


def test_engine_choice_is_checked():
    with pytest.raises(OptionError, match="engine"):
        Q.quantile_regression_batch(np.zeros((1, 3)), np.ones((1, 3, 1)), np.array([0.5]), engine="simplex")
