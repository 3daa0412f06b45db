"""``make bench``: didlab against its peers, measured in the same run.

Times (median of repeats, wall clock):

1. one TWFE fit with unit-clustered SEs on 30x19, 282x14 and 100,000x20 panels, beside
   linearmodels ``PanelOLS`` and pyfixest ``feols`` (when installed: ``.[bench]``);
2. Monte Carlo throughput of the robustness design (draw + TWFE, TWFE with controls, event
   study) on 1 and 2 workers, beside the same three fits done with linearmodels in a loop.

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="didlab-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller panels and fewer draws")
    parser.add_argument("--reps", type=int, default=2000, help="Monte Carlo replicates")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--out", default="outputs/bench", help="folder for bench.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    pd.set_option("display.width", 160)
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
    for extra in EXTRA_BENCHES:
        name, rows = extra(args)
        results[name] = rows
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwritten {out / 'bench.json'}")


#: further benchmarks registered by later modules: callables ``args -> (name, rows)``
EXTRA_BENCHES: list[Callable[[argparse.Namespace], tuple[str, Any]]] = []

if __name__ == "__main__":
    main()


# --- imputation on large panels: time and peak memory, each in a fresh process -------------

_IMPUTATION_SCRIPT = """
import resource, sys, time, warnings
import numpy as np, pandas as pd
n, T, tool = int(sys.argv[1]), 10, sys.argv[2]
rng = np.random.default_rng(0)
unit = np.repeat(np.arange(n), T); t = np.tile(np.arange(2000, 2000 + T), n)
coh = rng.choice([0, 2004, 2006, 2008], size=n, p=[.4, .2, .2, .2])[unit]
d = ((coh > 0) & (t >= coh)).astype(int)
y = rng.normal(size=n)[unit] + 0.1 * (t - 2000) + 0.5 * d + rng.normal(size=n * T)
p = pd.DataFrame({"unit": unit, "time": t, "cohort": coh, "d": d, "y": y})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if tool == "didlab":
    from estimators.imputation import Imputation
    est = Imputation("y", pretrend_leads=0).fit(p).estimate
else:
    import pyfixest as pf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.did2s(p, yname="y", first_stage="~ 0 | unit + time", second_stage="~ d",
                       treatment="d", cluster="unit")
    est = float(fit.coef().iloc[0])
sec = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{sec} {peak / 1e6} {base / 1e6} {est}")
"""


def bench_imputation(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    """Imputation (Borusyak-Jaravel-Spiess) ATT with SEs on 4,650 and 100,000 units x 10
    years, beside pyfixest's did2s (Gardner's two-stage, the same point estimate), each in
    a fresh process so that the peak memory (max RSS) is the fit's own."""
    import subprocess
    import sys

    rows = []
    sizes = (4_650,) if args.quick else (4_650, 100_000)
    for n in sizes:
        for tool in ("didlab", "pyfixest"):
            if tool == "pyfixest" and not _available("pyfixest"):
                continue
            proc = subprocess.run([sys.executable, "-c", _IMPUTATION_SCRIPT, str(n), tool],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                rows.append({"rows": n * 10, "tool": tool, "error": proc.stderr.strip()[-200:]})
                continue
            sec, peak, base, est = (float(v) for v in proc.stdout.split())
            rows.append({"rows": n * 10, "tool": tool, "seconds": sec, "peak_rss_gb": peak,
                         "rss_before_fit_gb": base, "estimate": est})
    print("\nImputation DID on large panels (one fit; peak memory of a fresh process)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return "imputation", rows


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


EXTRA_BENCHES.append(bench_imputation)
