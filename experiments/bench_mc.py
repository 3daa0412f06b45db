"""Benchmark group ``mc_batch``: Monte Carlo throughput, batched vs per replicate (issue #19).

On one worker, the robustness design of :func:`experiments.bench._robustness_design` (the
province draw, TWFE, TWFE with the six controls, the event study) through the engine's
batched path and its per-replicate path (``run_reps(batch=False)``), beside peers in the
same run:

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


def bench_mc_batch(quick: bool) -> list[dict[str, Any]]:
    """Rows in :data:`experiments.bench._NEW_COLUMNS` plus ``reps_per_s``."""
    from .montecarlo import Backend, run_designs, run_reps

    design = _robustness_design()
    n_batch = 256 if quick else 2048
    n_single = 20 if quick else 100
    run_reps(design, 0, range(8))  # imports and caches outside the timing
    batched = _per_rep(lambda n: run_reps(design, 1, range(n)), n_batch)
    single = _per_rep(lambda n: run_reps(design, 1, range(n), batch=False), n_single)
    # the two paths agree (a benchmark of different numbers would mean nothing)
    a = run_reps(design, 2, range(10)).drop(columns="seconds")
    b = run_reps(design, 2, range(10), batch=False).drop(columns="seconds")
    diff = float(np.nanmax(np.abs(a["estimate"].to_numpy() - b["estimate"].to_numpy())))
    panel = "province 30x19, draw + TWFE + TWFE(6 controls) + event study"
    note = "didlab_s / peer_s: seconds per replicate (draw and every fit), 1 worker"
    rows: list[dict[str, Any]] = []

    def row(peer: str, peer_s: float, extra: str = "", **kw: Any) -> None:
        rows.append({"estimator": "montecarlo (batched engine)", "panel": panel,
                     "didlab_s": batched, "peer": peer, "peer_s": peer_s,
                     "ratio": peer_s / batched, "didlab_estimate": float(a["estimate"].iloc[0]),
                     "abs_diff": kw.pop("abs_diff", np.nan), "tol": kw.pop("tol", np.nan),
                     "agree": kw.pop("agree", None), "note": f"{note}{extra}",
                     "reps_per_s": 1.0 / batched, **kw})

    row("didlab per-replicate engine", single, abs_diff=diff, tol=1e-10, agree=diff < 1e-10,
        peer_estimate=float(b["estimate"].iloc[0]))
    rng = np.random.default_rng(0)
    n_lm = 5 if quick else 20
    try:
        row("linearmodels loop", _per_rep(lambda n: [lm_replicate(rng) for _ in range(n)], n_lm))
    except ImportError:  # pragma: no cover - peer missing
        pass
    try:
        import pyfixest as pf

        from simulate.province import draw_province

        k = 100
        base = draw_province(np.random.default_rng(0))
        ys = {f"Y{j}": draw_province(np.random.default_rng(j + 1))["lnce"].to_numpy()
              for j in range(k)}
        import pandas as pd

        wide = pd.concat([base, pd.DataFrame(ys)], axis=1)
        formula = " + ".join(ys) + " ~ d | unit + time"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pf.feols(formula, data=wide, vcov={"CRV1": "unit"})
            t0 = time.perf_counter()
            pf.feols(formula, data=wide, vcov={"CRV1": "unit"})
            pf_s = (time.perf_counter() - t0) / k
        row("pyfixest multiple estimation (100 outcomes at once)", pf_s,
            "; peer: TWFE only, no draw (outcome columns given)")
    except ImportError:  # pragma: no cover
        pass
    try:
        from diff_diff import TwoWayFixedEffects, simulate_power

        n_dd = 20 if quick else 100
        t0 = time.perf_counter()
        simulate_power(TwoWayFixedEffects(), n_units=30, n_periods=19, treatment_period=11,
                       treatment_fraction=0.2, n_simulations=n_dd, progress=False, seed=1)
        dd_s = (time.perf_counter() - t0) / n_dd
        row("diff-diff simulate_power (TwoWayFixedEffects)", dd_s,
            "; peer: its own 30x19 DGP and TWFE only")
    except ImportError:  # pragma: no cover
        pass
    # 2 workers, the batched path through the store (chunks of 256)
    with TemporaryDirectory() as tmp:
        backend = Backend(kind="loky", n_jobs=2)
        run_designs([design], 4, 99, store=Path(tmp) / "warm", keys=["k"], chunk_size=2,
                    backend=backend)
        n2 = 2 * n_batch
        t0 = time.perf_counter()
        run_designs([design], n2, 3, store=Path(tmp) / "run", keys=["k"], chunk_size=256,
                    backend=backend)
        two = (time.perf_counter() - t0) / n2
    rows.append({"estimator": "montecarlo (batched engine, 2 loky workers)", "panel": panel,
                 "didlab_s": two, "peer": "", "peer_s": np.nan, "ratio": np.nan,
                 "note": "seconds per replicate of the whole run on 2 workers (chunks of 256, "
                         "Parquet store included)", "reps_per_s": 1.0 / two})
    return rows


GROUPS = {"mc_batch": (bench_mc_batch, "Monte Carlo throughput, batched vs per replicate")}
