"""``make bench``: didlab against its peers, measured in the same run.

Times (median of repeats, wall clock):

1. one TWFE fit with unit-clustered SEs on 30x19, 282x14 and 100,000x20 panels, beside
   linearmodels ``PanelOLS`` and pyfixest ``feols`` (when installed: ``.[bench]``);
2. Monte Carlo throughput of the robustness design (draw + TWFE, TWFE with controls, event
   study) on 1 and 2 workers, beside the same three fits done with linearmodels in a loop.
3. stacked DID, two-stage DID, extended TWFE, dCDH, synthetic control and synthetic DID
   on 30x19, 282x14 and 20,000x14 panels, each beside every installed peer implementing
   the same estimator (diff-diff, pyfixest, pysyncon, synthdid), with the point estimates
   compared; ``--only stacked,sdid`` runs such groups alone.

Speed targets are checked here, never as timed assertions in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from estimators.event_study import EventStudy, event_dummies
from estimators.design import event_time
from estimators.twfe import TWFE
from simulate.province import CONTROLS, draw_province


def timeit(fn: Callable[[], Any], repeat: int, min_time: float = 0.0) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeat:
            break
    return statistics.median(times)


def synthetic_panel(n_units: int, n_periods: int, seed: int = 0) -> pd.DataFrame:
    """A balanced panel with a fifth of units treated from mid-sample and one control."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(n_periods), n_units)
    cohort = np.where(rng.random(n_units) < 0.2, n_periods // 2, 0)[unit]
    d = ((cohort > 0) & (t >= cohort)).astype(np.int8)
    x = rng.standard_normal(unit.size)
    y = rng.standard_normal(n_units)[unit] + 0.05 * t - 0.3 * d + 0.5 * x + rng.standard_normal(unit.size)
    return pd.DataFrame({"unit": unit, "time": t, "cohort": cohort, "d": d, "y": y, "x": x})


def lm_twfe(panel: pd.DataFrame, outcome: str, regs: list[str]) -> Any:
    from linearmodels import PanelOLS

    p = panel.set_index(["unit", "time"])
    return PanelOLS(p[outcome], p[regs], entity_effects=True, time_effects=True).fit(
        cov_type="clustered", cluster_entity=True)


def pyfixest_twfe(panel: pd.DataFrame, formula: str) -> Any:
    import pyfixest as pf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pf.feols(formula, data=panel, vcov={"CRV1": "unit"})


def bench_twfe(quick: bool) -> list[dict[str, Any]]:
    try:
        import pyfixest  # noqa: F401
        has_pf = True
    except ImportError:
        has_pf = False
    rows = []
    sizes = [("30x19 (province)", None), ("282x14 (city)", (282, 14)),
             ("100,000x20", (100_000, 20))]
    for name, shape in sizes:
        if shape is None:
            panel = draw_province(np.random.default_rng(0))
            outcome, regs = "lnce", ["d", *CONTROLS]
        else:
            if quick and shape[0] > 10_000:
                shape = (10_000, 20)
                name = "10,000x20 (quick)"
            panel = synthetic_panel(*shape)
            outcome, regs = "y", ["d", "x"]
        big = len(panel) > 100_000
        rep = 3 if big else 50
        est = TWFE(outcome, controls=tuple(regs[1:]))
        ours = timeit(lambda: est.fit(panel), rep, 0 if big else 1.0)
        lm = timeit(lambda: lm_twfe(panel, outcome, regs), 3 if big else 15)
        row = {"panel": name, "didlab_ms": ours * 1e3, "linearmodels_ms": lm * 1e3,
               "speedup_vs_linearmodels": lm / ours}
        if has_pf:
            f = f"{outcome} ~ {' + '.join(regs)} | unit + time"
            pf_t = timeit(lambda: pyfixest_twfe(panel, f), 3 if big else 15)
            row.update(pyfixest_ms=pf_t * 1e3, speedup_vs_pyfixest=pf_t / ours)
        # the numbers agree (a benchmark of different answers would mean nothing)
        ref = lm_twfe(panel, outcome, regs).params["d"]
        row["coef_abs_diff_vs_linearmodels"] = abs(est.fit(panel).estimate - ref)
        rows.append(row)
    return rows


def _robustness_design():
    import functools

    from experiments.build import _draw_province
    from experiments.montecarlo import Design
    from simulate.design import Assignment, Effect, Timing
    from simulate.province import ProvinceDGP

    draw = functools.partial(_draw_province, ProvinceDGP(), Assignment(), Timing(), Effect())
    ests = {("lnce", "twfe"): TWFE("lnce"),
            ("lnce", "twfe_controls"): TWFE("lnce", controls=CONTROLS),
            ("lnce", "event_study"): EventStudy("lnce")}
    return Design(draw, ests)


def lm_replicate(rng: np.random.Generator) -> None:
    """The robustness design's three fits done with linearmodels (draw included)."""
    panel = draw_province(rng)
    lm_twfe(panel, "lnce", ["d"])
    lm_twfe(panel, "lnce", ["d", *CONTROLS])
    cols, _, _ = event_dummies(event_time(panel), 5, 5, -1, True)
    lm_twfe(panel.assign(**cols), "lnce", list(cols))


def bench_montecarlo(n_reps: int, workers: list[int], store: Path) -> list[dict[str, Any]]:
    from experiments.montecarlo import Backend, run_designs

    design = _robustness_design()
    rows = []
    base = None
    for w in workers:
        folder = store / f"w{w}-{time.time_ns()}"
        backend = Backend(kind="sequential") if w == 1 else Backend(kind="loky", n_jobs=w)
        if w > 1:  # start the worker pool outside the timing, as a long run amortises it
            run_designs([design], 2 * w, 99, store=folder / "warm", keys=["k"], chunk_size=1,
                        backend=backend)
        t0 = time.perf_counter()
        run_designs([design], n_reps, 1, store=folder, keys=["k"],
                    chunk_size=max(1, n_reps // (8 * w)), backend=backend)
        wall = time.perf_counter() - t0
        rate = n_reps / wall
        base = base or rate
        rows.append({"workers": w, "reps": n_reps, "seconds": wall, "reps_per_s": rate,
                     "parallel_efficiency": rate / (base * w)})
    n_lm = max(5, n_reps // 40)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_lm):
        lm_replicate(rng)
    lm_per_rep = (time.perf_counter() - t0) / n_lm
    for r in rows:
        r["linearmodels_loop_s_per_rep"] = lm_per_rep
        r["speedup_per_core_vs_linearmodels"] = (r["reps_per_s"] / r["workers"]) * lm_per_rep
    return rows


def bench_permutation(n_perm: int) -> list[dict[str, Any]]:
    """Studentized TWFE (cluster-robust t) randomization inference on the 30x19 panel:
    didlab's vectorised path, a loop of linearmodels fits over the same kind of draws, and
    pyfixest's ``ritest`` (which re-estimates per draw; its design shuffles ``d`` across
    rows, not pilots across provinces -- only its per-draw throughput is comparable)."""
    from estimators.placebo import RandomizationInference, _with_cohorts

    panel = draw_province(np.random.default_rng(0))
    ri = RandomizationInference(TWFE("lnce"), n_perm=n_perm, exact=False)
    t_ours = timeit(lambda: ri.run(panel, np.random.default_rng(1)), 3)
    rows = [{"method": "didlab RandomizationInference (vectorised TWFE)", "draws": n_perm,
             "seconds": t_ours, "draws_per_s": n_perm / t_ours}]
    draws, _ = ri.assignments(panel, np.random.default_rng(1))
    units = np.unique(panel["unit"])
    n_lm = 40
    t0 = time.perf_counter()
    for row in draws[:n_lm]:
        fit = lm_twfe(_with_cohorts(panel, dict(zip(units, row))), "lnce", ["d"])
        _ = fit.tstats["d"]
    t_lm = time.perf_counter() - t0
    rows.append({"method": "linearmodels PanelOLS loop", "draws": n_lm, "seconds": t_lm,
                 "draws_per_s": n_lm / t_lm})
    try:
        import pyfixest as pf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = pf.feols("lnce ~ d | unit + time", data=panel, vcov={"CRV1": "unit"})
            n_pf = 200
            t0 = time.perf_counter()
            fit.ritest(resampvar="d", reps=n_pf, type="randomization-t",
                       rng=np.random.default_rng(0))
            t_pf = time.perf_counter() - t0
        rows.append({"method": "pyfixest ritest (randomization-t)", "draws": n_pf,
                     "seconds": t_pf, "draws_per_s": n_pf / t_pf})
    except ImportError:
        pass
    for r in rows:
        r["didlab_speedup"] = rows[0]["draws_per_s"] / r["draws_per_s"]
    return rows


def bench_callaway_santanna(n_boot: int = 1000) -> list[dict[str, Any]]:
    """Callaway-Sant'Anna (doubly robust, never-treated comparisons) with an
    ``n_boot``-draw multiplier bootstrap on the 282x14 city panel, beside the
    ``differences`` and ``csdid`` packages on the same data (ATT(g,t), bootstrap, simple
    aggregation)."""
    import contextlib
    import io

    from estimators.callaway_santanna import CallawaySantAnna
    from simulate.city import draw_city

    panel = draw_city(np.random.default_rng(0))
    est = CallawaySantAnna("nqpf", n_boot=n_boot)
    ours = timeit(lambda: est.fit(panel, rng=np.random.default_rng(0)), 5)
    att = est.fit(panel, rng=np.random.default_rng(0)).estimate
    rows = [{"method": "didlab CallawaySantAnna (all four aggregations)", "seconds": ours,
             "att": att}]
    quiet = lambda: contextlib.ExitStack()  # noqa: E731
    try:
        from differences import ATTgt

        wide = panel[["unit", "time", "cohort", "nqpf"]].copy()
        wide["cohort"] = wide["cohort"].where(wide["cohort"] > 0, np.nan)
        wide = wide.set_index(["unit", "time"])

        def run_differences() -> float:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                a = ATTgt(data=wide, cohort_column="cohort")
                a.fit(formula="nqpf", est_method="dr", control_group="never_treated",
                      boot_iterations=n_boot, n_jobs=1, progress_bar=False, random_state=0)
                return float(a.aggregate("simple", boot_iterations=n_boot, random_state=0).iloc[0, 0])

        t = timeit(run_differences, 3)
        rows.append({"method": "differences ATTgt", "seconds": t, "att": run_differences()})
    except ImportError:
        pass
    try:
        from csdid.att_gt import ATTgt as CsATTgt

        def run_csdid() -> float:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                c = CsATTgt(yname="nqpf", tname="time", idname="unit", gname="cohort", data=panel,
                            control_group="nevertreated", biters=n_boot).fit(est_method="dr", bstrap=True)
                c.aggte(typec="simple", biters=n_boot)
                return float(c.atte["overall_att"])

        t = timeit(run_csdid, 3)
        rows.append({"method": "csdid ATTgt", "seconds": t, "att": run_csdid()})
    except ImportError:
        pass
    del quiet
    for r in rows:
        r["didlab_speedup"] = r["seconds"] / rows[0]["seconds"]
    return rows


def bench_psm() -> list[dict[str, Any]]:
    """Full PSM-DID (logit score, kernel matching, weighted DID, cluster SE) on the 30x19
    province panel and a 282x14 city panel, and its 499-draw bootstrap that re-estimates
    the score and the matching in every draw."""
    from estimators.psm_did import PSMDID, PSMDIDWeighted
    from simulate.city import draw_city

    province = draw_province(np.random.default_rng(0), assignment=_random_assignment())
    city = draw_city(np.random.default_rng(0))
    rows = []
    for name, panel, outcome, cov in (("30x19", province, "lnce", ("lnpgdp", "lnes")),
                                      ("282x14", city, "nqpf", ("lnpgdp",))):
        est = PSMDIDWeighted(outcome, covariates=cov, controls=cov)
        rows.append({"what": f"PSM-DID weighted, kernel, {name}",
                     "seconds": timeit(lambda: est.fit(panel), 20)})
    boot = PSMDID("lnce", covariates=("lnpgdp", "lnes"), n_boot=499)
    rows.append({"what": "PSM-DID, 499-draw bootstrap (score + matching re-estimated), 30x19",
                 "seconds": timeit(lambda: boot.fit(province, rng=np.random.default_rng(0)), 3)})
    return rows


def _random_assignment():
    from simulate.design import Assignment

    return Assignment(kind="random")


def bench_mediation() -> list[dict[str, Any]]:
    """Three-mediator stepwise analysis on 30x19 and its 999-draw cluster bootstrap, beside
    the same bootstrap done with linearmodels fits in a loop (20 draws, per-draw time)."""
    from estimators.mediation import Mediation

    panel = draw_province(np.random.default_rng(0))
    kwargs = dict(mediators=("lnes", "lntech", "lnis2"), mediator_lags=(0, 2, 2),
                  controls=("lnpgdp", "lnpeople", "lnfdi"))
    point = Mediation("lnce", n_boot=0, **kwargs)
    boot = Mediation("lnce", n_boot=999, **kwargs)
    rows = [{"what": "mediation, 3 mediators, point estimates", "seconds": timeit(lambda: point.fit(panel), 20)},
            {"what": "mediation, 999-draw cluster bootstrap (didlab)",
             "seconds": timeit(lambda: boot.fit(panel, rng=np.random.default_rng(0)), 5)}]
    # the same bootstrap with linearmodels: 3 mediators x (a, b/c' equations) + c per draw
    from linearmodels import PanelOLS

    lagged = panel.sort_values(["unit", "time"]).copy()
    for m in ("lntech", "lnis2"):
        lagged[f"L2_{m}"] = lagged.groupby("unit")[m].shift(2)
    rng = np.random.default_rng(0)
    units = lagged["unit"].unique()
    n_draws = 20
    t0 = time.perf_counter()
    for _ in range(n_draws):
        pick = rng.choice(units, size=units.size, replace=True)
        boot_panel = pd.concat([lagged[lagged["unit"] == u].assign(unit=i) for i, u in enumerate(pick)])
        for m in ("lnes", "L2_lntech", "L2_lnis2"):
            sub = boot_panel.dropna(subset=[m]).set_index(["unit", "time"])
            ctl = ["lnpgdp", "lnpeople", "lnfdi"]
            for dep, regs in ((m, ["d", *ctl]), ("lnce", ["d", m, *ctl]), ("lnce", ["d", *ctl])):
                PanelOLS(sub[dep], sub[regs], entity_effects=True, time_effects=True).fit()
    per_draw = (time.perf_counter() - t0) / n_draws
    rows.append({"what": "same bootstrap with linearmodels PanelOLS (extrapolated to 999)",
                 "seconds": per_draw * 999})
    return rows


def bench_honest() -> list[dict[str, Any]]:
    """C-LF relative-magnitude sets (4 values of Mbar) on the HonestDiD README's Medicaid
    event study (5 pre, 2 post) and on the province event study (3 pre, 5 post), against
    the ``honestdid`` port of R HonestDiD when it is installed (not a dependency: it pulls
    in torch)."""
    import importlib.util

    from estimators.event_study import EventStudy
    from estimators.sensitivity import conditional_interval, event_inputs

    tests_data = Path(__file__).resolve().parent.parent / "tests" / "data" / "ehec_data.csv"
    cases = []
    if tests_data.exists():
        raw = pd.read_csv(tests_data)
        df = raw[(raw["year"] < 2016) & (raw["yexp2"].isna() | (raw["yexp2"] != 2015))]
        p = pd.DataFrame({"unit": df["stfips"], "time": df["year"], "dins": df["dins"]})
        p["cohort"] = np.where(df["yexp2"] == 2014, 2014, 0)
        p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(int)
        cases.append(("Medicaid (5 pre, 2 post)",
                      EventStudy("dins", leads=None, lags=None, cluster="unit").fit(p)))
    cases.append(("province (3 pre, 5 post)", EventStudy("lnce", leads=4, lags=4).fit(
        draw_province(np.random.default_rng(7)))))
    has_port = importlib.util.find_spec("honestdid") is not None
    mbars = (0.5, 1.0, 1.5, 2.0)
    rows = []
    for name, fit in cases:
        inp = event_inputs(fit)
        l = np.eye(inp.n_post)[0]
        t = timeit(lambda: [conditional_interval(inp, "relative_magnitudes", m, l) for m in mbars], 3)
        rows.append({"what": f"C-LF, 4 Mbar values, {name}", "didlab_s": t})
        if has_port:
            import honestdid

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                try:
                    for m in mbars:
                        honestdid.computeConditionalCS_DeltaRM(inp.beta, inp.sigma, inp.n_pre,
                                                              inp.n_post, l_vec=l, Mbar=m,
                                                              hybrid_flag="LF")
                except Exception as exc:  # the port fails on some designs; report it
                    rows[-1]["honestdid_port_s"] = f"fails ({type(exc).__name__})"
                    continue
                rows[-1]["honestdid_port_s"] = time.perf_counter() - t0
            rows[-1]["speedup"] = rows[-1]["honestdid_port_s"] / t
    return rows


# --- the estimators of this session beside their peers --------------------------------------
#
# Each group times one didlab estimator against every installed peer that implements the same
# estimator, on the same panel in the same process, and checks that the point estimates agree
# (a benchmark of different answers would mean nothing). Rows: estimator, panel, didlab_s,
# peer, peer_s, ratio (= peer_s / didlab_s: above 1, didlab is faster), both estimates, their
# absolute difference, the tolerance and whether it holds, and a note (what each side
# computes, why numbers differ, or why a peer is missing, fails or is skipped).

#: a peer or didlab call whose first (warm-up) call takes longer than this is timed once
_SLOW_S = 10.0
#: a call estimated to take longer than this is skipped, with the estimate in the note
_SKIP_S = 60.0


class _Skip(Exception):
    """A call not made because it would take longer than ``_SKIP_S``; the message says
    why (a projection from a measured time)."""


def staggered_panel(n_units: int, n_periods: int, seed: int = 0) -> pd.DataFrame:
    """Balanced staggered panel: 40% never treated, three cohorts of 20% adopting at
    ``T//3 + 1``, ``T//2 + 1`` and ``2T//3 + 1`` (periods ``1..T``; ``cohort`` 0 = never),
    effects that grow with exposure and differ by cohort (so that TWFE would be biased and
    the heterogeneity-robust estimators have something to do), one covariate ``x``."""
    rng = np.random.default_rng(seed)
    t_max = n_periods
    cohorts = np.array([0, t_max // 3 + 1, t_max // 2 + 1, 2 * t_max // 3 + 1])
    unit = np.repeat(np.arange(n_units), t_max)
    t = np.tile(np.arange(1, t_max + 1), n_units)
    cohort = rng.choice(cohorts, size=n_units, p=[0.4, 0.2, 0.2, 0.2])[unit]
    d = ((cohort > 0) & (t >= cohort)).astype(np.int8)
    x = rng.standard_normal(unit.size)
    tau = np.where(d == 1, -0.3 - 0.05 * (t - cohort) - 0.02 * (cohort - cohorts[1]), 0.0)
    y = (rng.standard_normal(n_units)[unit] + 0.05 * t + tau + 0.5 * x
         + rng.standard_normal(unit.size))
    return pd.DataFrame({"unit": unit, "time": t, "cohort": cohort, "d": d, "y": y, "x": x})


def single_treated_panel(n_units: int, n_periods: int, seed: int = 0) -> pd.DataFrame:
    """:func:`synthetic_panel` with one treated unit (unit 0, from ``T//2``, effect -0.5)
    and every other unit never treated: the synthetic-control setting."""
    p = synthetic_panel(n_units, n_periods, seed)
    p["y"] = p["y"] + 0.3 * p["d"]                 # undo the panel's own effect
    p["cohort"] = np.where(p["unit"] == 0, n_periods // 2, 0)
    p["d"] = ((p["cohort"] > 0) & (p["time"] >= p["cohort"])).astype(np.int8)
    p["y"] = p["y"] - 0.5 * p["d"]
    return p


def _sizes(quick: bool) -> list[tuple[str, int, int]]:
    big = ("2,000x14 (quick)", 2_000, 14) if quick else ("20,000x14", 20_000, 14)
    return [("30x19", 30, 19), ("282x14", 282, 14), big]


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any, int]:
    """(median seconds, result, runs): one warm-up call (numba caches, imports), then
    ``repeat`` timed calls; a warm-up call over ``_SLOW_S`` is the only timing."""
    t0 = time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0
    if first > _SLOW_S:
        return first, res, 1
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res, repeat


def _quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with warnings and stdout silenced (peers print progress and beta warnings)."""
    import contextlib
    import io

    def run() -> Any:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn()
    return run


def _compare(estimator: str, panel: str, ours: tuple[float, float, int],
             peers: list[tuple[str, Callable[[], float] | str, float, str]],
             repeat: int, note: str = "") -> list[dict[str, Any]]:
    """Rows for one didlab timing ``ours = (seconds, estimate, runs)`` beside each peer
    ``(name, fn or reason-it-did-not-run, tolerance, note)``; ``fn`` returns the peer's
    point estimate. A peer that raises is reported with its error."""
    rows = []
    base = {"estimator": estimator, "panel": panel, "didlab_s": ours[0],
            "didlab_estimate": ours[1]}
    if not peers:
        rows.append({**base, "peer": "(none)", "note": note})
    for name, fn, tol, peer_note in peers:
        row: dict[str, Any] = {**base, "peer": name}
        notes = [n for n in (note, peer_note) if n]
        if isinstance(fn, str):
            notes.append(fn)
        else:
            try:
                sec, est, runs = _timed(_quiet(fn), repeat)
            except _Skip as exc:
                notes.append(str(exc))
            except Exception as exc:  # a peer that fails on a size is reported, not hidden
                notes.append(f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                             if str(exc) else f"fails: {type(exc).__name__}")
            else:
                diff = abs(float(est) - ours[1])
                row.update(peer_s=sec, ratio=sec / ours[0], peer_estimate=float(est),
                           abs_diff=diff, tol=tol, agree=bool(diff <= tol))
                if runs == 1:
                    notes.append("peer timed once (one call > 10 s)")
        if ours[2] == 1:
            notes.append("didlab timed once (one call > 10 s)")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def _import(module: str) -> Any:
    import importlib

    return importlib.import_module(module) if _available(module) else None


def _not_installed(name: str) -> str:
    return f"not installed ({name}; pip install -e '.[bench]')"


def bench_stacked(quick: bool) -> list[dict[str, Any]]:
    """Stacked DID (Wing-Freedman-Hollingsworth corrective weights, window -3..+2,
    not-yet-treated clean controls, unit-clustered SEs) beside diff-diff ``StackedDiD``
    (its ``weighting="aggregate"`` is WFH's Q weight; the overall ATT is the mean of the
    post-period event-time effects, as didlab's headline)."""
    from estimators.stacked import StackedDID

    dd = _import("diff_diff")
    rows = []
    for name, n, t in _sizes(quick):
        p = staggered_panel(n, t)
        est = StackedDID("y")
        ours = _timed(lambda: est.fit(p).estimate, 5)
        peers = [("diff-diff StackedDiD",
                  (lambda: dd.StackedDiD(kappa_pre=3, kappa_post=2, weighting="aggregate")
                   .fit(p, "y", "unit", "time", "cohort").overall_att)
                  if dd else _not_installed("diff-diff"), 1e-8, "")]
        rows += _compare("stacked", name, ours, peers, 5)
    return rows


def bench_did2s(quick: bool) -> list[dict[str, Any]]:
    """Gardner's two-stage DID (static ATT, GMM-sandwich SEs clustered by unit) beside
    pyfixest ``did2s`` and diff-diff ``TwoStageDiD``. didlab's one fit also computes the
    event-time terms with their covariance and the pre-trend Wald test; the peers' calls
    give the static ATT only."""
    from estimators.did2s import TwoStageDID

    pf = _import("pyfixest")
    dd = _import("diff_diff")
    rows = []
    for name, n, t in _sizes(quick):
        p = staggered_panel(n, t)
        est = TwoStageDID("y")
        ours = _timed(lambda: est.fit(p).estimate, 5)
        p64 = p.astype({"d": np.int64})        # pyfixest refuses an int8 treatment column
        peers = [
            ("pyfixest did2s",
             (lambda: float(pf.did2s(p64, yname="y", first_stage="~ 0 | unit + time",
                                     second_stage="~ d", treatment="d", cluster="unit")
                            .coef().iloc[0])) if pf and n <= 10_000
             else "skipped: killed by the system (SIGKILL, most likely memory: 23 GB "
                  "machine) within 150 s in a trial on 20,000x14" if pf
             else _not_installed("pyfixest"),
             1e-4, "pyfixest recovers the stage-1 fixed effects iteratively (fixef()): "
                   "agrees to its tolerance, not to 1e-8"),
            ("diff-diff TwoStageDiD",
             (lambda: dd.TwoStageDiD(cluster="unit").fit(p, "y", "unit", "time", "cohort")
              .overall_att) if dd else _not_installed("diff-diff"), 1e-8, "")]
        rows += _compare("did2s", name, ours, peers, 5,
                         "didlab's fit includes the event study and pre-trend test")
    return rows


def _pyfixest_saturated_att(pf: Any, p: pd.DataFrame) -> float:
    """pyfixest's saturated (cohort x event time, never-treated comparisons) event study,
    aggregated here to the simple ATT: post-treatment cells weighted by their treated
    observations, as etwfe's ``emfx(type = "simple")``."""
    fit = pf.event_study(p, "y", "unit", "time", "cohort", estimator="saturated",
                         cluster="unit")
    tidy = fit.tidy()
    cells = tidy.index.str.extract(r"rel_time::(?P<e>[-\d.]+):first_treated_period::(?P<g>\d+)")
    e = cells["e"].astype(float).to_numpy()
    g = cells["g"].astype(int).to_numpy()
    treated = p[p["d"] == 1]
    counts = treated.groupby([treated["cohort"], treated["time"] - treated["cohort"]]).size()
    w = np.array([counts.get((gi, int(ei)), 0) if ei >= 0 else 0 for gi, ei in zip(g, e)],
                 dtype=float)
    return float(w @ tidy["Estimate"].to_numpy() / w.sum())


def bench_etwfe(quick: bool) -> list[dict[str, Any]]:
    """Extended TWFE (Wooldridge; linear, unit effects, simple ATT with delta-method SEs)
    with not-yet-treated comparisons beside diff-diff ``WooldridgeDiD``, and with
    never-treated comparisons beside diff-diff and pyfixest's saturated event study (its
    cohort x event-time cells are ETWFE's never-treated cells; aggregated here by treated
    observations)."""
    from estimators.etwfe import ETWFE

    pf = _import("pyfixest")
    dd = _import("diff_diff")
    rows = []
    for name, n, t in _sizes(quick):
        p = staggered_panel(n, t)
        for cg, dd_cg in (("notyettreated", "not_yet_treated"), ("nevertreated", "never_treated")):
            est = ETWFE("y", control_group=cg)
            ours = _timed(lambda: est.fit(p).estimate, 5)
            peers = [("diff-diff WooldridgeDiD",
                      (lambda: dd.WooldridgeDiD(control_group=dd_cg, cluster="unit")
                       .fit(p, "y", "unit", "time", "cohort").overall_att)
                      if dd else _not_installed("diff-diff"), 1e-8, "")]
            if cg == "nevertreated":
                peers.append(("pyfixest event_study(saturated)",
                               (lambda: _pyfixest_saturated_att(pf, p)) if pf
                               else _not_installed("pyfixest"), 1e-8,
                               "cells aggregated in the bench"))
            rows += _compare(f"etwfe ({cg})", name, ours, peers, 5)
    return rows


def bench_dcdh(quick: bool) -> list[dict[str, Any]]:
    """de Chaisemartin-D'Haultfoeuille ``DID_1..DID_3``, three placebos and the average
    total effect (the headline compared) beside diff-diff ``ChaisemartinDHaultfoeuille``
    (``L_max=3``, its placebos, no TWFE diagnostic)."""
    from estimators.dcdh import DCDH

    dd = _import("diff_diff")
    rows = []
    for name, n, t in _sizes(quick):
        p = staggered_panel(n, t)
        est = DCDH("y", effects=3, placebo=3)
        ours = _timed(lambda: est.fit(p).estimate, 5)
        peers = [("diff-diff ChaisemartinDHaultfoeuille",
                  (lambda: dd.ChaisemartinDHaultfoeuille(twfe_diagnostic=False)
                   .fit(p, "y", "unit", "time", "d", L_max=3).overall_att)
                  if dd else _not_installed("diff-diff"), 1e-8,
                  "same Av_tot_eff; SEs differ (didlab is pinned to R DIDmultiplegtDYN)")]
        rows += _compare("dcdh (3 effects, 3 placebos)", name, ours, peers, 5)
    return rows


def _pysyncon_with_placebos(p: pd.DataFrame, budget: float) -> float:
    """pysyncon ``Synth`` on the treated unit and on every never-treated unit (placebos
    against the other never-treated units, didlab's donor pools), one process, with
    ``V`` = the pre-period outcomes' variances so that pysyncon's standardisation cancels
    and ``W`` minimises the plain pre-period MSPE (didlab's ``predictors="outcomes"``).
    Raises :class:`_Skip` with the projected time when the whole set would exceed
    ``budget`` seconds."""
    from pysyncon import Synth

    wide = p.pivot(index="time", columns="unit", values="y")
    t0 = int(p.loc[p["cohort"] > 0, "cohort"].iloc[0])
    pre = wide.index < t0

    def gap(treated: Any, donors: pd.DataFrame) -> float:
        z1, z0 = wide[treated], donors
        x1, x0 = z1[pre], z0[pre]
        v = pd.concat([x0, x1], axis=1).var(axis=1).to_numpy()
        s = Synth()
        s.fit(X0=x0, X1=x1, Z0=z0, Z1=z1, custom_V=v)
        return float((z1[~pre] - z0[~pre].to_numpy() @ s.W).mean())

    def n_fits(c: pd.DataFrame) -> int:
        return c.shape[1] + 1

    controls = wide.drop(columns=0)
    if controls.shape[1] > 500:   # SLSQP is cubic in the donors: one fit on 1,999 took 200 s
        raise _Skip(f"skipped: SLSQP on {controls.shape[1]} donors, {n_fits(controls)} "
                           f"fits (one fit on 1,999 donors took ~200 s here)")
    start = time.perf_counter()
    att = gap(0, controls)
    one = time.perf_counter() - start
    if one * n_fits(controls) > budget:
        raise _Skip(f"skipped: one fit {one:.2g} s x {n_fits(controls)} fits "
                           f"~ {one * n_fits(controls):.0f} s > {budget:.0f} s")
    for c in controls.columns:
        gap(c, controls.drop(columns=c))
    return att


def bench_synth(quick: bool) -> list[dict[str, Any]]:
    """Synthetic control (every pre-period outcome a predictor, so ``W`` minimises the
    pre-period MSPE) with its in-space placebos, one treated unit, beside pysyncon
    ``Synth`` (the same ``W`` through a custom ``V``; SLSQP) with the same placebos in a
    loop, and diff-diff ``SyntheticControl`` (``custom_v`` ones on unstandardised
    pre-period outcomes; exact NNLS) with its ``in_space_placebo()``."""
    from estimators.synth import SyntheticControl

    pysyncon = _import("pysyncon")
    dd = _import("diff_diff")
    rows = []
    for name, n, t in _sizes(quick):
        if n > 10_000:
            rows.append({"estimator": "synthetic control (+ in-space placebos)",
                         "panel": name, "peer": "(all)",
                         "note": f"skipped for didlab and peers: {n} placebo fits on "
                                 f"{n - 1} donors each, far beyond {_SKIP_S:.0f} s "
                                 "(one treated unit; a synthetic control is a few-donor "
                                 "method)"})
            continue
        p = single_treated_panel(n, t)
        est = SyntheticControl("y")
        fit = est.fit(p)
        ours = _timed(lambda: est.fit(p).estimate, 3)

        def dd_fit() -> float:
            r = dd.SyntheticControl(v_method="custom", custom_v=np.ones(t // 2),
                                    standardize="none").fit(p, "y", "d", "unit", "time",
                                                            pre_period_outcomes="all")
            r.in_space_placebo()
            return r.att

        peers = [
            ("pysyncon Synth (loop)",
             (lambda: _pysyncon_with_placebos(p, _SKIP_S)) if pysyncon
             else _not_installed("pysyncon"), 1e-4,
             "SLSQP's tolerance bounds the agreement"),
            ("diff-diff SyntheticControl",
             dd_fit if dd else _not_installed("diff-diff"), 1e-6,
             f"placebo p differs by design (its placebos keep the treated unit among the "
             f"donors; didlab's, as SCtools, do not); didlab p = {fit.p_value:.3g}")]
        rows += _compare("synthetic control (+ in-space placebos)", name, ours, peers, 3)
    return rows


def _sdid_commit() -> str:
    """The commit of ``estimators/sdid.py`` being measured (and whether the working tree
    differs from it), for the record: the module is being optimised."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        h = subprocess.run(["git", "log", "-1", "--format=%h", "--", "estimators/sdid.py"],
                           cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "--", "estimators/sdid.py"],
                               cwd=root, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{h}{' + uncommitted changes' if dirty else ''}"


def bench_sdid(quick: bool) -> list[dict[str, Any]]:
    """Synthetic DID (one cohort, a fifth of units treated from mid-sample) with placebo
    SEs (200 draws) and with jackknife SEs, beside diff-diff ``SyntheticDiD`` (same
    variance method and draws) and the ``synthdid`` pip package (not in the ``bench``
    extra: it pins numpy 1.23 / pandas 1.5; tried when installed). The point estimates
    must agree; placebo SEs differ by their random draws, jackknife SEs are deterministic
    and compared in the note."""
    from estimators.sdid import SyntheticDID

    dd = _import("diff_diff")
    has_synthdid = _available("synthdid")
    commit = _sdid_commit()
    rows = []
    for name, n, t in _sizes(quick):
        p = synthetic_panel(n, t)
        p["treated"] = (p["cohort"] > 0).astype(int)
        post = list(range(t // 2, t))
        for variance in ("placebo", "jackknife"):
            if variance == "placebo" and n > 10_000:
                rows.append({"estimator": "sdid (placebo SE)", "panel": name, "peer": "(all)",
                             "note": f"skipped for didlab and diff-diff: 200 draws each "
                                     f"refitting Frank-Wolfe on ~{int(0.8 * n)} controls; at "
                                     f"2,000 units didlab took 12 s and diff-diff 19 s, "
                                     f"so well over {_SKIP_S:.0f} s here"})
                continue
            est = SyntheticDID("y", variance=variance, n_boot=200)
            fit = est.fit(p, rng=np.random.default_rng(0))
            ours = _timed(lambda: est.fit(p, rng=np.random.default_rng(0)).estimate, 3)
            dd_se: dict[str, float] = {}

            def dd_fit() -> float:
                r = dd.SyntheticDiD(variance_method=variance, n_bootstrap=200, seed=0).fit(
                    p, "y", "treated", "unit", "time", post_periods=post)
                dd_se["se"] = r.se
                return r.att

            def synthdid_fit() -> float:
                from synthdid.synthdid import Synthdid

                s = Synthdid(p, "unit", "time", "d", "y").fit()
                s.vcov(method=variance)   # its placebo runs 50 draws whatever n_reps says
                return float(s.att)

            peers = [("diff-diff SyntheticDiD", dd_fit if dd else _not_installed("diff-diff"),
                      1e-8, ""),
                     ("synthdid (pip)", synthdid_fit if has_synthdid else
                      "not installed (pip install --no-deps synthdid; not in the bench "
                      "extra: it pins numpy 1.23 / pandas 1.5)", 1e-8,
                      "synthdid 0.10.1 needs pandas < 3: its groupby().apply() expects "
                      "the grouping column kept")]
            new = _compare(f"sdid ({variance} SE)", name, ours, peers, 3,
                           f"sdid.py at {commit}")
            if "se" in dd_se:
                new[0]["note"] += (f"; SE didlab {fit.std_error:.4g} vs diff-diff "
                                   f"{dd_se['se']:.4g}")
            rows += new
    return rows


#: the groups of this session's estimators, in the order they run
def bench_wild(quick: bool) -> list[dict[str, Any]]:
    """Issue #17's target: a 9,999-draw wild cluster bootstrap (WCR, Rademacher) of the
    TWFE coefficient on the 30x19 province panel -- p-value and the test-inversion
    interval -- beside the ``wildboottest`` package's p-value alone (FE as dummies, the
    same clusters and draws, its own random weights, so p-values agree to Monte Carlo
    error). The outcome is the untreated one, so the p-value is interior."""
    from estimators.twfe import TWFE

    wb = _import("wildboottest")
    panel = draw_province(np.random.default_rng(7))
    draws = 999 if quick else 9999
    est = TWFE("y0_lnce", dist="wild", wild_draws=draws)
    ours = _timed(lambda: est.fit(panel, rng=np.random.default_rng(0)).p_value, 7)

    def peer() -> float:
        from wildboottest.wildboottest import wildboottest

        unit = pd.get_dummies(panel["unit"], prefix="u", drop_first=True, dtype=float)
        year = pd.get_dummies(panel["time"], prefix="t", drop_first=True, dtype=float)
        x = pd.concat([panel[["d"]].astype(float), unit, year], axis=1)
        x.insert(0, "const", 1.0)
        y = panel["y0_lnce"]
        out = wildboottest(_model(y, x), param="d", cluster=panel["unit"], B=draws,
                           bootstrap_type="11", impose_null=True, seed=0, show=False)
        return float(np.ravel(out["p-value"])[0] if hasattr(out, "__getitem__") else out)

    tol = 3 * np.sqrt(0.25 / draws) + 0.01  # two bootstraps of the same p-value
    peers = [("wildboottest (p-value only)", peer if wb else _not_installed("wildboottest"),
              tol, "compared: p-values")]
    return _compare("twfe dist=wild (WCR, p + CI)", f"30x19, {draws} draws", ours, peers, 5)


def _model(y: pd.Series, x: pd.DataFrame) -> Any:
    import statsmodels.api as sm

    return sm.OLS(y, x)


NEW_GROUPS: dict[str, tuple[Callable[[bool], list[dict[str, Any]]], str]] = {
    "wild": (bench_wild, "Wild cluster bootstrap of the TWFE coefficient"),
    "stacked": (bench_stacked, "Stacked DID (WFH corrective weights)"),
    "did2s": (bench_did2s, "Two-stage DID (Gardner)"),
    "etwfe": (bench_etwfe, "Extended TWFE (Wooldridge)"),
    "dcdh": (bench_dcdh, "de Chaisemartin-D'Haultfoeuille"),
    "synth": (bench_synth, "Synthetic control with in-space placebos"),
    "sdid": (bench_sdid, "Synthetic DID"),
}

_NEW_COLUMNS = ["estimator", "panel", "didlab_s", "peer", "peer_s", "ratio", "didlab_estimate",
                "peer_estimate", "abs_diff", "tol", "agree", "didlab_peak_mb", "peer_peak_mb",
                "note"]

#: modules that add groups to :data:`NEW_GROUPS`: each defines ``GROUPS = {name: (fn,
#: title)}`` with ``fn(quick) -> rows`` in the columns above. Imported when a run starts,
#: not at import time: they import this module for its helpers.
GROUP_MODULES = ("experiments.bench_cs", "experiments.bench_scale", "experiments.bench_mc",
                 "experiments.bench_catalog")


def load_group_modules() -> None:
    """Add the groups of every importable :data:`GROUP_MODULES` to :data:`NEW_GROUPS`."""
    import importlib

    for name in GROUP_MODULES:
        if _available(name):
            NEW_GROUPS.update(importlib.import_module(name).GROUPS)


#: prologue and epilogue of :func:`run_isolated`'s child process
_ISOLATED_HEAD = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
"""
_ISOLATED_TAIL = """
out = {"seconds": seconds, "estimate": float(estimate), "peak_mb": _rss_mb(),
       "base_mb": base_mb}
print("BENCH-RESULT " + json.dumps(out))
"""


def run_isolated(body: str, timeout: float = 900.0, cwd: str | None = None) -> dict[str, Any]:
    """Run ``body`` in a fresh Python process and return what it measured.

    ``body`` builds its data, then sets ``base_mb = _rss_mb()`` (peak resident memory
    before the fit, MB), times the fit itself into ``seconds`` and stores the point estimate
    in ``estimate``. A fresh process makes ``peak_mb`` (max RSS, Linux kB -> MB) the fit's
    own peak rather than the largest thing the benchmark process ever held. Returns
    ``{"seconds", "estimate", "peak_mb", "base_mb"}``, or ``{"error": reason}`` when the
    child fails, is killed (memory) or runs past ``timeout``.
    """
    import subprocess
    import sys

    code = _ISOLATED_HEAD + body + _ISOLATED_TAIL
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    if proc.returncode < 0:
        tail = f"killed by signal {-proc.returncode} (memory?)"
    return {"error": tail[:200]}


def run_new_groups(names: list[str], quick: bool, results: dict[str, Any]) -> None:
    """Run the named groups of :data:`NEW_GROUPS`, print their tables and store the rows."""
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        for key in names:
            fn, title = NEW_GROUPS[key]
            load = os.getloadavg()
            rows = fn(quick)
            results[key] = {"load_before": load, "load_after": os.getloadavg(), "rows": rows}
            print(f"\n{title} (ratio = peer_s / didlab_s; load {load[0]:.2f})")
            table = pd.DataFrame(rows)
            # the shared columns first, then a group's own (reps_per_s, ...)
            table = table.reindex(columns=[*_NEW_COLUMNS,
                                           *[c for c in table if c not in _NEW_COLUMNS]])
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def main(argv: list[str] | None = None) -> None:
    load_group_modules()
    parser = argparse.ArgumentParser(prog="didlab-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller panels and fewer draws")
    parser.add_argument("--reps", type=int, default=2000, help="Monte Carlo replicates")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--out", default="outputs/bench", help="folder for bench.json")
    parser.add_argument("--only", default="",
                        help=f"comma-separated groups of {sorted(NEW_GROUPS)} to run alone")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
    pd.set_option("display.width", 160)
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(NEW_GROUPS))
        if unknown:
            parser.error(f"--only {unknown}: accepted groups are {sorted(NEW_GROUPS)}")
        run_new_groups(args.only.split(","), args.quick, results)
        (out / "bench.json").write_text(json.dumps(results, indent=2, default=float))
        print(f"\nwritten {out / 'bench.json'}")
        return
    twfe = bench_twfe(args.quick)
    results["twfe"] = twfe
    print("\nOne TWFE fit, unit-clustered SEs (median wall time)")
    print(pd.DataFrame(twfe).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    reps = 200 if args.quick else args.reps
    mc = bench_montecarlo(reps, [int(w) for w in args.workers.split(",")], out / "store")
    results["montecarlo"] = mc
    print("\nMonte Carlo, robustness design (draw + 3 fits per replicate)")
    print(pd.DataFrame(mc).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    perm = bench_permutation(2000 if args.quick else 10_000)
    results["permutation"] = perm
    print("\nRandomization inference, studentized TWFE on 30x19")
    print(pd.DataFrame(perm).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    cs = bench_callaway_santanna()
    results["callaway_santanna"] = cs
    print("\nCallaway-Sant'Anna, 1,000-draw multiplier bootstrap, 282x14 city panel")
    print(pd.DataFrame(cs).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for name, fn, title in (("psm", bench_psm, "PSM-DID"), ("mediation", bench_mediation, "Mediation"),
                            ("honest", bench_honest, "Honest sets (Rambachan-Roth C-LF)")):
        rows = fn()
        results[name] = rows
        print(f"\n{title}")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    run_new_groups(list(NEW_GROUPS), args.quick, results)
    for extra in EXTRA_BENCHES:
        name, rows = extra(args)
        results[name] = rows
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwritten {out / 'bench.json'}")


#: further benchmarks registered by later modules: callables ``args -> (name, rows)``
EXTRA_BENCHES: list[Callable[[argparse.Namespace], tuple[str, Any]]] = []


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
