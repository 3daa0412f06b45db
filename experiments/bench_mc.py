"""Benchmark group ``mc_batch``: Monte Carlo throughput, batched vs per replicate (issue #19).

On one worker, three designs through the engine's batched path and its per-replicate path
(``run_reps(batch=False)``): the robustness design of
:func:`experiments.bench._robustness_design` (the province draw, TWFE, TWFE with the six
controls, the event study; everything redrawn each replicate), the same with
``data.redraw=outcome`` (covariates and pilots drawn once, the outcome redrawn: one
assignment, many outcome draws), and TWFE + event study on that fixed design. Beside them,
peers in the same run:

* a linearmodels loop (:func:`experiments.bench.lm_replicate`: the same draw, the three
  fits with ``PanelOLS``);
* pyfixest's own batching, multiple estimation of many outcome columns at once
  (``feols("Y1+...+Y100 ~ d | unit + time", vcov={"CRV1": "unit"})`` on 100 draws'
  outcomes stacked beside one panel; TWFE only, no draw);
* diff-diff's ``simulate_power`` with ``TwoWayFixedEffects`` on its own 30 x 19 DGP
  (its DGP, not the province's: only its replicates per second compare).

Then the batched path on 2 loky workers (``run_designs``). ``didlab_s`` / ``peer_s`` are
seconds per replicate; ``reps_per_s`` is didlab's replicates per second.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from .bench import _robustness_design, lm_replicate


def _per_rep(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n


def _fixed_designs() -> dict[str, Any]:
    """The robustness design and a TWFE + event-study design with ``data.redraw=outcome``:
    the covariates and the pilots drawn once, the outcome redrawn in every replicate."""
    import functools

    from estimators.event_study import EventStudy
    from estimators.twfe import TWFE
    from experiments.build import _draw_province
    from simulate.design import Assignment, Effect, Timing
    from simulate.province import CONTROLS, ProvinceDGP

    from .montecarlo import Design

    draw = functools.partial(_draw_province, ProvinceDGP(redraw="outcome"), Assignment(),
                             Timing(), Effect())
    return {
        "robustness, fixed design (data.redraw=outcome): draw + TWFE + TWFE(6 controls) + "
        "event study": Design(draw, {("lnce", "twfe"): TWFE("lnce"),
                                     ("lnce", "twfe_controls"): TWFE("lnce", controls=CONTROLS),
                                     ("lnce", "event_study"): EventStudy("lnce")}),
        "TWFE + event study, fixed design (data.redraw=outcome)":
            Design(draw, {("lnce", "twfe"): TWFE("lnce"),
                          ("lnce", "event_study"): EventStudy("lnce")}),
    }


def _best_per_rep(fn: Any, n: int, repeats: int) -> float:
    """Seconds per replicate, the best of ``repeats`` timings (a shared machine's load only
    ever slows a run down)."""
    return min(_per_rep(fn, n) for _ in range(repeats))


def bench_mc_batch(quick: bool) -> list[dict[str, Any]]:
    """Rows in :data:`experiments.bench._NEW_COLUMNS` plus ``reps_per_s``."""
    from .montecarlo import Backend, run_designs, run_reps

    n_batch = 256 if quick else 2048
    n_single = 20 if quick else 100
    repeats = 2 if quick else 3
    note = "didlab_s / peer_s: seconds per replicate (draw and every fit), 1 worker, best of " \
           f"{repeats}"
    rows: list[dict[str, Any]] = []
    designs = {"robustness, all redrawn (data.redraw=all): draw + TWFE + TWFE(6 controls) + "
               "event study": _robustness_design(), **_fixed_designs()}
    timed: dict[str, tuple[float, float]] = {}
    for panel, design in designs.items():
        run_reps(design, 0, range(8))  # imports, caches and compiled kernels outside the timing
        batched = _best_per_rep(lambda n: run_reps(design, 1, range(n)), n_batch, repeats)
        single = _per_rep(lambda n: run_reps(design, 1, range(n), batch=False), n_single)
        # the two paths agree (a benchmark of different numbers would mean nothing)
        a = run_reps(design, 2, range(10)).drop(columns="seconds")
        b = run_reps(design, 2, range(10), batch=False).drop(columns="seconds")
        diff = float(np.nanmax(np.abs(a["estimate"].to_numpy() - b["estimate"].to_numpy())))
        timed[panel] = (batched, float(a["estimate"].iloc[0]))
        rows.append({"estimator": "montecarlo (batched engine)", "panel": f"province 30x19, {panel}",
                     "didlab_s": batched, "peer": "didlab per-replicate engine",
                     "peer_s": single, "ratio": single / batched,
                     "didlab_estimate": float(a["estimate"].iloc[0]),
                     "peer_estimate": float(b["estimate"].iloc[0]), "abs_diff": diff,
                     "tol": 1e-10, "agree": diff < 1e-10, "note": note,
                     "reps_per_s": 1.0 / batched})
    full_panel, twfe_es_panel = list(designs)[0], list(designs)[2]

    def row(panel: str, peer: str, peer_s: float, extra: str) -> None:
        batched, est = timed[panel]
        rows.append({"estimator": "montecarlo (batched engine)", "panel": f"province 30x19, {panel}",
                     "didlab_s": batched, "peer": peer, "peer_s": peer_s,
                     "ratio": peer_s / batched, "didlab_estimate": est, "abs_diff": np.nan,
                     "tol": np.nan, "agree": None, "note": f"{note}{extra}",
                     "reps_per_s": 1.0 / batched})

    rng = np.random.default_rng(0)
    n_lm = 5 if quick else 20
    try:
        row(full_panel, "linearmodels loop",
            _per_rep(lambda n: [lm_replicate(rng) for _ in range(n)], n_lm),
            "; peer: the same draws and three fits with PanelOLS")
    except ImportError:  # pragma: no cover - peer missing
        pass
    try:
        import pandas as pd
        import pyfixest as pf

        from simulate.province import draw_province

        k = 100
        base = draw_province(np.random.default_rng(0))
        ys = {f"Y{j}": draw_province(np.random.default_rng(j + 1))["lnce"].to_numpy()
              for j in range(k)}
        wide = pd.concat([base, pd.DataFrame(ys)], axis=1)
        formula = " + ".join(ys) + " ~ d | unit + time"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pf.feols(formula, data=wide, vcov={"CRV1": "unit"})
            pf_s = min(_per_rep(lambda n: pf.feols(formula, data=wide, vcov={"CRV1": "unit"}),
                                k) for _ in range(repeats))
        row(twfe_es_panel, "pyfixest multiple estimation (100 outcomes at once)", pf_s,
            "; peer: TWFE only (no event study), no draw (outcome columns given)")
    except ImportError:  # pragma: no cover
        pass
    try:
        from diff_diff import TwoWayFixedEffects, simulate_power

        n_dd = 20 if quick else 100
        t0 = time.perf_counter()
        simulate_power(TwoWayFixedEffects(), n_units=30, n_periods=19, treatment_period=11,
                       treatment_fraction=0.2, n_simulations=n_dd, progress=False, seed=1)
        dd_s = (time.perf_counter() - t0) / n_dd
        row(twfe_es_panel, "diff-diff simulate_power (TwoWayFixedEffects)", dd_s,
            "; peer: its own 30x19 DGP, TWFE only")
    except ImportError:  # pragma: no cover
        pass
    # 2 workers, the batched path through the store, in chunks of 1,024 (the README's
    # advice for fast designs: a chunk's bookkeeping costs about 20 ms)
    chunk = 256 if quick else 1024
    for panel in (full_panel, twfe_es_panel):
        design = designs[panel]
        with TemporaryDirectory() as tmp:
            backend = Backend(kind="loky", n_jobs=2)
            run_designs([design], 4, 99, store=Path(tmp) / "warm", keys=["k"], chunk_size=2,
                        backend=backend)
            n2 = 4 * n_batch
            t0 = time.perf_counter()
            run_designs([design], n2, 3, store=Path(tmp) / "run", keys=["k"], chunk_size=chunk,
                        backend=backend)
            two = (time.perf_counter() - t0) / n2
        rows.append({"estimator": "montecarlo (batched engine, 2 loky workers)",
                     "panel": f"province 30x19, {panel}", "didlab_s": two, "peer": "",
                     "peer_s": np.nan, "ratio": np.nan,
                     "note": "seconds per replicate of the whole run on 2 workers (chunks of "
                             f"{chunk}, Parquet store included)", "reps_per_s": 1.0 / two})
    return rows


GROUPS = {"mc_batch": (bench_mc_batch, "Monte Carlo throughput, batched vs per replicate")}
