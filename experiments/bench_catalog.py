"""``make bench`` group ``catalog``: every catalogue estimator's Monte Carlo throughput.

For each estimator kind of the catalogue (its own ``conf/estimator/<kind>.yaml``), in the
province design (30 x 2000-2018, 6 pilots from 2011) and the city design (282 x
2009-2022, cohorts by market opening): replicates per second of didlab's Monte Carlo
engine (draw + fit + truth + result rows, :func:`experiments.montecarlo.run_reps` on a chunk
of replicates as ``run_designs`` calls it, one worker),
beside the nearest peer's loop over the same draws (draw + the peer's fit of the same
estimator: diff-diff, pyfixest), and the peak memory of each (max RSS of a fresh process;
``*_peak_mb``). Estimators without a Python peer are listed with ``(none)``.

Each (estimator, design, tool) runs in its own process (:func:`experiments.bench.run_isolated`)
so that memory peaks are the tool's own; a first replicate is run untimed (imports, numba
compilation), then as many as fit in :data:`BUDGET_S` (at least 3).
"""

from __future__ import annotations

from typing import Any

from .bench import run_isolated

#: seconds of timed replicates per (estimator, design, tool)
BUDGET_S = 3.0

#: the designs: label -> (config overrides, outcome)
DESIGNS = {
    "province 30x19": ([], "lnce"),
    "city 282x14": (["data=city", "timing=market_open"], "nqpf"),
}

#: kind -> (peer name, import line, expression of ``panel`` and ``y`` giving the headline,
#: tolerance on the estimate of one common draw, or None where the estimands differ)
PEERS: dict[str, tuple[str, str, str, float | None]] = {
    "twfe": ("pyfixest feols", "import pyfixest as pf",
             "float(pf.feols(f'{y} ~ d | unit + time', data=panel, vcov={'CRV1': 'unit'})"
             ".coef()['d'])", 1e-8),
    "event_study": ("pyfixest feols i(rel)", "import pyfixest as pf",
                    "float(pf.feols(f'{y} ~ i(rel, ref=-1) | unit + time', "
                    "data=panel.assign(rel=np.where(panel.cohort > 0, panel.time - "
                    "panel.cohort, -1)), vcov={'CRV1': 'unit'}).coef().filter(like='::0')"
                    ".iloc[0])", None),
    "callaway_santanna": ("diff-diff CallawaySantAnna", "import diff_diff as dd",
                          "dd.CallawaySantAnna(control_group='never_treated').fit(panel, y, "
                          "'unit', 'time', 'cohort').overall_att", 1e-6),
    "sun_abraham": ("diff-diff SunAbraham", "import diff_diff as dd",
                    "dd.SunAbraham().fit(panel, y, 'unit', 'time', 'cohort').overall_att",
                    None),
    "imputation": ("diff-diff ImputationDiD", "import diff_diff as dd",
                   "dd.ImputationDiD().fit(panel, y, 'unit', 'time', 'cohort').overall_att",
                   1e-6),
    "did2s": ("diff-diff TwoStageDiD", "import diff_diff as dd",
              "dd.TwoStageDiD(cluster='unit').fit(panel, y, 'unit', 'time', 'cohort')"
              ".overall_att", 1e-6),
    "stacked": ("diff-diff StackedDiD", "import diff_diff as dd",
                "dd.StackedDiD(kappa_pre=3, kappa_post=2, weighting='aggregate').fit(panel, y, "
                "'unit', 'time', 'cohort').overall_att", None),
    "etwfe": ("diff-diff WooldridgeDiD", "import diff_diff as dd",
              "dd.WooldridgeDiD(control_group='not_yet_treated', cluster='unit').fit(panel, y, "
              "'unit', 'time', 'cohort').overall_att", None),
    # L_max = the config's effects=5 (conf/estimator/dcdh.yaml); the same Av_tot_eff
    "dcdh": ("diff-diff ChaisemartinDHaultfoeuille", "import diff_diff as dd",
             "dd.ChaisemartinDHaultfoeuille(twfe_diagnostic=False).fit(panel, y, 'unit', "
             "'time', 'd', L_max=5).overall_att", 1e-8),
    "bacon": ("diff-diff BaconDecomposition", "import diff_diff as dd",
              "dd.BaconDecomposition().fit(panel, y, 'unit', 'time', 'cohort').twfe_estimate",
              None),
}

#: the catalogue kinds without a conf/estimator/<kind>.yaml of their own
CONF_OF = {"randomization": "ri_twfe"}

