"""The Monte Carlo engine's batched path (didlab issue #19).

* the province draw stacked over replicates is, replicate by replicate, the single draw
  bit for bit, and the single draw is the one before the batched code existed (a frozen
  copy of the old module, ``tests/province_reference.py``);
* batched TWFE / event-study fits report what ``fit`` and ``estimand`` report on each
  replicate's panel to 1e-10 (relative), on actual and random pilots, every batched
  inference option;
* the engine's table has the per-replicate path's rows, order and dtypes, and the same
  numbers whatever the chunk size (bit for bit);
* options without a batched fit, and replicates a batch cannot reproduce, take the
  per-replicate path.
"""

import functools

import numpy as np
import pandas as pd
import pytest

from estimators.batch import PanelBatch, batch_fitter, fit_event_study_batch
from estimators.event_study import EventStudy
from estimators.twfe import TWFE
from experiments.build import _draw_city, _draw_province
from experiments.montecarlo import (Backend, Design, batch_draw_of, replicate_seed,
                                    run_designs, run_reps)
from simulate.design import Assignment, Effect, Timing
from simulate.mediators import Channel, seed002_channels
from simulate.province import CONTROLS, ProvinceDGP, draw_province, draw_province_batch

from . import province_reference as old

NUMERIC = ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high", "truth",
           "pretrend_p", "alpha")

DRAW_CASES = [
    {},
    {"assignment": Assignment(kind="random")},
    {"assignment": Assignment(kind="selected", n_pilots=8)},
    {"timing": Timing(kind="market_open", anticipation=1),
     "effect": Effect(dynamics="ramp", het_sd=0.1, het_pgdp=0.05)},
    {"dgp": ProvinceDGP(sigma_size=1.0, trend_gap=0.01, trend_pgdp=0.02, air_outcomes=True)},
    {"channels": seed002_channels()},
    {"channels": (Channel("lntech", a=0.3, lag=2, trend_sd=0.01),
                  Channel("lnes", a=-0.2, trend_sd=0.02))},
]


@pytest.mark.parametrize("case", range(len(DRAW_CASES)))
def test_province_draw_is_the_old_draw_bit_for_bit(case):
    kw = dict(DRAW_CASES[case])
    channels = kw.pop("channels", ())
    seeds = range(4)
    batch = draw_province_batch([np.random.default_rng(s) for s in seeds], channels=channels,
                                **kw)
    for s in seeds:
        ref = old.draw_province(np.random.default_rng(s), channels=channels, **kw)
        pd.testing.assert_frame_equal(draw_province(np.random.default_rng(s),
                                                    channels=channels, **kw), ref,
                                      check_exact=True)
        pd.testing.assert_frame_equal(batch.frame(s), ref, check_exact=True)


def _design(kind="actual", estimators=None, city=False):
    if city:
        from simulate.city import CityDGP

        draw = functools.partial(_draw_city, CityDGP(), Assignment(kind=kind),
                                 Timing(kind="market_open"), Effect())
        ests = estimators or {("nqpf", "twfe"): TWFE("nqpf"),
                              ("nqpf", "event_study"): EventStudy("nqpf")}
        return Design(draw, ests)
    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(kind=kind), Timing(),
                             Effect())
    ests = estimators or {
        ("lnce", "twfe"): TWFE("lnce"),
        ("lnce", "twfe_controls"): TWFE("lnce", controls=CONTROLS),
        ("lnce", "event_study"): EventStudy("lnce"),
    }
    return Design(draw, ests)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-10) -> None:
    """Same rows, order and dtypes; numbers equal to ``rtol`` (relative, absolute below 1)."""
    assert list(a.columns) == list(b.columns)
    assert (a.dtypes == b.dtypes).all(), (a.dtypes, b.dtypes)
    assert len(a) == len(b)
    for c in a.columns:
        if c == "seconds":
            continue
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if c in NUMERIC:
            assert np.array_equal(np.isnan(x), np.isnan(y)), c
            ok = ~np.isnan(x)
            err = np.abs(x[ok] - y[ok]) / np.maximum(1.0, np.abs(x[ok]))
            assert err.max(initial=0.0) < rtol, (c, err.max())
        else:
            assert (x == y).all(), c


