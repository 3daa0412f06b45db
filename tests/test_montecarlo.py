"""Monte Carlo engine: seeding, backends, chunks, resume, diagnosands, known results."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators.event_study import EventStudy
from estimators.panel import EstimationError
from estimators.twfe import TWFE
from experiments.build import _draw_province
from experiments.montecarlo import (Backend, Design, binomial_band, diagnose, estimator_seed,
                                    replicate_seed, run_designs, run_reps)
from simulate.design import Assignment, Effect, Timing
from simulate.province import ProvinceDGP

from .test_cli import _tagged  # processes whose environment holds a tag

import functools


def design(assignment="random", att=-0.3, rho=0.6, trend_pgdp=0.0, estimators=None, timing="common"):
    draw = functools.partial(_draw_province, ProvinceDGP(rho=rho, trend_pgdp=trend_pgdp),
                             Assignment(kind=assignment), Timing(kind=timing), Effect(att=att))
    ests = estimators or {("lnce", "twfe"): TWFE("lnce")}
    return Design(draw, ests)


def strip(frame):
    return frame.drop(columns=["seconds"]).reset_index(drop=True)


def test_replicate_seed_is_the_spawned_child():
    kids = np.random.SeedSequence(42).spawn(5)
    for i, kid in enumerate(kids):
        a = np.random.default_rng(kid).random(3)
        b = np.random.default_rng(replicate_seed(42, i)).random(3)
        np.testing.assert_array_equal(a, b)
    assert estimator_seed(1, 0, "a").spawn_key != estimator_seed(1, 0, "b").spawn_key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = design(estimators={("lnce", "twfe"): TWFE("lnce"),
                           ("lnce", "event_study"): EventStudy("lnce")})
    store = tmp_path_factory.mktemp("ref")
    res = run_designs([d], 12, 5, store=store, keys=["k"], chunk_size=12,
                      backend=Backend(kind="sequential"))
    return d, res


def test_rows_are_tidy_with_truth(reference):
    _, res = reference
    head = res[res["role"] == "headline"]
    assert len(head) == 24 and set(head["term"]) == {"ATT", "ATT_post"}
    assert np.allclose(head["truth"], -0.3)
    detail = res[(res["estimator"] == "event_study") & (res["role"] == "detail")]
    assert set(detail["term"]) == {"ev-5", "ev-4", "ev-3", "ev-2", "ev+0", "ev+1", "ev+2", "ev+3",
                                   "ev+4", "ev+5"}
    assert (res["error"] == "").all() and head["pretrend_p"].notna().sum() == 12


@pytest.mark.parametrize("backend,chunk", [(Backend(kind="loky", n_jobs=2), 5),
                                           (Backend(kind="sequential"), 3)])
def test_identical_across_backends_and_chunking(reference, tmp_path, backend, chunk):
    d, ref = reference
    res = run_designs([d], 12, 5, store=tmp_path, keys=["k"], chunk_size=chunk, backend=backend)
    pd.testing.assert_frame_equal(strip(res), strip(ref), check_exact=True)


def test_dask_local_cluster_equals_sequential(reference, tmp_path):
    d, ref = reference
    res = run_designs([d], 12, 5, store=tmp_path, keys=["k"], chunk_size=4,
                      backend=Backend(kind="dask", n_workers=2))
    pd.testing.assert_frame_equal(strip(res), strip(ref), check_exact=True)


def test_chunks_compute_with_one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from experiments.montecarlo import _one_blas_thread

    with threadpoolctl.threadpool_limits(limits=4):
        with _one_blas_thread():
            assert {p["num_threads"] for p in threadpoolctl.threadpool_info()} <= {1}


def test_mediation_bit_identical_across_backends(tmp_path):
    # the bootstrap's matrix products are the operations a threaded BLAS may split
    # differently; every backend computes a chunk with one BLAS thread, so the numbers agree
    # to the last bit, even when the main process of a sequential run has several threads
    from experiments.build import build_draw, build_estimators
    from experiments.montecarlo_run import cells
    from experiments.run import compose

    cfg = compose(["experiment=mediation", "experiment.n_reps=4", "experiment.chunk_size=2"])
    designs = [Design(build_draw(c), build_estimators(c, list(c.experiment.outcomes)),
                      cell=str(axes["assignment"])) for c, axes in cells(cfg)]
    assert len(designs) == 2 and ("lnce", "mediation") in designs[0].estimators
    keys = ["actual", "random"]

    def run_on(backend, folder):
        return strip(run_designs(designs, 4, 0, store=tmp_path / folder, keys=keys,
                                 chunk_size=2, backend=backend))

    try:
        from threadpoolctl import threadpool_limits
        many = threadpool_limits(limits=4)
    except ImportError:  # pragma: no cover
        import contextlib
        many = contextlib.nullcontext()
    with many:
        ref = run_on(Backend(kind="sequential"), "sequential")
    assert (ref.loc[ref["estimator"] == "mediation", "error"] == "").all()
    assert ref["std_error"].notna().all()
    for name, backend in (("loky", Backend(kind="loky", n_jobs=2)),
                          ("dask", Backend(kind="dask", n_workers=2))):
        pd.testing.assert_frame_equal(run_on(backend, name), ref, check_exact=True)


def test_adding_an_estimator_leaves_others_unchanged(reference):
    d, ref = reference
    more = Design(d.draw, {**d.estimators, ("lnce", "twfe_controls"): TWFE("lnce", controls=("lnpgdp",))})
    res = run_reps(more, 5, range(12))
    keep = res[res["estimator"] != "twfe_controls"].reset_index(drop=True)
    pd.testing.assert_frame_equal(strip(keep), strip(ref))


@dataclass(frozen=True)
class Flaky:
    """Fails on odd replicates' panels (first lnce value above the median) or always."""

    always: bool = False

    def fit(self, panel, rng):
        if self.always or rng.random() < 0.5:
            raise EstimationError("singular design (test)")
        return TWFE("lnce").fit(panel)

    def estimand(self, panel):
        return TWFE("lnce").estimand(panel)


