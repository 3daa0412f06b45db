"""``make bench`` group ``scale``: imputation, Sun-Abraham, event study and TWFE from the
province panel's size to a 1,000,000-row panel, beside pyfixest and diff-diff in the same run.

Every (tool, estimator, size) is measured in a fresh process (:func:`experiments.bench.
run_isolated`): the child builds the panel, warms the tool up on a small panel (imports,
numba's cache: a panel large enough for the fast engine), records its peak resident memory, then times the fit. ``didlab_peak_mb`` /
``peer_peak_mb`` are the fit's own peak: the process's peak after the fit minus its peak
before it (the panel and the imports excluded). Each child runs under a 12 GB address-space
limit so that a peer that builds dense dummies fails with a MemoryError instead of pushing
the shared machine into the out-of-memory killer, and with one BLAS / OpenMP thread for every
tool alike (on a 2-core machine shared with other jobs, BLAS threads that spin on a busy
core make small fits 10x slower at random).

Panels: :func:`experiments.bench.staggered_panel` (three cohorts and 40% never treated,
heterogeneous dynamic effects), 30x19, 282x14, 20,000x12 and 100,000x10 (1,000,000 rows);
``--quick`` stops at 20,000x12. All fits cluster by unit (the estimators' defaults).

Peers and what is compared (``tol``):

* TWFE: pyfixest ``feols("y ~ d | unit + time", vcov={"CRV1": "unit"})``; the coefficient
  of ``d`` (1e-8). diff-diff's ``TwoWayFixedEffects`` takes a treated-group x post design
  (its ``time`` is a post indicator), not a staggered ``d``: not comparable, not run.
* Event study: pyfixest ``feols("y ~ i(rel, ref=-1) | unit + time")`` with ``rel`` the
  event time (-1 for never-treated units) against didlab ``EventStudy(leads=None,
  lags=None)`` (every event time, nothing binned: the same regression); the ``e = 0``
  coefficient (1e-8).
* Sun-Abraham: pyfixest's saturated event study (``event_study(estimator="saturated")``:
  ``i(rel_time, first_treated_period, ref=-1, ref2=0)``, the same cohort x event-time
  regression with never-treated comparisons), aggregated in the bench to the ATT over
  post-treatment cells weighted by their observations, and diff-diff ``SunAbraham``
  (``overall_att``); 1e-8. pyfixest 0.60 has no ``sunab()`` formula term.
* Imputation (Borusyak-Jaravel-Spiess): pyfixest ``did2s`` (Gardner's two-stage with a
  static second stage ``~ d``: its point estimate is the imputation estimator's overall
  ATT, both being the mean over treated observations of ``y - y0_hat`` from the same
  untreated-observation fixed-effects fit), 1e-4 because pyfixest recovers the stage-1
  fixed effects iteratively; diff-diff ``ImputationDiD`` (``overall_att``), 1e-8.

It replaced the earlier imputation-only benchmark (4,650 and 100,000 units beside pyfixest did2s).
"""

from __future__ import annotations

import os
from typing import Any

from experiments.bench import _available, run_isolated

#: (label, units, periods)
SIZES = [("30x19", 30, 19), ("282x14", 282, 14), ("20,000x12", 20_000, 12),
         ("100,000x10", 100_000, 10)]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: child prologue: address-space cap, panel, warm-up on a small panel, then base memory
_SETUP = """
import os, resource as _res
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
_res.setrlimit(_res.RLIMIT_AS, (12 << 30, 12 << 30))
import statistics
import numpy as np
from experiments.bench import staggered_panel
def prepare(p):
    p = p.astype({{"d": np.int64}})
    p["rel"] = np.where(p["cohort"] > 0, p["time"] - p["cohort"], -1)
    return p
panel = prepare(staggered_panel({n}, {t}))
# the warm-up panel is above estimators.fe.FAST_MIN_ROWS, so the compiled kernels load here
small = prepare(staggered_panel(-(-25_000 // {t}), {t}, seed=1))
{imports}
def fit(p):
{fit}
fit(small)
base_mb = _rss_mb()
times = []
for _ in range({repeat}):
    t0 = time.perf_counter()
    estimate = fit(panel)
    times.append(time.perf_counter() - t0)
seconds = statistics.median(times)
"""