@pytest.mark.parametrize("kind", ["actual", "random"])
def test_batched_engine_equals_per_replicate_fits(kind):
    ests = {
        ("lnce", "twfe"): TWFE("lnce"),
        ("lnce", "twfe_controls"): TWFE("lnce", controls=("lnpgdp", "lnes")),
        ("lnce", "event_study"): EventStudy("lnce"),
        ("lnce", "es_robust"): EventStudy("lnce", se="robust", dist="normal", pretest="sidak",
                                          controls=("lnpgdp",), leads=3, lags=4, ref=-2),
        ("lncei", "twfe_conv"): TWFE("lncei", se="conventional", ssc="full", alpha=0.1),
        ("lnce", "twfe_lm"): TWFE("lnce", ssc="linearmodels", dist="normal"),
    }
    d = _design(kind, ests)
    per = run_reps(d, 11, range(30), batch=False)
    assert_same_table(per, run_reps(d, 11, range(30)))
    assert set(per["role"]) == {"headline", "detail"}


def test_batched_engine_equals_per_replicate_fits_staggered():
    """Staggered market-open dates on the province panel (two cohorts)."""
    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(kind="random"),
                             Timing(kind="market_open"), Effect(dynamics="growing"))
    d = Design(draw, {("lnce", "twfe"): TWFE("lnce"),
                      ("lnce", "event_study"): EventStudy("lnce", leads=4, lags=3)})
    assert_same_table(run_reps(d, 2, range(20), batch=False), run_reps(d, 2, range(20)))


def test_same_numbers_whatever_the_chunk_size(tmp_path):
    d = _design("random")
    tables = []
    for size in (1, 7, 50):
        res = run_designs([d], 50, 4, store=tmp_path / f"s{size}", keys=["k"], chunk_size=size,
                          backend=Backend(kind="sequential"))
        tables.append(res.drop(columns="seconds"))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
    pd.testing.assert_frame_equal(tables[0], tables[2], check_exact=True)


def test_batch_numbers_do_not_depend_on_the_batch(monkeypatch):
    import experiments.montecarlo as mc

    d = _design("random")
    whole = run_reps(d, 9, range(20)).drop(columns="seconds")
    monkeypatch.setattr(mc, "BATCH_SIZE", 3)
    pd.testing.assert_frame_equal(whole, run_reps(d, 9, range(20)).drop(columns="seconds"),
                                  check_exact=True)


def test_options_without_a_batched_fit_keep_the_per_replicate_path():
    assert batch_fitter(TWFE("lnce")) is not None
    assert batch_fitter(EventStudy("lnce")) is not None
    for est in (TWFE("lnce", se="cr2"), TWFE("lnce", dist="wild"),
                TWFE("lnce", weights="people"), TWFE("lnce", paper_terms=True),
                TWFE("lnce", cluster="province"), EventStudy("lnce", bin_endpoints=False),
                EventStudy("lnce", leads=None)):
        assert batch_fitter(est) is None, est
    # a design mixing them gives the per-replicate numbers, rows in the same order
    d = _design("actual", {("lnce", "twfe"): TWFE("lnce"),
                           ("lnce", "wild"): TWFE("lnce", dist="wild", wild_draws=99),
                           ("lnce", "es_unbinned"): EventStudy("lnce", bin_endpoints=False,
                                                               leads=3, lags=3)})
    assert_same_table(run_reps(d, 5, range(6), batch=False), run_reps(d, 5, range(6)))


def test_a_replicate_the_batch_cannot_reproduce_is_fitted_alone():
    """An event time no treated row reaches leaves its dummy absorbed: the per-replicate
    fit drops it with a note, so the batch hands that replicate back."""
    rngs = [np.random.default_rng(replicate_seed(3, r)) for r in range(4)]
    batch = draw_province_batch(rngs, assignment=Assignment(kind="random"))
    cols = dict(batch.columns)
    # replicate 2: its pilots are treated from 2017, so event times +2.. never occur
    cohort = cols["cohort"].copy()
    cohort[2] = np.where(cohort[2] > 0, 2017, 0)
    time = np.broadcast_to(cols["time"], cohort.shape)
    cols["cohort"] = cohort
    cols["d"] = ((cohort > 0) & (time >= cohort)).astype(np.int8)
    bad = PanelBatch(cols, batch.n_units, batch.n_periods)
    est = EventStudy("lnce", bin_endpoints=True, leads=5, lags=5)
    res = fit_event_study_batch(est, bad)
    assert res.handled.tolist() == [True, True, False, True]
    fit = est.fit(bad.frame(2))
    assert any("not identified" in n for n in fit.notes)
    for b in (0, 3):
        ref = est.fit(bad.frame(b))
        assert res.headline["estimate"][b] == pytest.approx(ref.estimate, rel=1e-10)
        assert res.diagnostics["pretrend_p"][b] == pytest.approx(ref.diagnostics["pretrend_p"],
                                                                 rel=1e-10)


