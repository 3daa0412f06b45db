"""Callaway-Sant'Anna at every size beside its Python peers (issue #19).

Each (tool, panel size, setting) runs in a fresh process (:func:`experiments.bench.run_isolated`)
so that the peak memory reported is that fit's own process, not the benchmark's. The panel is
:func:`experiments.bench.staggered_panel` (40% never treated, three cohorts, one covariate
that no tool uses). Every tool estimates the same thing: doubly robust 2x2s without covariates
(where DR, outcome regression and IPW coincide: the difference in mean outcome changes),
never-treated comparisons, varying base period, unit-clustered inference. Two settings:

* ``analytic``: influence-function SEs, the simple aggregation (cohort-size weighted mean of
  the post-period ATT(g,t)) is the estimate compared;
* ``bootstrap``: a 999-draw multiplier bootstrap and the dynamic (event-study) aggregation;
  the estimate compared is the mean of the event-time effects e >= 0 (R did's dynamic
  overall), read from each peer's event-study table where it reports no overall.

didlab computes every aggregation in each fit (simple, dynamic, group, calendar with their
SEs, and the pre-tests); the peers compute what they are asked for.

Timing: a warm-up fit on a 60-unit panel (imports, numba compilation or cache load), then
the median of up to five timed fits (three at 20,000 units, one from 100,000 units, and one
whenever a fit takes over 10 s). A peer whose time, projected linearly in rows from its
last measured size, would exceed :data:`BUDGET_S` is not run and the row says so.
"""

from __future__ import annotations

import os
from typing import Any

from experiments.bench import run_isolated

#: (label, units, periods) of the panels, smallest first
SIZES = [("30x19", 30, 19), ("282x14", 282, 14), ("20,000x12", 20_000, 12),
         ("100,000x10", 100_000, 10), ("1,000,000x10", 1_000_000, 10)]
#: multiplier-bootstrap draws of the bootstrap setting
N_BOOT = 999
#: a peer projected to take longer than this (seconds, one fit) is not run
BUDGET_S = 240.0
#: point estimates must agree to this (the same estimator: differences are rounding)
TOL = 1e-8

_HEAD = """
import numpy as np
from experiments.bench import staggered_panel
T, BOOT = {periods}, {n_boot}
p = staggered_panel({units}, T)
"""

_TAIL = """
fit(staggered_panel(60, T))             # warm-up: imports, numba compile or cache load
base_mb = _rss_mb()
times = []
for _ in range({repeats}):
    t0 = time.perf_counter()
    estimate = fit(p)
    times.append(time.perf_counter() - t0)
    if times[0] > 10:
        break
seconds = float(np.median(times))
"""

#: each tool's ``fit(panel) -> estimate`` (the simple ATT, or the dynamic overall with BOOT)
_FITS = {
    "didlab": """
from estimators.callaway_santanna import CallawaySantAnna
est = CallawaySantAnna("y", method="dr", control_group="nevertreated", n_boot=BOOT,
                       aggregation="dynamic" if BOOT else "simple")
def fit(panel):
    return est.fit(panel, rng=np.random.default_rng(0)).estimate
""",
    "diff-diff 3.13": """
from diff_diff import CallawaySantAnna
def fit(panel):
    r = CallawaySantAnna(control_group="never_treated", estimation_method="dr",
                         n_bootstrap=BOOT, seed=0).fit(panel, "y", "unit", "time", "cohort")
    if not BOOT:
        return r.overall_att                # the simple aggregation
    es = r.aggregate("event_study")
    e, att = np.asarray(es.event_time), np.asarray(es.att, dtype=float)
    return att[e >= 0].mean()
""",
    "moderndid 0.2": """
from moderndid import aggte, att_gt
def fit(panel):
    r = att_gt(panel, "y", "time", idname="unit", gname="cohort", est_method="dr",
               control_group="nevertreated", boot=bool(BOOT), biters=max(BOOT, 1),
               cband=bool(BOOT), random_state=0)
    return aggte(r, type="dynamic" if BOOT else "simple").overall_att
""",
    "csdid 0.4.3": """
import contextlib, io
from csdid.att_gt import ATTgt
def fit(panel):
    with contextlib.redirect_stdout(io.StringIO()):
        c = ATTgt(yname="y", tname="time", idname="unit", gname="cohort", data=panel,
                  control_group="nevertreated", biters=max(BOOT, 1)).fit(
                      est_method="dr", bstrap=bool(BOOT))
        c.aggte(typec="dynamic" if BOOT else "simple", biters=max(BOOT, 1), bstrap=bool(BOOT))
    return c.atte["overall_att"]
""",
    "differences 0.3": """
import contextlib, io
from differences import ATTgt
def fit(panel):
    wide = panel[["unit", "time", "cohort", "y"]].copy()
    wide["cohort"] = wide["cohort"].where(wide["cohort"] > 0, np.nan)
    wide = wide.set_index(["unit", "time"])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        a = ATTgt(data=wide, cohort_column="cohort")
        a.fit(formula="y", est_method="dr", control_group="never_treated",
              boot_iterations=BOOT, n_jobs=1, progress_bar=False, random_state=0)
        if not BOOT:
            return float(a.aggregate("simple").iloc[0, 0])
        ev = a.aggregate("event", boot_iterations=BOOT, random_state=0)
    e = ev.index.to_numpy()
    return float(ev.iloc[:, 0].to_numpy()[e >= 0].mean())
""",
}