#: (estimator label) -> (didlab fit body, [(peer name, imports, fit body, tol, note)])
TOOLS: dict[str, tuple[str, str, list[tuple[str, str, str, float, str]]]] = {
    "twfe": (
        "from estimators.twfe import TWFE",
        "    return TWFE('y').fit(p).estimate",
        [("pyfixest feols d | unit + time", "import pyfixest as pf",
          "    return float(pf.feols('y ~ d | unit + time', data=p, vcov={'CRV1': 'unit'})"
          ".coef().iloc[0])", 1e-8, "")]),
    "event_study (e=0)": (
        "from estimators.event_study import EventStudy",
        "    t = EventStudy('y', leads=None, lags=None).fit(p).terms\n"
        "    return float(t.loc[t['term'] == 'ev+0', 'estimate'].iloc[0])",
        [("pyfixest feols i(rel, ref=-1)", "import pyfixest as pf",
          "    f = pf.feols('y ~ i(rel, ref=-1) | unit + time', data=p, vcov={'CRV1': 'unit'})\n"
          "    return float(f.coef().loc['rel::0'])", 1e-8, "")]),
    "sun_abraham (ATT)": (
        "from estimators.sun_abraham import SunAbraham",
        "    return SunAbraham('y').fit(p).estimate",
        [("pyfixest event_study(saturated)",
          "import pyfixest as pf\nfrom experiments.bench import _pyfixest_saturated_att",
          "    return _pyfixest_saturated_att(pf, p)", 1e-8, "cells aggregated in the bench"),
         ("diff-diff SunAbraham", "import diff_diff as dd",
          "    return dd.SunAbraham(cluster='unit').fit(p, 'y', 'unit', 'time', 'cohort')"
          ".overall_att", 1e-8, "")]),
    "imputation (ATT)": (
        "from estimators.imputation import Imputation",
        "    return Imputation('y').fit(p).estimate",
        [("pyfixest did2s", "import pyfixest as pf",
          "    return float(pf.did2s(p, yname='y', first_stage='~ 0 | unit + time', "
          "second_stage='~ d', treatment='d', cluster='unit').coef().iloc[0])", 1e-4,
          "Gardner's two-stage: same point estimate as BJS imputation; stage-1 fixed effects "
          "found iteratively"),
         ("diff-diff ImputationDiD", "import diff_diff as dd",
          "    return dd.ImputationDiD(cluster='unit').fit(p, 'y', 'unit', 'time', 'cohort')"
          ".overall_att", 1e-8, "")]),
}

_PEER_MODULE = {"pyfixest": "pyfixest", "diff-diff": "diff_diff"}


def _repeat(n_rows: int) -> int:
    """Timed fits per child: the median of several on small panels (a 2-core machine shared
    with others is noisy), one at a million rows."""
    return 15 if n_rows <= 5_000 else 3 if n_rows <= 300_000 else 1


def _measure(imports: str, fit: str, n: int, t: int) -> dict[str, Any]:
    body = _SETUP.format(n=n, t=t, imports=imports, fit=fit, repeat=_repeat(n * t))
    return run_isolated(body, timeout=600.0, cwd=_ROOT)


def _own_peak(res: dict[str, Any]) -> float:
    return float(res["peak_mb"] - res["base_mb"])


def bench_scale(quick: bool) -> list[dict[str, Any]]:
    """Rows in :data:`experiments.bench._NEW_COLUMNS`: for each estimator and size, didlab
    and each peer measured in fresh processes one after the other (see the module
    docstring); ``ratio`` = peer_s / didlab_s."""
    rows: list[dict[str, Any]] = []
    sizes = SIZES[:3] if quick else SIZES
    for label, n, t in sizes:
        for est, (imports, fit, peers) in TOOLS.items():
            ours = _measure(imports, fit, n, t)
            base: dict[str, Any] = {"estimator": est, "panel": label}
            if "error" in ours:
                rows.append({**base, "peer": "(didlab failed)", "note": ours["error"]})
                continue
            base.update(didlab_s=ours["seconds"], didlab_estimate=ours["estimate"],
                        didlab_peak_mb=_own_peak(ours))
            for name, p_imports, p_fit, tol, note in peers:
                row = {**base, "peer": name}
                module = _PEER_MODULE[name.split()[0]]
                if not _available(module):
                    rows.append({**row, "note": f"not installed ({module}; pip install -e "
                                                "'.[bench]')"})
                    continue
                res = _measure(p_imports, p_fit, n, t)
                if "error" in res:
                    why = "fails (12 GB address-space cap): " + res["error"]
                    rows.append({**row, "note": "; ".join(x for x in (note, why) if x)})
                    continue
                diff = abs(res["estimate"] - ours["estimate"])
                rows.append({**row, "peer_s": res["seconds"],
                             "ratio": res["seconds"] / ours["seconds"],
                             "peer_estimate": res["estimate"], "abs_diff": diff, "tol": tol,
                             "agree": bool(diff <= tol), "peer_peak_mb": _own_peak(res),
                             "note": note})
    return rows


GROUPS = {"scale": (bench_scale,
                    "Imputation, Sun-Abraham, event study and TWFE up to 1,000,000 rows")}