def test_batched_truth_is_the_estimand():
    batch = draw_province_batch([np.random.default_rng(s) for s in range(5)],
                                assignment=Assignment(kind="random"),
                                effect=Effect(dynamics="ramp", het_sd=0.1))
    for est, fit in ((TWFE("lnce"), batch_fitter(TWFE("lnce"))),
                     (EventStudy("lnce"), batch_fitter(EventStudy("lnce")))):
        res = fit(batch)
        for b in range(5):
            truth = est.estimand(batch.frame(b))
            for name, value in truth.items():
                assert res.truth[name][b] == pytest.approx(value, rel=1e-12, abs=1e-14)


def test_designs_find_their_batched_draw():
    assert batch_draw_of(_design().draw) is not None
    assert batch_draw_of(lambda rng: None) is None


# --- the fixed design (data.redraw=outcome): one assignment, many outcome draws ---------------

FIXED = ProvinceDGP(redraw="outcome", design_seed=7)


@pytest.mark.parametrize("kw", [{}, {"assignment": Assignment(kind="random")},
                                {"timing": Timing(kind="market_open"),
                                 "effect": Effect(het_sd=0.1, het_pgdp=0.05)},
                                {"dgp": ProvinceDGP(redraw="outcome", design_seed=7,
                                                    sigma_size=1.0, air_outcomes=True)}])
def test_fixed_design_holds_the_design_and_redraws_the_outcome(kw):
    kw = {"dgp": FIXED, **kw}
    seeds = range(4)
    batch = draw_province_batch([np.random.default_rng(s) for s in seeds], **kw)
    frames = [batch.frame(s) for s in seeds]
    for s in seeds:  # the batch is the single draw, bit for bit
        pd.testing.assert_frame_equal(frames[s], draw_province(np.random.default_rng(s), **kw),
                                      check_exact=True)
    design = ("cohort", "d", *CONTROLS, "pgdp", "people", "es", "gdp")
    for c in design:  # stored once, the same in every replicate
        assert batch.columns[c].ndim == 1, c
    # the design is the full draw's from data.design_seed: covariates and assignment
    full = draw_province(np.random.default_rng(7), **{**kw, "dgp": ProvinceDGP(
        **{**kw["dgp"].__dict__, "redraw": "all"})})
    for c in ("cohort", "d", *CONTROLS):
        np.testing.assert_array_equal(frames[0][c].to_numpy(), full[c].to_numpy())
    # the outcome is redrawn: its shocks differ between replicates, the emissions
    # accounting still holds in each
    assert not np.allclose(frames[0]["lnce"], frames[1]["lnce"])
    for f in frames:
        np.testing.assert_allclose(f["lnce"], f["y0_lnce"] + f["te_lnce"], rtol=1e-12)
    # another design seed, another design
    other = draw_province(np.random.default_rng(0), **{**kw, "dgp": ProvinceDGP(
        **{**kw["dgp"].__dict__, "design_seed": 8})})
    assert not np.allclose(other["lnpgdp"], frames[0]["lnpgdp"])


def _fixed_design(kind, ests):
    draw = functools.partial(_draw_province, FIXED, Assignment(kind=kind), Timing(), Effect())
    return Design(draw, ests)


@pytest.mark.parametrize("kind", ["actual", "random"])
def test_fixed_design_batched_equals_per_replicate(kind):
    """Regressors shared by every replicate (demeaned once, the compiled kernel) give each
    replicate's own fit, every batched inference option."""
    ests = {
        ("lnce", "twfe"): TWFE("lnce"),
        ("lnce", "twfe_controls"): TWFE("lnce", controls=CONTROLS),
        ("lnce", "event_study"): EventStudy("lnce"),
        ("lnce", "es_robust"): EventStudy("lnce", se="robust", dist="normal", pretest="sidak",
                                          controls=("lnpgdp",), leads=3, lags=4, ref=-2),
        ("lncei", "twfe_conv"): TWFE("lncei", se="conventional", ssc="full", alpha=0.1),
        ("lnce", "twfe_lm"): TWFE("lnce", controls=("lnes",), ssc="linearmodels",
                                  dist="normal"),
    }
    d = _fixed_design(kind, ests)
    per = run_reps(d, 11, range(30), batch=False)
    assert_same_table(per, run_reps(d, 11, range(30)))