def test_failures_are_recorded_and_counted():
    d = design(estimators={("lnce", "flaky"): Flaky(), ("lnce", "dead"): Flaky(always=True),
                           ("lnce", "twfe"): TWFE("lnce")})
    res = run_reps(d, 0, range(20))
    flaky = res[res["estimator"] == "flaky"]
    n_failed = int((flaky["error"] != "").sum())
    assert 0 < n_failed < 20
    assert flaky.loc[flaky["error"] != "", "error"].str.contains("singular design").all()
    diag = diagnose(res).set_index("estimator")
    assert diag.loc["flaky", "n_failed"] == n_failed
    assert diag.loc["flaky", "n_draws"] == 20 - n_failed
    assert diag.loc["dead", "n_failed"] == 20 and diag.loc["dead", "n_draws"] == 0
    assert diag.loc["twfe", "n_failed"] == 0


def test_diagnose_by_hand():
    res = pd.DataFrame({
        "cell": "c", "outcome": "y", "estimator": "e", "term": "ATT", "role": "headline",
        "estimate": [1.0, 2.0, 3.0, 6.0], "truth": [2.0, 2.0, 2.0, 2.0],
        "std_error": [1.0, 1.0, 2.0, 2.0], "conf_low": [0.0, 1.0, 2.5, 5.0],
        "conf_high": [3.0, 3.0, 4.0, 7.0], "p_value": [0.2, 0.01, 0.04, 0.5],
        "alpha": 0.05, "pretrend_p": np.nan, "error": "",
    })
    d = diagnose(res).iloc[0]
    err = np.array([-1.0, 0.0, 1.0, 4.0])
    assert d["bias"] == 1.0
    assert d["bias_mcse"] == pytest.approx(err.std(ddof=1) / 2)
    assert d["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert d["sd"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1))
    assert d["coverage"] == 0.5 and d["rejection"] == 0.5 and d["rejection_is"] == "power"
    assert d["ci_width"] == pytest.approx(np.mean([3, 2, 1.5, 2]))
    assert d["se_sd_ratio"] == pytest.approx(1.5 / np.std([1, 2, 3, 6], ddof=1))


RESUME_SCRIPT = textwrap.dedent("""
    import functools, sys, time
    from experiments.build import _draw_province
    from experiments.montecarlo import Backend, Design, run_designs
    import experiments.montecarlo as mc
    from estimators.twfe import TWFE
    from simulate.design import Assignment, Effect, Timing
    from simulate.province import ProvinceDGP
    slow = float(sys.argv[2])
    original = mc.run_reps
    def run_reps(design, seed, reps):
        time.sleep(slow)
        return original(design, seed, reps)
    mc.run_reps = run_reps
    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(kind="random"), Timing(), Effect())
    d = Design(draw, {("lnce", "twfe"): TWFE("lnce")})
    res = run_designs([d], 24, 9, store=sys.argv[1], keys=["k"], chunk_size=3,
                      backend=Backend(kind="sequential"))
    res.drop(columns="seconds").to_parquet(sys.argv[1] + "/final.parquet")
""")


def test_resume_after_sigkill(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(RESUME_SCRIPT)
    store = tmp_path / "store"
    store.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(store), "0.4"], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((store / "k").glob("reps-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (store / "k").glob("reps-*.parquet"))
    assert 3 <= len(done_before) < 8, "the run should have been killed part-way"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (store / "k").glob("reps-*.parquet")}
    subprocess.run([sys.executable, str(script), str(store), "0"], env=env, check=True)
    # finished chunks were not recomputed
    for name, mt in mtimes.items():
        assert (store / "k" / name).stat().st_mtime_ns == mt
    resumed = pd.read_parquet(store / "final.parquet")
    fresh_store = tmp_path / "fresh"
    fresh_store.mkdir()
    subprocess.run([sys.executable, str(script), str(fresh_store), "0"], env=env, check=True)
    fresh = pd.read_parquet(fresh_store / "final.parquet")
    pd.testing.assert_frame_equal(resumed, fresh)
    assert not list((store / "k").glob(".*.tmp"))


# --- known results -------------------------------------------------------------------------

def test_truth_recovery_random_pilots_homogeneous_effect():
    n = 300
    res = run_reps(design("random"), 11, range(n))
    d = diagnose(res).iloc[0]
    assert abs(d["bias"]) < 3 * d["bias_mcse"]
    lo, hi = binomial_band(0.95, n)
    assert lo <= d["coverage"] <= hi


def test_bertrand_duflo_mullainathan_conventional_se_over_reject():
    # AR(1) errors with rho 0.8 and a null effect: i.i.d. SEs over-reject, clustered do not
    n = 300
    d = design("random", att=0.0, rho=0.8,
               estimators={("lnce", "clustered"): TWFE("lnce"),
                           ("lnce", "conventional"): TWFE("lnce", se="conventional")})
    diag = diagnose(run_reps(d, 3, range(n))).set_index("estimator")
    lo, hi = binomial_band(0.05, n)
    assert diag.loc["conventional", "rejection"] > hi
    assert diag.loc["clustered", "rejection"] <= hi
    assert (diag["rejection_is"] == "size").all()


def test_selection_on_gdp_with_gdp_trends_biases_twfe_random_does_not():
    n = 200
    sel = diagnose(run_reps(design("selected", trend_pgdp=-0.004), 4, range(n))).iloc[0]
    rnd = diagnose(run_reps(design("random", trend_pgdp=-0.004), 4, range(n))).iloc[0]
    assert abs(sel["bias"]) > 3 * sel["bias_mcse"] and sel["bias"] < 0
    assert abs(rnd["bias"]) < 3 * rnd["bias_mcse"]


ORPHAN_SCRIPT = textwrap.dedent("""
    import functools, sys
    from experiments.build import _draw_province
    from experiments.montecarlo import Backend, Design, run_designs
    from estimators.twfe import TWFE
    from simulate.design import Assignment, Effect, Timing
    from simulate.province import ProvinceDGP
    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(kind="random"), Timing(), Effect())
    d = Design(draw, {("lnce", "twfe"): TWFE("lnce")})
    # one long chunk for two workers: one computes, the other waits for a task
    run_designs([d], 5000, 9, store=sys.argv[1], keys=["k"], chunk_size=5000,
                backend=Backend(kind="loky", n_jobs=2))
""")




@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_loky_workers_busy_or_idle_stop_when_the_main_process_is_killed(tmp_path):
    import uuid

    tag = uuid.uuid4().hex
    script = tmp_path / "job.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "DIDLAB_TEST_TAG": tag}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)
    deadline = time.time() + 60
    # the main process, two workers and loky's resource tracker
    while len(_tagged(tag)) < 4 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _tagged(tag) and time.time() < deadline:
        time.sleep(0.1)
    assert _tagged(tag) == [], "loky workers outlived the killed run"
    assert not list((tmp_path / "k").glob("reps-*.parquet"))


def test_failure_rates_are_explained_and_estimators_compared_on_common_draws():
    """An estimator failing in many draws (here: DR-DID's logit separated by a covariate
    that tracks the pilots) is named in a warnings table with its reason, and the
    diagnosands are also given on the draws where every estimator succeeded."""
    import pandas as pd

    from experiments.montecarlo_run import common_draws, failure_table

    rows = []
    for rep in range(10):
        for est, err in (("twfe", ""), ("dr_did", "EstimationError: the logit score separates"
                                        if rep < 4 else "")):
            rows.append({"cell": "c", "rep": rep, "outcome": "y", "estimator": est,
                         "term": "ATT", "role": "headline", "error": err,
                         "estimate": 0.0 if err else 1.0})
    res = pd.DataFrame(rows)
    table = failure_table(res, [])
    assert list(table["estimator"]) == ["dr_did"]
    assert table["failure_rate"].iloc[0] == 0.4
    assert "separates" in table["most_frequent_reason"].iloc[0]
    common = common_draws(res)
    assert sorted(common["rep"].unique()) == list(range(4, 10))
    assert set(common["estimator"]) == {"twfe", "dr_did"}


def test_report_warnings_are_written_from_the_numbers():
    """Pre-tests above the 99% band where parallel trends hold are flagged (not where a
    trend was put in), blank diagnosands get their reason, and quantile terms sit beside
    the true QTT."""
    from experiments.montecarlo_run import (blank_diagnosands, pretest_warnings,
                                            quantile_comparison)

    diag = pd.DataFrame({
        "cell": ["a", "a", "b", "a", "a", "a", "a"],
        "outcome": "y",
        "estimator": ["cs", "es", "cs", "oaxaca", "qdid", "qdid", "cic"],
        "term": ["ATT", "ATT", "ATT", "unexplained", "tau_q0.5", "q0.5", "q0.5"],
        "role": ["headline"] * 5 + ["detail"] * 2,
        "n_draws": 200, "n_failed": 0,
        "pretrend_reject": [0.52, 0.06, 0.52, np.nan, np.nan, np.nan, np.nan],
        "mean_truth": [0.0, 0.0, 0.0, np.nan, 0.2, 0.2, 0.2],
        "bias": [0.0, 0.0, 0.0, np.nan, 0.01, 0.01, -0.002],
        "coverage": [0.95, 0.95, 0.95, np.nan, np.nan, np.nan, 0.94],
    })
    warn = pretest_warnings(diag, {"a": True, "b": False}, [])
    assert list(warn["estimator"]) == ["cs"]  # es within the band; b has a trend
    assert warn["pretest_rejection"].iloc[0] == 0.52 and warn["draws"].iloc[0] == 200
    blanks = blank_diagnosands(diag, []).set_index("estimator")["why"]
    assert "no true value" in blanks["oaxaca"] and "no standard error" in blanks["qdid"]
    q = quantile_comparison(diag, [])
    assert q[["true_qtt", "bias_cic", "bias_qdid"]].iloc[0].tolist() == [0.2, -0.002, 0.01]


def test_figures_use_variable_labels_and_mark_binned_endpoints(province):
    """data.labels (over the simulators' defaults) name variables in figures; the event
    study's endpoints are flagged as binned when the panel has periods beyond them."""
    from estimators.event_study import EventStudy
    from experiments import report
    from experiments.single import SingleDraw

    report.set_labels({"lnce": "CO2, log tonnes"})
    assert report.var_label("lnce") == "CO2, log tonnes"
    assert report.var_label("lncei") == "log CO2 intensity" and report.var_label("x9") == "x9"
    report.set_labels(None)
    assert report.var_label("lnce") == "log CO2 emissions"
    draw = SingleDraw(panel=province, table=pd.DataFrame())
    times = np.arange(-3, 4, dtype=float)
    flags = draw._binned(EventStudy("lnce", leads=3, lags=3), times)
    assert flags.tolist() == [True, False, False, False, False, False, True]
    assert not draw._binned(EventStudy("lnce", leads=3, lags=3, bin_endpoints=False), times).any()


def test_inference_verdict_reads_size_and_coverage_against_binomial_bands():
    """The inference lab's verdict: size under the zero effect against the 99% band around
    alpha, coverage under the injected effect, ranked by distance from nominal."""
    from experiments.montecarlo_run import binomial_band, inference_verdict

    rows = []
    for est, size, cover in (("cluster_t", 0.05, 0.95), ("iid", 0.24, 0.76), ("cr2", 0.01, 0.99)):
        rows += [{"effect": "zero", "outcome": "y", "estimator": est, "role": "headline",
                  "rejection_is": "size", "rejection": size, "rejection_mcse": 0.01,
                  "coverage": 1 - size, "coverage_mcse": 0.01, "n_draws": 500, "n_failed": 0,
                  "alpha": 0.05},
                 {"effect": "constant", "outcome": "y", "estimator": est, "role": "headline",
                  "rejection_is": "power", "rejection": 1.0, "rejection_mcse": 0.0,
                  "coverage": cover, "coverage_mcse": 0.01, "n_draws": 500, "n_failed": 0,
                  "alpha": 0.05}]
    v = inference_verdict(pd.DataFrame(rows), ["effect"]).set_index("estimator")
    lo, hi = binomial_band(0.05, 500)
    assert v.loc["cluster_t", "size_band"] == f"{lo:.3f}-{hi:.3f}" and lo < 0.05 < hi
    assert v.loc["cluster_t", "verdict"].startswith("trustworthy")
    assert v.loc["iid", "verdict"].startswith("over-rejects: 24.0%")
    assert v.loc["cr2", "verdict"].startswith("conservative")  # 1% < lower band 2.5%
    assert v.loc["cluster_t", "rank"] == 1 and v.loc["iid", "rank"] == 3
    assert v.loc["iid", "coverage"] == 0.76
