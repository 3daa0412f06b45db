"""Callaway-Sant'Anna's fast engine pinned to the reference engine (issue #19).

The reference engine (``engine="reference"``) is the per-cell code path with dense
influence functions, itself pinned to R did and csdid in tests/test_shapes.py and
tests/test_staggered.py. The fast engine (cohort sums, influence functions in factor form,
compiled bootstrap) must report the same numbers to rounding on every panel shape, and the
multiplier bootstrap must use the very same draws: same generator, same numbers, whatever
the threads and chunk sizes, and the generator left where the reference leaves it.
"""

import numpy as np
import pandas as pd
import pytest

import estimators.callaway_santanna as cs
from estimators.callaway_santanna import CallawaySantAnna
from estimators.panel import OptionError


def panel(n=150, periods=8, seed=0, never=True, step=1, first=2001):
    """Balanced panel with unequal cohorts: one treated in the second period (no pre-period
    under anticipation), an always-treated one (dropped), one treated after the panel ends,
    a covariate, unit weights; ``step`` 2 gives biennial years."""
    rng = np.random.default_rng(seed)
    years = first + step * np.arange(periods)
    choices = [years[1], years[3], years[4], years[6], years[0], years[-1] + step]
    probs = [0.1, 0.25, 0.12, 0.15, 0.03, 0.05]
    if never:
        choices, probs = [0] + choices, [0.3] + probs
    probs = np.array(probs) / np.sum(probs)
    cohort = rng.choice(choices, size=n, p=probs)
    unit = np.repeat(np.arange(n), periods)
    t = np.tile(years, n)
    c = cohort[unit]
    d = ((c > 0) & (t >= c)).astype(int)
    x = rng.standard_normal(n)[unit] + 0.3 * rng.standard_normal(n * periods)
    y = (rng.standard_normal(n)[unit] + 0.1 * (t - first) + 0.5 * x
         - 0.4 * d * (1 + (t - c) / step * 0.1) + rng.standard_normal(n * periods))
    w = rng.uniform(0.5, 2.0, n)[unit]
    return pd.DataFrame({"unit": unit + 1000, "time": t, "cohort": c, "d": d, "y": y, "x": x,
                         "w": w})


CASES = {
    "never": {},
    "notyet": {"control_group": "notyettreated"},
    "universal": {"base_period": "universal"},
    "anticipation": {"anticipation": 1, "control_group": "notyettreated"},
    "weights": {"weights": "w", "base_period": "universal"},
    "dr_x": {"covariates": ("x",)},
    "ipw_x_notyet": {"covariates": ("x",), "method": "ipw", "control_group": "notyettreated"},
    "reg_x_weights": {"covariates": ("x",), "method": "reg", "weights": "w",
                      "anticipation": 1},
}


def assert_same(a, b, tol=1e-10):
    ta, tb = a.terms, b.terms
    assert list(ta.columns) == list(tb.columns)
    assert ta["term"].tolist() == tb["term"].tolist()
    assert ta["level"].tolist() == tb["level"].tolist()
    for col in ta.columns:
        if ta[col].dtype.kind == "f":
            np.testing.assert_allclose(ta[col], tb[col], rtol=tol, atol=tol, err_msg=col)
    assert set(a.diagnostics) == set(b.diagnostics)
    for k, v in a.diagnostics.items():
        assert v == pytest.approx(b.diagnostics[k], rel=tol, abs=tol), k
    np.testing.assert_allclose(a.event_cov.to_numpy(), b.event_cov.to_numpy(), rtol=tol, atol=tol)
    assert list(a.event_cov.index) == list(b.event_cov.index)
    assert a.notes == b.notes
    assert a.estimate == pytest.approx(b.estimate, rel=tol, abs=tol)
    assert (a.n_obs, a.n_units, a.inference) == (b.n_obs, b.n_units, b.inference)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_boot", [0, 199])