@pytest.mark.parametrize("fixed,kind", [(True, "actual"), (False, "random"), (False, "actual")])
def test_numbers_do_not_depend_on_the_batch_or_the_engine(monkeypatch, fixed, kind):
    """Shared regressors (fixed design, or one assignment without controls) and each
    replicate's own: the compiled kernels give the numpy reference path's numbers."""
    import estimators.batch as eb
    import experiments.montecarlo as mc

    ests = {("lnce", "twfe"): TWFE("lnce"),
            ("lnce", "twfe_controls"): TWFE("lnce", controls=CONTROLS),
            ("lnce", "es"): EventStudy("lnce", se="robust"),
            ("lncei", "es_conv"): EventStudy("lncei", se="conventional", controls=("lnes",))}
    d = _fixed_design(kind, ests) if fixed else _design(kind, ests)
    whole = run_reps(d, 9, range(20)).drop(columns="seconds")
    monkeypatch.setattr(mc, "BATCH_SIZE", 3)
    pd.testing.assert_frame_equal(whole, run_reps(d, 9, range(20)).drop(columns="seconds"),
                                  check_exact=True)
    # the compiled kernel against the numpy reference path, on the same batches
    monkeypatch.setattr(eb, "BATCH_ENGINE", "numpy")
    assert_same_table(whole, run_reps(d, 9, range(20)).drop(columns="seconds"), rtol=1e-12)
    monkeypatch.setattr(eb, "BATCH_ENGINE", "gpu")
    with pytest.raises(Exception, match="BATCH_ENGINE='gpu'"):
        run_reps(d, 9, range(2))


def test_fixed_design_refuses_bad_settings():
    from estimators.panel import OptionError

    with pytest.raises(OptionError, match=r"data.redraw='covariates' is not one of \['all', "
                                          r"'outcome'\]"):
        ProvinceDGP(redraw="covariates").validate()
    with pytest.raises(OptionError, match="data.design_seed=-1 must be an integer >= 0"):
        ProvinceDGP(redraw="outcome", design_seed=-1).validate()
    with pytest.raises(OptionError, match="data.redraw='outcome' holds the covariates fixed, "
                                          "but data.channels"):
        draw_province(np.random.default_rng(0), FIXED, channels=seed002_channels())


def test_fixed_design_from_the_command_line():
    from experiments.build import build_draw
    from experiments.run import compose
    from estimators.panel import OptionError

    draw = build_draw(compose(["data.redraw=outcome", "data.design_seed=3"]))
    a, b = draw(np.random.default_rng(0)), draw(np.random.default_rng(1))
    np.testing.assert_array_equal(a["lnpgdp"], b["lnpgdp"])
    assert batch_draw_of(draw) is not None
    with pytest.raises(OptionError, match="data.redraw='outcome' holds the covariates fixed"):
        build_draw(compose(["experiment=mediation", "data.redraw=outcome"]))


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_a_collinear_replicate_is_handed_back(monkeypatch, engine):
    """A control that is another control times two in one replicate: the per-replicate fit
    drops it, so both engines leave that replicate to it and fit the others."""
    import estimators.batch as eb

    monkeypatch.setattr(eb, "BATCH_ENGINE", engine)
    batch = draw_province_batch([np.random.default_rng(s) for s in range(3)])
    cols = dict(batch.columns)
    extra = np.random.default_rng(9).standard_normal(cols["lnes"].shape)
    extra[1] = 2.0 * cols["lnes"][1]
    cols["extra"] = extra
    batch = PanelBatch(cols, batch.n_units, batch.n_periods)
    est = TWFE("lnce", controls=("lnes", "extra"))
    res = batch_fitter(est)(batch)
    assert res.handled.tolist() == [True, False, True]
    for b in (0, 2):
        assert res.headline["estimate"][b] == pytest.approx(est.fit(batch.frame(b)).estimate,
                                                            rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 20261128, 2**32 - 1, 2**32, 2**64 + 3, 2**130 + 17])
def test_replicate_generators_are_the_replicate_seeds_streams(seed):
    """The batched path's generators (PCG64 seeds hashed for a batch at once) are
    ``default_rng(replicate_seed(seed, r))`` bit for bit; replicates past 2**32 take the
    plain route; spawning still works."""
    from experiments.montecarlo import replicate_generators

    reps = [0, 1, 5, 63, 1000, 2**31, 2**32 - 1]
    for r, g in zip(reps, replicate_generators(seed, reps)):
        ref = np.random.default_rng(replicate_seed(seed, r))
        np.testing.assert_array_equal(g.standard_normal(40), ref.standard_normal(40))
        np.testing.assert_array_equal(g.integers(0, 2**62, 5), ref.integers(0, 2**62, 5))
    far = replicate_generators(seed, [2**32 + 1])[0]
    np.testing.assert_array_equal(far.random(5), np.random.default_rng(
        replicate_seed(seed, 2**32 + 1)).random(5))
    child = replicate_generators(seed, [3])[0].bit_generator.seed_seq.spawn(1)[0]
    assert child.spawn_key == (3, 0)