#: (kind, design) -> extra overrides, and why. With the actual pilots (richer, less
#: coal-dependent) the propensity-score logit separates in some province draws, and a
#: benchmark loop must not stop on a failed draw: these kinds draw random pilots there.
EXTRA = {("psm_did", "province 30x19"): ["assignment=random"],
         ("psm_did_weighted", "province 30x19"): ["assignment=random"],
         ("dr_did", "province 30x19"): ["assignment=random"],
         # the city panel's mediators (seed 001's channels) and the catalogue's city setting
         ("mediation", "city 282x14"): ["data=city_seed001", "estimator=[mediation_city]"],
         # changes-in-changes compares one treated and one control group at one date
         ("changes_in_changes", "city 282x14"): ["timing=notice_2011"]}

#: (kind, design) pairs that are not run, and why
SKIP = {("heterogeneity", "province 30x19"): "needs a subgroup column: the city panel's "
                                               "developed / resource / old_industrial"}

_BODY = """
import numpy as np
from experiments.run import compose
from experiments.build import build_draw, build_estimators
from experiments.montecarlo import Design, replicate_seed, run_reps
cfg = compose({overrides!r})
draw = build_draw(cfg)
y = {outcome!r}
tool = {tool!r}
if tool == "didlab":
    design = Design(draw, build_estimators(cfg, [y]))
    def many(reps):
        # the engine's unit of work: a chunk of replicates in one call (as run_designs)
        out = run_reps(design, 0, reps)
        head = out[out.role == "headline"]
        if (head.error != "").any():
            raise RuntimeError(head.error.iloc[0])
        return head.estimate.tolist()
else:
    {peer_import}
    def many(reps):
        out = []
        for rep in reps:
            panel = draw(np.random.default_rng(replicate_seed(0, rep)))
            out.append({peer_expr})
        return out
many([0])                   # imports, numba compilation, caches
t0 = time.perf_counter(); many([1]); first = time.perf_counter() - t0
n = int(min(2000, max(3, {budget} / max(first, 1e-6))))
base_mb = _rss_mb()
t0 = time.perf_counter()
values = many(list(range(2, 2 + n)))
seconds = (time.perf_counter() - t0) / n
estimate = float(values[0])   # replicate 2 in both tools: the same draw
"""


def _kinds() -> list[str]:
    from estimators import catalog

    return sorted(catalog.kinds())


def _row(kind: str, design: str, overrides: list[str], outcome: str) -> dict[str, Any]:
    conf = CONF_OF.get(kind, kind)
    if (kind, design) in SKIP:
        return {"estimator": conf, "panel": design, "peer": "",
                "note": f"not run: {SKIP[(kind, design)]}"}
    extra = EXTRA.get((kind, design), [])
    ovr = [f"estimator=[{conf}]", *overrides, *extra]
    ours = run_isolated(_BODY.format(overrides=ovr, outcome=outcome, tool="didlab",
                                     peer_import="", peer_expr="0.0", budget=BUDGET_S),
                        timeout=600)
    row: dict[str, Any] = {"estimator": conf, "panel": design}
    notes = ["seconds per replicate (draw + fit), one worker", *extra]
    if "error" in ours:
        row.update(peer="", note=f"didlab fails here: {ours['error']}")
        return row
    row.update(didlab_s=ours["seconds"], didlab_estimate=ours["estimate"],
               didlab_peak_mb=ours["peak_mb"], reps_per_s=1.0 / ours["seconds"])
    peer = PEERS.get(kind)
    if peer is None:
        row.update(peer="(none)", note="; ".join(notes + ["no Python peer implements it"]))
        return row
    name, imp, expr, tol = peer
    theirs = run_isolated(_BODY.format(overrides=ovr, outcome=outcome, tool="peer",
                                       peer_import=imp, peer_expr=expr, budget=BUDGET_S),
                          timeout=600)
    row["peer"] = name
    if "error" in theirs:
        notes.append(f"peer fails: {theirs['error']}")
    else:
        diff = abs(theirs["estimate"] - ours["estimate"])
        row.update(peer_s=theirs["seconds"], ratio=theirs["seconds"] / ours["seconds"],
                   peer_estimate=theirs["estimate"], peer_peak_mb=theirs["peak_mb"],
                   peer_reps_per_s=1.0 / theirs["seconds"], abs_diff=diff)
        if tol is None:
            notes.append("estimands differ (binning, weights or defaults): time only")
        else:
            row.update(tol=tol, agree=bool(diff <= tol))
    row["note"] = "; ".join(notes)
    return row


def bench_catalog(quick: bool) -> list[dict[str, Any]]:
    """One row per (catalogue estimator, design): see the module docstring. ``quick``:
    the province design only."""
    designs = list(DESIGNS.items())[:1] if quick else list(DESIGNS.items())
    return [_row(kind, label, ovr, outcome) for kind in _kinds()
            for label, (ovr, outcome) in designs]




GROUPS = {"catalog": (bench_catalog, "Every catalogue estimator: Monte Carlo replicates per "
                                     "second, province and city designs")}