PEERS = [k for k in _FITS if k != "didlab"]


def _repeats(units: int) -> int:
    return 5 if units <= 1_000 else 3 if units <= 20_000 else 1


def _measure(tool: str, units: int, periods: int, n_boot: int) -> dict[str, Any]:
    body = (_HEAD.format(units=units, periods=periods, n_boot=n_boot) + _FITS[tool]
            + _TAIL.format(repeats=_repeats(units)))
    return run_isolated(body, timeout=max(600.0, 3 * BUDGET_S))


def _mb(res: dict[str, Any]) -> str:
    return f"+{res['peak_mb'] - res['base_mb']:.0f} MB over {res['base_mb']:.0f}"


def bench_cs_scale(quick: bool) -> list[dict[str, Any]]:
    """Rows of :data:`experiments.bench._NEW_COLUMNS`: didlab's Callaway-Sant'Anna and each
    peer at each size (quick: the three smallest) in both settings."""
    sizes = SIZES[:3] if quick else SIZES
    rows: list[dict[str, Any]] = []
    for setting, n_boot in (("analytic SE, simple", 0), (f"bootstrap {N_BOOT}, dynamic", N_BOOT)):
        # tool -> (seconds, rows) at its last size; seconds None: it failed there
        last: dict[str, tuple[float | None, int]] = {}
        for label, units, periods in sizes:
            load = os.getloadavg()[0]
            ours = _measure("didlab", units, periods, n_boot)
            base = {"estimator": f"callaway_santanna ({setting})", "panel": label}
            if "error" in ours:
                rows.append({**base, "peer": "(none)", "note": f"didlab fails: {ours['error']}"})
                continue
            base.update(didlab_s=ours["seconds"], didlab_estimate=ours["estimate"],
                        didlab_peak_mb=ours["peak_mb"])
            for peer in PEERS:
                row: dict[str, Any] = {**base, "peer": peer}
                notes = [f"load {load:.2f}", f"didlab {_mb(ours)}"]
                prev = last.get(peer)
                if prev is not None and prev[0] is None:
                    notes.append(f"not run: failed at {prev[1]:,} rows")
                    row["note"] = "; ".join(notes)
                    rows.append(row)
                    continue
                projected = prev[0] * units * periods / prev[1] if prev else 0.0
                if projected > BUDGET_S:
                    notes.append(f"not run: projected {projected:.1f} s per fit from "
                                 f"{prev[0]:.1f} s at {prev[1]:,} rows (budget {BUDGET_S:.0f} s)")
                    row["note"] = "; ".join(notes)
                    rows.append(row)
                    last[peer] = (projected, units * periods)
                    continue
                res = _measure(peer, units, periods, n_boot)
                if "error" in res:
                    notes.append(f"fails: {res['error']}")
                    last[peer] = (None, units * periods)
                else:
                    diff = abs(res["estimate"] - ours["estimate"])
                    row.update(peer_s=res["seconds"], ratio=res["seconds"] / ours["seconds"],
                               peer_estimate=res["estimate"], abs_diff=diff, tol=TOL,
                               agree=bool(diff <= TOL), peer_peak_mb=res["peak_mb"])
                    notes.append(f"peer {_mb(res)}")
                    last[peer] = (res["seconds"], units * periods)
                row["note"] = "; ".join(notes)
                rows.append(row)
    return rows


GROUPS = {"cs_scale": (bench_cs_scale, "Callaway-Sant'Anna at every size")}