def test_fast_engine_equals_reference(case, n_boot):
    p = panel(seed=len(case))
    est = CallawaySantAnna("y", n_boot=n_boot, aggregation="dynamic", **CASES[case])
    fast = est.fit(p, rng=np.random.default_rng(7), engine="fast")
    ref = est.fit(p, rng=np.random.default_rng(7), engine="reference")
    assert_same(fast, ref)


@pytest.mark.parametrize("kwargs", [
    {"never": False, "control_group": "notyettreated"},  # R did's last-cohort rule
    {"step": 2},                                          # biennial years: positions
])
def test_fast_engine_equals_reference_other_shapes(kwargs):
    control = kwargs.pop("control_group", "nevertreated")
    p = panel(seed=3, **kwargs)
    est = CallawaySantAnna("y", control_group=control, n_boot=99)
    assert_same(est.fit(p, rng=np.random.default_rng(1), engine="fast"),
                est.fit(p, rng=np.random.default_rng(1), engine="reference"))


def test_generator_is_left_where_the_reference_leaves_it():
    p = panel(seed=5)
    est = CallawaySantAnna("y", n_boot=50)
    g_fast, g_ref = np.random.default_rng(11), np.random.default_rng(11)
    for g in (g_fast, g_ref):
        g.integers(0, 10, dtype=np.uint32)  # leaves a buffered 32-bit value in the state
    est.fit(p, rng=g_fast, engine="fast")
    est.fit(p, rng=g_ref, engine="reference")
    assert g_fast.bit_generator.state == g_ref.bit_generator.state


def same_state(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937])
def test_bootstrap_draws_do_not_depend_on_threads_or_chunks(monkeypatch, threads, bitgen):
    rng = np.random.default_rng(0)
    n, n_boot, blocks = 1003, 37, 4
    f = rng.standard_normal((n, 5))
    code = rng.integers(0, blocks, n).astype(np.intp)
    # what multiplier_bootstrap draws: rng.random((n_boot, n)) < p gives the lower point
    gen = np.random.Generator(bitgen(3))
    hit = gen.random((n_boot, n)) >= cs._MAMMEN_P
    expect = np.stack([hit[:, code == h].astype(float) @ f[code == h] for h in range(blocks)],
                      axis=1)
    end = gen.bit_generator.state
    first = None
    for chunk, mask_bytes, tile in ((1 << 18, 1 << 25, 8192), (97, 5 * n, 13)):
        monkeypatch.setattr(cs, "BOOT_THREADS", threads)
        monkeypatch.setattr(cs, "_PARALLEL_MIN", 0)
        monkeypatch.setattr(cs, "_CHUNK", chunk)
        monkeypatch.setattr(cs, "_MASK_BYTES", mask_bytes)
        monkeypatch.setattr(cs, "_TILE", tile)
        g = np.random.Generator(bitgen(3))
        got = cs._mammen_hits(f, code, blocks, n_boot, g)
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)
        assert same_state(g.bit_generator.state, end)
        if first is None:
            first = got
        else:  # each (draw, block) sum adds the same units in the same order
            assert np.array_equal(first, got)


def test_numpy_fallback_equals_compiled(monkeypatch):
    p = panel(seed=9)
    est = CallawaySantAnna("y", n_boot=99, weights="w")
    compiled = est.fit(p, rng=np.random.default_rng(2))
    monkeypatch.setattr(cs, "_NUMBA", False)
    assert_same(est.fit(p, rng=np.random.default_rng(2)), compiled)


def test_no_units_by_cells_matrix_without_covariates():
    # the factor form: one row of T + 1 numbers per unit, whatever the number of cells
    est = CallawaySantAnna("y")
    positions, uw, _, _ = est._positions(panel(seed=1))
    cells = cs._group_time_fast(positions, "nevertreated", "varying", 0, "dr", (), uw)
    assert cells.f.shape == (positions.n, positions.periods.size + 1)
    assert cells.meta.att.size > cells.f.shape[1]


def test_engine_option_is_checked():
    with pytest.raises(OptionError, match="engine"):
        CallawaySantAnna("y").fit(panel(), engine="turbo")
