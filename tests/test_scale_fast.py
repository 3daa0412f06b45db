"""The fast fixed-effects engine (numba kernels and closed forms used from
``estimators.fe.FAST_MIN_ROWS`` rows) pinned to the numpy reference engine.

Reference: the same estimator run with ``estimators.fe.FE_ENGINE = "numpy"`` (the algorithms
as first written and pinned to linearmodels, statsmodels, R fixest / did elsewhere in the
suite: tests/test_twfe.py, test_event_study.py, test_shapes.py, test_staggered.py). Both
engines are forced on small panels here (``FAST_MIN_ROWS = 0``) so that the test is fast;
estimates and standard errors must agree to 1e-10 on balanced and unbalanced panels, with
controls and with weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import estimators.fe as fe
from estimators.event_study import EventStudy, event_dummies, event_dummy_matrix
from estimators.imputation import Imputation
from estimators.sun_abraham import SunAbraham, _cells
from estimators.twfe import TWFE
from estimators.design import event_time
from experiments.bench import staggered_panel

pytest.importorskip("numba")

TOL = 1e-10


@pytest.fixture(scope="module")
def panels() -> dict[str, pd.DataFrame]:
    """A balanced staggered panel (three cohorts, never-treated units, covariate ``x``,
    weights ``w``, a second covariate ``x2``, a cluster column ``state`` nesting units) and an
    unbalanced one (8% of rows dropped at random)."""
    p = staggered_panel(240, 10, seed=4)
    rng = np.random.default_rng(5)
    p["w"] = rng.uniform(0.2, 3.0, len(p))
    p["x2"] = rng.standard_normal(len(p)) + 0.1 * p["time"]
    p["state"] = p["unit"] // 4  # clusters that nest units
    drop = rng.random(len(p)) < 0.08
    return {"balanced": p, "unbalanced": p.loc[~drop].reset_index(drop=True)}


def _both(monkeypatch: pytest.MonkeyPatch, fn):
    """``fn()`` under the fast engine and under the reference engine."""
    monkeypatch.setattr(fe, "FAST_MIN_ROWS", 0)
    monkeypatch.setattr(fe, "FE_ENGINE", "numba")
    fast = fn()
    monkeypatch.setattr(fe, "FE_ENGINE", "numpy")
    ref = fn()
    return fast, ref


def _same_estimate(fast, ref) -> None:
    assert fast.estimate == pytest.approx(ref.estimate, rel=TOL, abs=TOL)
    assert fast.std_error == pytest.approx(ref.std_error, rel=TOL, abs=TOL)
    cols = ["estimate", "std_error", "p_value", "conf_low", "conf_high"]
    assert list(fast.terms["term"]) == list(ref.terms["term"])
    np.testing.assert_allclose(fast.terms[cols].to_numpy(float), ref.terms[cols].to_numpy(float),
                               rtol=TOL, atol=TOL)
    if ref.event_cov is not None:
        np.testing.assert_allclose(fast.event_cov.to_numpy(), ref.event_cov.to_numpy(),
                                   rtol=1e-9, atol=1e-14)
    assert fast.diagnostics.keys() == ref.diagnostics.keys()
    for k, v in ref.diagnostics.items():
        assert fast.diagnostics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


SPECS = [  # (controls, weights)
    ((), None),
    (("x", "x2"), None),
    (("x",), "w"),
]


@pytest.mark.parametrize("data", ["balanced", "unbalanced"])
@pytest.mark.parametrize("controls, weights", SPECS)
@pytest.mark.parametrize("kind", ["twfe", "event_study", "sun_abraham"])
def test_fast_engine_equals_reference(monkeypatch, panels, data, controls, weights, kind):
    panel = panels[data]
    make = {"twfe": lambda: TWFE("y", controls=controls, weights=weights),
            "event_study": lambda: EventStudy("y", controls=controls, weights=weights,
                                              leads=4, lags=4),
            "sun_abraham": lambda: SunAbraham("y", controls=controls, weights=weights)}[kind]
    fast, ref = _both(monkeypatch, lambda: make().fit(panel))
    _same_estimate(fast, ref)


@pytest.mark.parametrize("opts", [
    dict(se="robust"), dict(se="conventional"), dict(ssc="full"), dict(dist="normal"),
    dict(cluster="state"),
])
def test_fast_engine_other_inference_options(monkeypatch, panels, opts):
    for est in (TWFE("y", controls=("x",), **opts), EventStudy("y", **opts)):
        fast, ref = _both(monkeypatch, lambda: est.fit(panels["unbalanced"]))
        _same_estimate(fast, ref)


def test_fast_engine_event_study_variants(monkeypatch, panels):
    """Every observed event time (no window), dropped endpoints (an unbalanced design from
    a balanced panel), Sun-Abraham with the last-treated cohort as comparison."""
    for est in (EventStudy("y", leads=None, lags=None), EventStudy("y", leads=2, lags=2,
                                                                    bin_endpoints=False),
                SunAbraham("y", control_group="lasttreated", controls=("x",))):
        fast, ref = _both(monkeypatch, lambda: est.fit(panels["balanced"]))
        _same_estimate(fast, ref)


@pytest.mark.parametrize("data", ["balanced", "unbalanced"])
@pytest.mark.parametrize("controls", [(), ("x", "x2")])
def test_imputation_fast_path_with_kernels_equals_dense(monkeypatch, panels, data, controls):
    """The imputation estimator's Schur-complement path with the compiled sums (forced on a
    small panel) against the dense dummy regression (``fast=False``), and its BJS pre-trend
    test (a fixed-effects fit on the untreated rows) under both engines."""
    panel = panels[data]
    monkeypatch.setattr(fe, "FAST_MIN_ROWS", 0)
    fast = Imputation("y", controls=controls).fit(panel)
    monkeypatch.setattr(fe, "FE_ENGINE", "numpy")
    dense = Imputation("y", controls=controls, fast=False).fit(panel)
    _same_estimate(fast, dense)
    assert "pretrend_p" in fast.diagnostics


def test_within_kernels_equal_reference(monkeypatch):
    rng = np.random.default_rng(11)
    n_units, n_periods = 150, 9
    unit = np.repeat(np.arange(n_units), n_periods)
    time = np.tile(np.arange(n_periods), n_units)
    z = rng.standard_normal((unit.size, 5))
    z[:, 4] = 2.5  # a constant column
    keep = rng.random(unit.size) > 0.25
    w = rng.uniform(0.1, 2.0, unit.size)
    fast, ref = _both(monkeypatch, lambda: fe.within_balanced(z, n_units, n_periods))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
    for weights in (None, w[keep]):
        fast, ref = _both(monkeypatch, lambda: fe.within_general(
            z[keep], unit[keep], time[keep], n_units, n_periods, weights))
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
    # rank-deficient period block: group-by-period cells (time_by), where one cell dummy
    # per group is spanned by the unit effects, as estimators.stacked uses it
    group = (unit % 3)[keep]
    cells = group * n_periods + time[keep]
    _, cell_codes = np.unique(cells, return_inverse=True)
    n_cells = int(cell_codes.max()) + 1
    fast, ref = _both(monkeypatch, lambda: fe.within_general(
        z[keep], unit[keep], cell_codes, n_units, n_cells))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-11)
    # a unit observed once: its row is all unit effect
    single = np.r_[unit[keep], n_units]
    zs = np.vstack([z[keep], rng.standard_normal((1, 5))])
    ts = np.r_[time[keep], 3]
    fast, ref = _both(monkeypatch, lambda: fe.within_general(zs, single, ts, n_units + 1,
                                                             n_periods))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)


def test_score_and_norm_kernels(monkeypatch):
    monkeypatch.setattr(fe, "FAST_MIN_ROWS", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 4))
    x[:, 2] = 0.1  # constant: its centred norm is exactly zero, as in the reference
    e = rng.standard_normal(500)
    g = rng.integers(0, 37, 500)
    np.testing.assert_allclose(fe.cluster_scores_of(x, e, g, 37),
                               fe.cluster_scores(x * e[:, None], g, 37), rtol=1e-12, atol=1e-13)
    xc = x - x.mean(axis=0)
    norms = fe.centred_sq_norms(x)
    assert norms[2] == 0.0
    np.testing.assert_allclose(norms, np.einsum("ij,ij->j", xc, xc), rtol=1e-12, atol=1e-20)
    np.testing.assert_allclose(fe.group_sums(x, g, 37, e),
                               np.column_stack([np.bincount(g, x[:, j] * e, 37)
                                                for j in range(4)]), rtol=1e-12, atol=1e-13)


def test_dummy_builders_equal_the_column_versions(panels):
    """The one-pass indicator matrices equal the column-by-column constructions they
    replace (event study: :func:`event_dummies`; Sun-Abraham: the sorted set of cells)."""
    p = panels["unbalanced"]
    rel = event_time(p)
    for leads, lags, binned in ((3, 3, True), (2, 4, False), (6, 6, True)):
        cols, times, keep = event_dummies(rel, leads, lags, -1, binned)
        names, mat, times2, keep2 = event_dummy_matrix(rel, leads, lags, -1, binned)
        assert names == list(cols) and times == times2
        np.testing.assert_array_equal(keep, keep2)
        np.testing.assert_array_equal(mat, np.column_stack(list(cols.values())))
    cohort = p["cohort"].to_numpy()
    cells, cell_of = _cells(cohort, rel, -1)
    assert cells == sorted({(int(g), int(e)) for g, e in zip(cohort, rel) if g > 0 and e != -1})
    for j, (g, e) in enumerate(cells):
        np.testing.assert_array_equal(cell_of == j, (cohort == g) & (rel == e))


def test_small_panels_take_the_reference_path(panels):
    """Below FAST_MIN_ROWS nothing changes: the default engine gives the reference engine's
    numbers bit for bit (the published pins stay as they were)."""
    assert len(panels["balanced"]) < fe.FAST_MIN_ROWS
    assert not fe.use_fast(len(panels["balanced"]))
