"""Callaway and Sant'Anna (2021): group-time ATTs and their aggregations.

Estimate once (every ATT(g,t) with its influence function), aggregate many ways (simple,
dynamic, group, calendar), as R's ``did`` does. Inference from the influence functions
(clustered by unit), analytic or by the multiplier bootstrap with uniform bands.

Two engines give the same numbers (tests/test_cs_fast.py): ``"fast"`` (the default) reads
every 2x2 from cohort sums and keeps the influence functions in a compact factor form (see
"the fast engine" below), so that a million units x 10 periods fit in seconds and in memory
linear in the rows; ``"reference"`` is the per-cell computation with dense influence
functions that the R pins were first written against (``ENGINE`` or ``fit(engine=...)``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .catalog import renamed
from .design import period_positions
from .panel import (COHORT, TIME, D, EstimationError, OptionError, PanelError, check_alpha, check_choice,
                    check_count, excluding_always_treated, show)
from .result import Estimate, critical_value
from .wide import Wide, to_wide

CONTROL_GROUPS = ("nevertreated", "notyettreated")
BASE_PERIODS = ("varying", "universal")
METHODS = ("dr", "reg", "ipw")
AGGREGATIONS = ("simple", "dynamic", "group", "calendar")
#: pre-tests of parallel trends: the max-|t| test with Sidak's adjustment, or R did's Wald
PRETESTS = ("sidak", "wald")


# --- 2x2 estimators with influence functions (DRDID, panel versions) -------------------------

def _logit(x: np.ndarray, d: np.ndarray, tol: float = 1e-12, max_iter: int = 100,
           iw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logit by Newton-Raphson (weighted by ``iw`` when given, as R's ``glm(weights=)``);
    returns fitted probabilities and the Hessian-based ``(X'WX/n)^{-1}`` used by the
    influence function."""
    iw = np.ones(d.size) if iw is None else iw
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = special.expit(x @ beta)
        w = iw * p * (1 - p)
        hess = (x * w[:, None]).T @ x
        step = np.linalg.solve(hess, x.T @ (iw * (d - p)))
        beta += step
        if np.max(np.abs(step)) < tol:
            break
    p = special.expit(x @ beta)
    hess = (x * (iw * p * (1 - p))[:, None]).T @ x
    return p, np.linalg.inv(hess / x.shape[0])


def did_2x2(dy: np.ndarray, treat: np.ndarray, x: np.ndarray, method: str,
            iw: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """ATT of a panel 2x2 comparison and its influence function (Sant'Anna and Zhao 2020).

    Parameters
    ----------
    dy
        Outcome change per unit (post minus base period).
    treat
        1 for the treated group, 0 for the comparison group.
    x
        Covariates at the base period with an intercept column (``(n, k)``).
    method
        ``"dr"`` (doubly robust, DRDID::drdid_panel), ``"reg"`` (outcome regression,
        reg_did_panel) or ``"ipw"`` (normalised IPW, std_ipw_did_panel).
    iw
        Unit sampling weights (DRDID's ``i.weights``), normalised to mean one here; None
        for equal weights.
    """
    n = dy.size
    dmask = treat == 1
    iw = np.ones(n) if iw is None else iw / iw.mean()
    w_treat = iw * treat
    if x.shape[1] == 1:
        # no covariates: all three estimators are the difference in (weighted) mean
        # changes, with influence function w D(dy - mu_1)/E[wD] - w(1 - D)(dy - mu_0)/E[w(1-D)]
        w_c0 = iw * (1 - treat)
        mu1, mu0 = (w_treat @ dy) / w_treat.sum(), (w_c0 @ dy) / w_c0.sum()
        inf = w_treat * (dy - mu1) / w_treat.mean() - w_c0 * (dy - mu0) / w_c0.mean()
        return float(mu1 - mu0), inf
    if method in ("reg", "dr"):
        xc = x[~dmask]
        sw = np.sqrt(iw[~dmask])
        coef, *_ = np.linalg.lstsq(xc * sw[:, None], dy[~dmask] * sw, rcond=None)
        out_delta = x @ coef
        w_ols = iw * (1.0 - treat)
        xpx_inv = np.linalg.inv((x * w_ols[:, None]).T @ x / n)
        lin_ols = (w_ols * (dy - out_delta))[:, None] * x @ xpx_inv
    if method in ("ipw", "dr"):
        if x.shape[1] == 1:
            ps = np.full(n, w_treat.mean())  # (unreachable: x has covariates here)
            hess_inv = np.linalg.inv((x * (ps * (1 - ps))[:, None]).T @ x / n)
        else:
            ps, hess_inv = _logit(x, treat.astype(float), iw=iw)
        ps = np.minimum(ps, 1 - 1e-6)
        lin_ps = ((iw * (treat - ps))[:, None] * x) @ hess_inv
        w_cont = iw * ps * (1 - treat) / (1 - ps)
    if method == "reg":
        att_t = w_treat * dy
        att_c = w_treat * out_delta
        eta_t = att_t.mean() / w_treat.mean()
        eta_c = att_c.mean() / w_treat.mean()
        inf_t = (att_t - w_treat * eta_t) / w_treat.mean()
        m1 = (w_treat[:, None] * x).mean(axis=0)
        inf_c = (att_c - w_treat * eta_c + lin_ols @ m1) / w_treat.mean()
        return eta_t - eta_c, inf_t - inf_c
    if method == "ipw":
        att_t = w_treat * dy
        att_c = w_cont * dy
        eta_t = att_t.mean() / w_treat.mean()
        eta_c = att_c.mean() / w_cont.mean()
        inf_t = (att_t - w_treat * eta_t) / w_treat.mean()
        m2 = ((w_cont * (dy - eta_c))[:, None] * x).mean(axis=0)
        inf_c = (att_c - w_cont * eta_c + lin_ps @ m2) / w_cont.mean()
        return eta_t - eta_c, inf_t - inf_c
    resid = dy - out_delta
    att_t = w_treat * resid
    att_c = w_cont * resid
    eta_t = att_t.mean() / w_treat.mean()
    eta_c = att_c.mean() / w_cont.mean()
    inf_t = (att_t - w_treat * eta_t - lin_ols @ (w_treat[:, None] * x).mean(axis=0)) / w_treat.mean()
    m2 = ((w_cont * (resid - eta_c))[:, None] * x).mean(axis=0)
    m3 = (w_cont[:, None] * x).mean(axis=0)
    inf_c = (att_c - w_cont * eta_c + lin_ps @ m2 - lin_ols @ m3) / w_cont.mean()
    return eta_t - eta_c, inf_t - inf_c


# --- group-time ATTs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupTime:
    """All ATT(g,t) of a panel with their influence functions (n_units x n_cells)."""

    group: np.ndarray      # (m,) cohort of each cell
    time: np.ndarray       # (m,) period of each cell
    att: np.ndarray        # (m,)
    inf: np.ndarray        # (n, m) influence functions, unit-level
    pg: np.ndarray         # (m,) P(G = g) of each cell's cohort
    cohort: np.ndarray     # (n,) each unit's cohort
    n: int
    #: cells that are a universal base period (ATT 0 by construction, no variance)
    reference: np.ndarray | None = None
    #: what was done to the panel before estimation (for the Estimate's notes)
    notes: tuple[str, ...] = ()
    #: unit sampling weights, mean one (None: equal weights)
    unit_weights: np.ndarray | None = None
    #: calendar label of each period position: group, time and cohort above are positions
    #: on the panel's periods counted from 1 (0 = never treated), so that base periods,
    #: anticipation and event times count periods when years have gaps
    periods: np.ndarray | None = None

    def label(self, position: float | np.ndarray) -> Any:
        """Calendar period of a position (the position itself when no labels are kept)."""
        if self.periods is None:
            return position
        pos = np.asarray(position) - 1
        step = self.periods[1] - self.periods[0] if self.periods.size > 1 else 1
        inside = np.clip(pos.astype(int), 0, self.periods.size - 1)
        # a regular grid extends beyond its ends (cohorts treated after the last period)
        out = np.where((pos >= 0) & (pos < self.periods.size), self.periods[inside],
                       self.periods[0] + pos * step)
        return out.astype(np.int64) if out.ndim else int(out)

    def se(self) -> np.ndarray:
        return np.sqrt(np.mean(self.inf**2, axis=0) / self.n)


def _cell_2x2(w: Wide, keep: np.ndarray, treated: np.ndarray, ti: int, base: int,
              covariates: Sequence[str], method: str, unit_weights: np.ndarray | None
              ) -> tuple[float, np.ndarray]:
    """ATT(g, t) of one cell by :func:`did_2x2` on the units ``keep`` (treated cohort and
    its comparisons), outcome change from period ``base`` to ``ti``, covariates at the base
    period; returns the estimate and its influence function over all ``n`` units (zero
    outside ``keep``), scaled to the full sample as R did does. Shared by the reference
    path and the fast path's covariate cells."""
    n = keep.size
    dy = w.y[keep, ti] - w.y[keep, base]
    x = np.column_stack([np.ones(int(keep.sum()))]
                        + [w.x[c][keep, base] for c in covariates])
    att, inf_sub = did_2x2(dy, treated[keep].astype(int), x, method,
                           None if unit_weights is None else unit_weights[keep])
    inf = np.zeros(n)
    inf[keep] = inf_sub * (n / keep.sum())
    return att, inf


def group_time(w: Wide, control_group: str, base_period: str, anticipation: int, method: str,
               covariates: Sequence[str], unit_weights: np.ndarray | None = None) -> GroupTime:
    """Estimate every ATT(g,t) as R ``did::att_gt`` does (balanced panel)."""
    periods = w.periods
    groups = np.unique(w.cohort[w.cohort > 0])
    groups = groups[groups > periods[0] + anticipation]  # need a pre-period
    if groups.size == 0:
        raise EstimationError("no treated cohort has a pre-treatment period in the sample")
    n = w.n
    cells_g, cells_t, atts, infs = [], [], [], []
    reference = []
    for g in groups:
        pre = np.flatnonzero(periods + anticipation < g)
        g_base = pre[-1]
        # a varying base needs the period before; a universal base compares every period,
        # the first included, with g - 1 - anticipation (R did's att_gt)
        for ti in range(0 if base_period == "universal" else 1, periods.size):
            t = periods[ti]
            if base_period == "varying":
                base = g_base if t >= g - anticipation else ti - 1
            else:
                base = g_base
                if ti == base:  # the base period itself: ATT 0 by construction, as R reports
                    cells_g.append(g)
                    cells_t.append(t)
                    atts.append(0.0)
                    infs.append(np.zeros(n))
                    reference.append(True)
                    continue
            treated = w.cohort == g
            if control_group == "nevertreated":
                control = w.cohort == 0
            else:
                later = max(t, periods[base]) + anticipation
                control = (w.cohort == 0) | ((w.cohort > later) & (w.cohort != g))
            keep = treated | control
            if not control.any():
                continue
            att, inf = _cell_2x2(w, keep, treated, ti, base, covariates, method, unit_weights)
            cells_g.append(g)
            cells_t.append(t)
            atts.append(att)
            infs.append(inf)
            reference.append(False)
    if not atts or all(reference):
        raise EstimationError("no group-time cell has a comparison group")
    group = np.array(cells_g)
    # cohort shares P(G = g), weighted by the (mean-one) unit weights as R did's aggte
    uw = np.ones(n) if unit_weights is None else unit_weights / unit_weights.mean()
    pg_by_g = {g: np.mean(uw * (w.cohort == g)) for g in groups}
    return GroupTime(group, np.array(cells_t), np.array(atts), np.column_stack(infs),
                     np.array([pg_by_g[g] for g in group]), w.cohort, n,
                     reference=np.array(reference, dtype=bool),
                     unit_weights=None if unit_weights is None else uw)


def _wif(keepers: np.ndarray, pg: np.ndarray, cohort: np.ndarray, group: np.ndarray,
         unit_weights: np.ndarray | None = None) -> np.ndarray:
    """Influence function of estimated aggregation weights pg/sum(pg) (R did's ``wif``)."""
    pk = pg[keepers]
    ind = np.column_stack([(cohort == group[k]).astype(float) for k in keepers])  # (n, K)
    if unit_weights is not None:
        ind = ind * unit_weights[:, None]
    if1 = (ind - pk) / pk.sum()
    if2 = np.outer((ind - pk).sum(axis=1), pk / pk.sum() ** 2)
    return if1 - if2


def _agg(gt: GroupTime, keepers: np.ndarray, weights: np.ndarray, with_wif: bool,
         att: np.ndarray | None = None, inf: np.ndarray | None = None,
         group: np.ndarray | None = None, pg: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    att = gt.att if att is None else att
    inf = gt.inf if inf is None else inf
    est = float(att[keepers] @ weights)
    out = inf[:, keepers] @ weights
    if with_wif:
        out = out + _wif(keepers, gt.pg if pg is None else pg, gt.cohort,
                         gt.group if group is None else group, gt.unit_weights) @ att[keepers]
    return est, out


def aggregate(gt: GroupTime, kind: str) -> tuple[pd.DataFrame, float, np.ndarray]:
    """Aggregate ATT(g,t) as R ``did::aggte``: returns the per-level table (its ``inf``
    column holds influence functions), the overall estimate and its influence function."""
    check_choice("aggregation", kind, AGGREGATIONS)
    post = gt.group <= gt.time
    estimated = ~gt.reference if gt.reference is not None else np.ones(post.size, dtype=bool)
    if kind == "simple":
        k = np.flatnonzero(post)
        est, inf = _agg(gt, k, gt.pg[k] / gt.pg[k].sum(), True)
        return pd.DataFrame({"level": ["ATT"], "estimate": [est], "inf": [inf]}), est, inf
    rows, infs = [], []
    if kind == "dynamic":
        e_all = gt.time - gt.group
        # a universal base period is the reference of the event study, not an estimate
        levels = np.unique(e_all[estimated])
        for e in levels:
            k = np.flatnonzero((e_all == e) & estimated)
            est, inf = _agg(gt, k, gt.pg[k] / gt.pg[k].sum(), True)
            rows.append(e)
            infs.append((est, inf))
        table = pd.DataFrame({"level": rows, "estimate": [a for a, _ in infs]})
        pos = np.asarray(rows) >= 0
        overall = float(np.mean([a for (a, _), p in zip(infs, pos) if p]))
        inf_overall = np.mean([i for (_, i), p in zip(infs, pos) if p], axis=0)
    elif kind == "group":
        # a cohort with no post-period cell (the last cohort under not-yet-treated
        # comparisons when no unit is never treated) drops out, as in R did
        glist = np.array([g for g in np.unique(gt.group) if ((gt.group == g) & post).any()])
        for g in glist:
            k = np.flatnonzero((gt.group == g) & post)
            est, inf = _agg(gt, k, np.full(k.size, 1.0 / k.size), False)
            rows.append(g)
            infs.append((est, inf))
        table = pd.DataFrame({"level": rows, "estimate": [a for a, _ in infs]})
        att_g = np.array([a for a, _ in infs])
        inf_g = np.column_stack([i for _, i in infs])
        uw = np.ones(gt.n) if gt.unit_weights is None else gt.unit_weights
        pg_g = np.array([np.mean(uw * (gt.cohort == g)) for g in glist])
        keep = np.arange(glist.size)
        overall, inf_overall = _agg(gt, keep, pg_g / pg_g.sum(), True, att=att_g, inf=inf_g,
                                    group=glist, pg=pg_g)
    else:
        tlist = np.unique(gt.time[post])
        for t in tlist:
            k = np.flatnonzero((gt.time == t) & post)
            est, inf = _agg(gt, k, gt.pg[k] / gt.pg[k].sum(), True)
            rows.append(t)
            infs.append((est, inf))
        table = pd.DataFrame({"level": rows, "estimate": [a for a, _ in infs]})
        overall = float(np.mean([a for a, _ in infs]))
        inf_overall = np.mean([i for _, i in infs], axis=0)
    table["inf"] = [i for _, i in infs]
    return table, overall, inf_overall


def multiplier_bootstrap(inf: np.ndarray, n_boot: int, rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray]:
    """R did's multiplier bootstrap with Mammen weights.

    Returns the bootstrap SEs (IQR / (z_.75 - z_.25) / sqrt(n), quantile type 1) and the
    standardised draws ``b / sigma`` (``(n_boot, m)``) from which uniform bands are read.
    """
    n = inf.shape[0]
    s5 = np.sqrt(5.0)
    v = np.where(rng.random((n_boot, n)) < (s5 + 1) / (2 * s5), (1 - s5) / 2, (1 + s5) / 2)
    bres = (v @ inf) / np.sqrt(n)                            # sqrt(n) * mean(v * inf)
    return _bootstrap_summary(bres, n)


def uniform_critical_value(z: np.ndarray, alpha: float) -> float:
    """Critical value of a simultaneous band: the 1 - alpha quantile of max |b / sigma|."""
    return float(np.quantile(np.nanmax(np.abs(z), axis=1), 1 - alpha, method="inverted_cdf"))


# --- the fast engine ------------------------------------------------------------------------
#
# Every influence function the estimator reports (cells and aggregations) is linear in a few
# per-unit factors: unit i's influence on reported quantity l is F[i] @ coef[code[i], :, l],
# with F an (n, k) array and code[i] a block of units sharing coefficients. Without
# covariates the block is the unit's cohort and F[i] = w_i (y_i1 - m_c1, ..., y_iT - m_cT, 1)
# (outcomes centred at their cohort means m, unit weight w_i): each 2x2's influence function
# is a cohort-specific combination of two periods. With covariates F holds the cells'
# influence functions (from did_2x2, as the reference) and the cohort indicators, in one
# block. The estimation-weight terms of the aggregations (R did's ``wif``) are w_i times a
# cohort coefficient. So the analytic variances need only the per-block Gram matrices F'F
# (k x k), and the multiplier bootstrap only the draws' sums of F per block: no n x cells
# matrix is formed without covariates, and no n x draws matrix ever.

#: engines of :meth:`CallawaySantAnna.fit`: ``"fast"`` (cohort sufficient statistics, the
#: factor form above, a compiled bootstrap) and ``"reference"`` (the per-cell code path with
#: dense influence functions, kept to pin the fast one: tests/test_cs_fast.py)
ENGINES = ("fast", "reference")
ENGINE = "fast"
#: threads of the compiled multiplier bootstrap (each draws a contiguous range of draws from
#: its own copy of the generator, advanced to that range: the numbers do not depend on it)
BOOT_THREADS = max(1, min(2, os.cpu_count() or 1))
#: draws x units below which the bootstrap stays on one thread (thread start-up dominates)
_PARALLEL_MIN = 2_000_000
#: uniforms drawn per numpy call in the bootstrap (2 MB: stays in cache), bytes of the
#: per-thread mask of a block of draws, units per tile of the kernel (F's tile in cache)
_CHUNK = 1 << 18
_MASK_BYTES = 1 << 25
_TILE = 8192

_S5 = np.sqrt(5.0)
#: Mammen's two-point law, as multiplier_bootstrap: (1 - sqrt5)/2 with probability _MAMMEN_P
_MAMMEN_P = (_S5 + 1) / (2 * _S5)
_MAMMEN_LO = (1 - _S5) / 2
_MAMMEN_HI = (1 + _S5) / 2
_NUMBA = importlib.util.find_spec("numba") is not None


def _k_cohort_sums(y, code, uw, n_blocks):  # pragma: no cover - compiled
    """Weighted sums of each period's outcome, weights and unit counts by cohort block."""
    n, t = y.shape
    sy = np.zeros((n_blocks, t))
    sw = np.zeros(n_blocks)
    cnt = np.zeros(n_blocks, dtype=np.int64)
    for i in range(n):
        h = code[i]
        sw[h] += uw[i]
        cnt[h] += 1
        for s in range(t):
            sy[h, s] += uw[i] * y[i, s]
    return sy, sw, cnt


def _k_factors(y, code, uw, means, n_blocks):  # pragma: no cover - compiled
    """F = w (y - cohort means, 1), its Gram matrix and column sums by block."""
    n, t = y.shape
    k = t + 1
    f = np.empty((n, k))
    gram = np.zeros((n_blocks, k, k))
    colsum = np.zeros((n_blocks, k))
    row = np.empty(k)
    for i in range(n):
        h = code[i]
        for s in range(t):
            row[s] = uw[i] * (y[i, s] - means[h, s])
        row[t] = uw[i]
        for a in range(k):
            f[i, a] = row[a]
            colsum[h, a] += row[a]
            for b in range(a, k):
                gram[h, a, b] += row[a] * row[b]
    for h in range(n_blocks):
        for a in range(k):
            for b in range(a):
                gram[h, a, b] = gram[h, b, a]
    return f, gram, colsum


def _k_mammen_hits(mask, f, code, out, tile, hit):  # pragma: no cover - compiled
    """Add unit i's factors to draw b's block sums where ``mask[b, i]`` (Mammen's upper
    point). Units go in tiles that stay in cache across the block's draws: F is read once
    per block of draws, not once per draw (at a million units that is the memory traffic)."""
    n_draws, n = mask.shape
    k = f.shape[1]
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        for b in range(n_draws):
            m = 0
            for i in range(i0, i1):  # branch-free compaction of the hits
                hit[m] = i
                m += mask[b, i]
            for r in range(m):
                i = hit[r]
                h = code[i]
                for a in range(k):
                    out[b, h, a] += f[i, a]
    return out


_KERNELS: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    """The compiled kernel ``_k_<name>`` (compiled, or loaded from numba's cache, once)."""
    fn = _KERNELS.get(name)
    if fn is None:
        import numba

        fn = numba.njit(cache=True, nogil=True)(globals()[f"_k_{name}"])
        _KERNELS[name] = fn
    return fn


def _cohort_sums(y: np.ndarray, code: np.ndarray, uw: np.ndarray, n_blocks: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if _NUMBA:
        return _kernel("cohort_sums")(y, code, uw, n_blocks)
    sy = np.stack([np.bincount(code, weights=uw * y[:, s], minlength=n_blocks)
                   for s in range(y.shape[1])], axis=1)
    return sy, np.bincount(code, weights=uw, minlength=n_blocks), np.bincount(code, minlength=n_blocks)


def _factors(y: np.ndarray, code: np.ndarray, uw: np.ndarray, means: np.ndarray, n_blocks: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if _NUMBA:
        return _kernel("factors")(y, code, uw, means, n_blocks)
    f = np.column_stack([uw[:, None] * (y - means[code]), uw])
    return f, *_block_gram(f, code, n_blocks)


def _block_gram(f: np.ndarray, code: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    gram = np.zeros((n_blocks, f.shape[1], f.shape[1]))
    colsum = np.zeros((n_blocks, f.shape[1]))
    for h in range(n_blocks):
        fh = f if n_blocks == 1 else f[code == h]
        gram[h] = fh.T @ fh
        colsum[h] = fh.sum(axis=0)
    return gram, colsum


@dataclass(frozen=True)
class _FastCells:
    """The ATT(g,t) of a panel with their influence functions in factor form (see above)."""

    meta: GroupTime            # cells, shares, cohorts; ``inf`` is not formed (n x 0)
    cohort_values: np.ndarray  # (H,) the cohorts present (positions, 0 = never treated)
    f: np.ndarray              # (n, k) per-unit factors
    code: np.ndarray           # (n,) block of each unit
    gram: np.ndarray           # (B, k, k) F'F by block
    colsum: np.ndarray         # (B, k) column sums of F by block
    cz: np.ndarray             # (B, k, m) cell influence functions: inf_c(i) = F[i] @ cz[code[i], :, c]
    wif_block: np.ndarray      # (H,) where w_i 1[cohort = h] lives in the factor form
    wif_col: np.ndarray        # (H,)

    def coefficients(self, wc: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Factor coefficients ``(B, k, M)`` of the influence functions
        ``inf_cells @ wc + w_i a[cohort_i]`` (``wc``: ``(m, M)``, ``a``: ``(H, M)``)."""
        coef = np.einsum("hkc,cl->hkl", self.cz, wc)
        coef[self.wif_block, self.wif_col, :] += a
        return coef


def _group_time_fast(w: Wide, control_group: str, base_period: str, anticipation: int,
                     method: str, covariates: Sequence[str],
                     unit_weights: np.ndarray | None = None) -> _FastCells:
    """Every ATT(g,t) as :func:`group_time`, its influence functions in factor form.

    Comparison groups (never treated, or never and not yet treated) are unions of cohorts,
    so without covariates each 2x2 is a difference of cohort means of outcome changes,
    read from the cohort sums of each period (one pass over the panel); with covariates
    each cell's regression and propensity score are fitted by :func:`did_2x2`, as the
    reference does.
    """
    periods = w.periods
    n, t_count = w.y.shape
    cohort_values, code = np.unique(w.cohort, return_inverse=True)
    code = code.astype(np.intp).ravel()
    n_coh = cohort_values.size
    groups = cohort_values[cohort_values > 0]
    groups = groups[groups > periods[0] + anticipation]  # need a pre-period
    if groups.size == 0:
        raise EstimationError("no treated cohort has a pre-treatment period in the sample")
    uw = np.ones(n) if unit_weights is None else unit_weights / unit_weights.mean()
    y = np.ascontiguousarray(w.y, dtype=np.float64)
    sy, sw, count = _cohort_sums(y, code, uw, n_coh)
    cells_g, cells_t, atts, reference, cell_cz = [], [], [], [], []
    plain = not covariates
    k = t_count + 1
    if plain:
        means = sy / sw[:, None]
        cells_g, cells_t, atts, reference, cz_plain = _plain_cells(
            periods, cohort_values, groups, control_group, base_period, anticipation, sy, sw,
            count, means, n)
    dense: list[np.ndarray] = []
    for gi in ([] if plain else np.flatnonzero(np.isin(cohort_values, groups))):
        g = cohort_values[gi]
        pre = np.flatnonzero(periods + anticipation < g)
        g_base = pre[-1]
        for ti in range(0 if base_period == "universal" else 1, periods.size):
            t = periods[ti]
            if base_period == "varying":
                base = g_base if t >= g - anticipation else ti - 1
            else:
                base = g_base
                if ti == base:  # the base period itself: ATT 0 by construction, no variance
                    cells_g.append(g)
                    cells_t.append(t)
                    atts.append(0.0)
                    reference.append(True)
                    if plain:
                        cell_cz.append(np.zeros((n_coh, k)))
                    else:
                        dense.append(np.zeros(n))
                    continue
            if control_group == "nevertreated":
                ctrl = cohort_values == 0
            else:
                later = max(t, periods[base]) + anticipation
                ctrl = (cohort_values == 0) | ((cohort_values > later) & (cohort_values != g))
            if count[ctrl].sum() == 0:
                continue
            if plain:
                # ATT = mean change of the cohort minus that of the comparison cohorts;
                # influence function n w_i D_i (dy_i - mu1)/S_D - n w_i C_i (dy_i - mu0)/S_C
                s_d, s_c = sw[gi], sw[ctrl].sum()
                mu1 = (sy[gi, ti] - sy[gi, base]) / s_d
                mu0 = (sy[ctrl, ti] - sy[ctrl, base]).sum() / s_c
                cz = np.zeros((n_coh, k))
                for h, scale, mu in ((np.array([gi]), n / s_d, mu1),
                                     (np.flatnonzero(ctrl), -n / s_c, mu0)):
                    cz[h, ti] += scale
                    cz[h, base] -= scale
                    cz[h, t_count] = scale * (means[h, ti] - means[h, base] - mu)
                att = mu1 - mu0
                cell_cz.append(cz)
            else:
                treated = code == gi
                keep = treated | ctrl[code]
                att, inf = _cell_2x2(w, keep, treated, ti, base, covariates, method,
                                     unit_weights)
                dense.append(inf)
            cells_g.append(g)
            cells_t.append(t)
            atts.append(att)
            reference.append(False)
    if not atts or all(reference):
        raise EstimationError("no group-time cell has a comparison group")
    group = np.array(cells_g)
    m = group.size
    pg_by_g = dict(zip(cohort_values.tolist(), (sw / n).tolist()))
    meta = GroupTime(group, np.array(cells_t), np.array(atts, dtype=float), np.empty((n, 0)),
                     np.array([pg_by_g[g] for g in group.tolist()]), w.cohort, n,
                     reference=np.array(reference, dtype=bool),
                     unit_weights=None if unit_weights is None else uw)
    if plain:
        f, gram, colsum = _factors(y, code, uw, means, n_coh)
        cz = cz_plain                                        # (H, k, m)
        return _FastCells(meta, cohort_values, f, code, gram, colsum, cz,
                          np.arange(n_coh), np.full(n_coh, t_count))
    # covariates: one block, F = (cell influence functions, w_i 1[cohort = h])
    f = np.empty((n, m + n_coh))
    for c, col in enumerate(dense):
        f[:, c] = col
    del dense
    for h in range(n_coh):
        f[:, m + h] = np.where(code == h, uw, 0.0)
    one = np.zeros(n, dtype=np.intp)
    gram, colsum = _block_gram(f, one, 1)
    cz = np.zeros((1, m + n_coh, m))
    cz[0, np.arange(m), np.arange(m)] = 1.0
    return _FastCells(meta, cohort_values, f, one, gram, colsum, cz,
                      np.zeros(n_coh, dtype=np.intp), m + np.arange(n_coh))


def _plain_cells(periods: np.ndarray, cohort_values: np.ndarray, groups: np.ndarray,
                 control_group: str, base_period: str, anticipation: int, sy: np.ndarray,
                 sw: np.ndarray, count: np.ndarray, means: np.ndarray, n: int
                 ) -> tuple[list[Any], list[Any], list[float], list[bool], np.ndarray]:
    """The cells of :func:`_group_time_fast` without covariates, all at once: each cell's
    2x2 is a difference of cohort means of outcome changes (cohort sums ``sy``, weights
    ``sw``, counts ``count``, means ``means``), its influence function in factor form
    ``cz`` ``(H, k, m)``: ``n w_i D_i (dy_i - mu1) / S_D - n w_i C_i (dy_i - mu0) / S_C``.

    The cells, their order and which are skipped (no comparison unit) or references (the
    universal base period: ATT 0, no variance) are those of the reference's loop; the
    arithmetic is vectorised over cells (small panels have many cells and few units)."""
    per = periods.tolist()
    cv = cohort_values.tolist()
    n_coh = len(cv)
    t_count = len(per)
    desc: list[tuple[int, int, int, bool]] = []        # (cohort index, period, base, ref)
    for gi in np.flatnonzero(np.isin(cohort_values, groups)).tolist():
        g = cv[gi]
        g_base = max(i for i, p in enumerate(per) if p + anticipation < g)
        for ti in range(0 if base_period == "universal" else 1, t_count):
            if base_period == "varying":
                desc.append((gi, ti, g_base if per[ti] >= g - anticipation else ti - 1, False))
            else:
                desc.append((gi, ti, g_base, ti == g_base))
    if not desc:  # no cell at all: the caller refuses
        return [], [], [], [], np.zeros((n_coh, t_count + 1, 0))
    gi_a, ti_a, base_a, ref_a = (np.array(v) for v in zip(*desc))
    ref_a = ref_a.astype(bool)
    never = cohort_values == 0
    if control_group == "nevertreated":
        ctrl = np.broadcast_to(never, (len(desc), n_coh))
    else:
        later = np.maximum(periods[ti_a], periods[base_a]) + anticipation
        ctrl = never[None, :] | ((cohort_values[None, :] > later[:, None])
                                 & (cohort_values[None, :] != cohort_values[gi_a][:, None]))
    keep = ref_a | (np.where(ctrl, count[None, :], 0).sum(axis=1) > 0)
    gi_a, ti_a, base_a, ref_a, ctrl = (v[keep] for v in (gi_a, ti_a, base_a, ref_a, ctrl))
    m = gi_a.size
    est = ~ref_a
    s_d = sw[gi_a]
    s_c = np.where(ctrl, sw[None, :], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu1 = (sy[gi_a, ti_a] - sy[gi_a, base_a]) / s_d
        mu0 = np.where(ctrl, (sy[:, ti_a] - sy[:, base_a]).T, 0.0).sum(axis=1) / s_c
    att = np.where(est, mu1 - mu0, 0.0)
    cz = np.zeros((m, n_coh, t_count + 1))
    e = np.flatnonzero(est)
    g_e, ti_e, b_e = gi_a[e], ti_a[e], base_a[e]
    scale = n / s_d[e]
    cz[e, g_e, ti_e] = scale
    cz[e, g_e, b_e] = -scale
    cz[e, g_e, t_count] = scale * (means[g_e, ti_e] - means[g_e, b_e] - mu1[e])
    ci, hi = np.nonzero(ctrl[e])
    c = e[ci]
    scale = -n / s_c[c]
    cz[c, hi, ti_a[c]] = scale
    cz[c, hi, base_a[c]] = -scale
    cz[c, hi, t_count] = scale * (means[hi, ti_a[c]] - means[hi, base_a[c]] - mu0[c])
    return (list(cohort_values[gi_a]), list(periods[ti_a]), att.tolist(), ref_a.tolist(),
            np.ascontiguousarray(np.moveaxis(cz, 0, -1)))


def _wif_coef(groups_k: np.ndarray, pk: np.ndarray, att_k: np.ndarray,
              cohort_values: np.ndarray) -> np.ndarray:
    """:func:`_wif` ``@ att_k`` in factor form: ``w_i a[cohort_i]`` (its constant part,
    ``-sum(pk att)/S + S sum(pk att)/S^2``, is zero)."""
    s = pk.sum()
    a = np.zeros(cohort_values.size)
    np.add.at(a, np.searchsorted(cohort_values, groups_k), att_k / s - (pk @ att_k) / s**2)
    return a


def _linear_aggregations(gt: GroupTime, cohort_values: np.ndarray
                         ) -> tuple[list[str], list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """Every row :meth:`CallawaySantAnna.fit` reports, in its order (cells, then each
    aggregation's levels, then the overall dynamic, group and calendar effects), as
    :func:`aggregate` computes them: kinds, levels (positions), estimates and each row's
    influence function as ``inf_cells @ wc + w_i a[cohort_i]`` (``wc``: ``(m, M)``,
    ``a``: ``(H, M)``)."""
    m = gt.att.size
    n_coh = cohort_values.size
    kinds: list[str] = ["group_time"] * m
    levels: list[Any] = [None] * m
    ests: list[float] = list(gt.att)
    wcs: list[np.ndarray] = list(np.eye(m))
    as_: list[np.ndarray] = [np.zeros(n_coh)] * m
    post = gt.group <= gt.time
    estimated = ~gt.reference if gt.reference is not None else np.ones(m, dtype=bool)

    def agg(keepers: np.ndarray, weights: np.ndarray, with_wif: bool
            ) -> tuple[float, np.ndarray, np.ndarray]:
        est = float(gt.att[keepers] @ weights)
        wc = np.zeros(m)
        wc[keepers] = weights
        a = (_wif_coef(gt.group[keepers], gt.pg[keepers], gt.att[keepers], cohort_values)
             if with_wif else np.zeros(n_coh))
        return est, wc, a

    def add(kind: str, level: Any, row: tuple[float, np.ndarray, np.ndarray]) -> None:
        kinds.append(kind)
        levels.append(level)
        ests.append(row[0])
        wcs.append(row[1])
        as_.append(row[2])

    k = np.flatnonzero(post)
    add("simple", "ATT", agg(k, gt.pg[k] / gt.pg[k].sum(), True))
    # dynamic: a universal base period is the reference of the event study, not an estimate
    e_all = gt.time - gt.group
    dyn = []
    for e in np.unique(e_all[estimated]):
        k = np.flatnonzero((e_all == e) & estimated)
        row = agg(k, gt.pg[k] / gt.pg[k].sum(), True)
        add("dynamic", e, row)
        if e >= 0:
            dyn.append(row)
    overall = [(float(np.mean([r[0] for r in dyn])), np.mean([r[1] for r in dyn], axis=0),
                np.mean([r[2] for r in dyn], axis=0))]
    # group: a cohort with no post-period cell drops out, as in R did
    glist = np.array([g for g in np.unique(gt.group) if ((gt.group == g) & post).any()])
    grows = []
    for g in glist:
        k = np.flatnonzero((gt.group == g) & post)
        row = agg(k, np.full(k.size, 1.0 / k.size), False)
        add("group", g, row)
        grows.append(row)
    att_g = np.array([r[0] for r in grows])
    pg_g = np.array([gt.pg[gt.group == g][0] for g in glist])
    wg = pg_g / pg_g.sum()
    overall.append((float(att_g[np.arange(glist.size)] @ wg),
                    np.array([r[1] for r in grows]).T @ wg,
                    _wif_coef(glist, pg_g, att_g, cohort_values)))
    crows = []
    for t in np.unique(gt.time[post]):
        k = np.flatnonzero((gt.time == t) & post)
        row = agg(k, gt.pg[k] / gt.pg[k].sum(), True)
        add("calendar", t, row)
        crows.append(row)
    overall.append((float(np.mean([r[0] for r in crows])), np.mean([r[1] for r in crows], axis=0),
                    np.mean([r[2] for r in crows], axis=0)))
    for kind, row in zip(("dynamic", "group", "calendar"), overall):
        add(kind, "overall", row)
    return (kinds, levels, np.array(ests, dtype=float), np.column_stack(wcs),
            np.column_stack(as_))


def _mammen_hits(f: np.ndarray, code: np.ndarray, n_blocks: int, n_boot: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Per draw and block, the sum of F over the units with Mammen's upper point, from the
    uniforms ``rng.random((n_boot, n))`` would give (so multiplier_bootstrap's draws)
    whatever the threads; ``rng`` is left where that call would leave it."""
    n, k = f.shape
    out = np.zeros((n_boot, n_blocks, k))
    if not _NUMBA:  # numpy: blocks of draws, bounded memory, the same stream
        rows = max(1, 4_000_000 // max(n, 1))
        for b0 in range(0, n_boot, rows):
            hit = (rng.random((min(rows, n_boot - b0), n)) >= _MAMMEN_P).astype(float)
            for h in range(n_blocks):
                sel = code == h
                out[b0:b0 + hit.shape[0], h] = hit[:, sel] @ f[sel]
        return out
    kernel = _kernel("mammen_hits")
    bg = rng.bit_generator
    threads = min(BOOT_THREADS, n_boot)
    if n * n_boot < _PARALLEL_MIN or not isinstance(bg, (np.random.PCG64, np.random.PCG64DXSM)):
        threads = 1

    def draw(gen: np.random.Generator, part: np.ndarray) -> None:
        # uniforms from numpy (the generator's own C loop, without the GIL) in the order of
        # rng.random((draws, n)), turned into a byte mask for a block of draws, which the
        # compiled kernel sums
        rows = max(1, min(64, part.shape[0], _MASK_BYTES // n))
        size = min(n, _CHUNK)
        buf = np.empty(size)
        mask = np.empty((rows, n), dtype=bool)
        hit = np.empty(min(n, _TILE), dtype=np.int64)
        for b0 in range(0, part.shape[0], rows):
            block = mask[: min(rows, part.shape[0] - b0)]
            for r in range(block.shape[0]):
                for c0 in range(0, n, size):
                    u = buf[: min(size, n - c0)]
                    gen.random(out=u)
                    np.greater_equal(u, _MAMMEN_P, out=block[r, c0:c0 + u.size])
            kernel(block.view(np.uint8), f, code, part[b0:b0 + block.shape[0]], _TILE, hit)

    if threads == 1:
        draw(rng, out)
        return out
    from concurrent.futures import ThreadPoolExecutor

    # PCG64 streams jump ahead exactly (one 64-bit output per double): each thread starts
    # its range of draws where the single stream would be
    cuts = np.linspace(0, n_boot, threads + 1).astype(int)
    start = bg.state
    gens = [rng]
    for c in cuts[1:-1]:
        copy = type(bg)()
        copy.state = start
        copy.advance(int(c) * n)
        gens.append(np.random.Generator(copy))
    with ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(draw, g, out[c0:c1]) for g, c0, c1 in zip(gens, cuts[:-1], cuts[1:])]
        for job in jobs:
            job.result()
    # the caller's generator ends where n_boot * n doubles from ``start`` end (advance
    # drops a buffered 32-bit value, which random() never touches: keep it)
    bg.advance(int(n_boot - cuts[1]) * n)
    end = bg.state
    end["has_uint32"], end["uinteger"] = start["has_uint32"], start["uinteger"]
    bg.state = end
    return out


def _bootstrap_sums(cells: _FastCells, coef: np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``v @ inf / sqrt(n)`` of multiplier_bootstrap for every reported row, from the
    factor form: v = lo + (hi - lo) 1[u >= p], so sum_i v_i F_i = lo * sum F + (hi - lo)
    * (the sum over the hits)."""
    hits = _mammen_hits(cells.f, cells.code, cells.gram.shape[0], n_boot, rng)
    sums = _MAMMEN_LO * cells.colsum[None] + (_MAMMEN_HI - _MAMMEN_LO) * hits
    return (sums.reshape(n_boot, -1) @ coef.reshape(-1, coef.shape[-1])) / np.sqrt(cells.meta.n)


def _bootstrap_summary(bres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """R did's bootstrap SEs (IQR / (z_.75 - z_.25) / sqrt(n), quantile type 1) and the
    standardised draws from ``bres = v @ inf / sqrt(n)`` (``(n_boot, m)``)."""
    q75 = np.quantile(bres, 0.75, axis=0, method="inverted_cdf")
    q25 = np.quantile(bres, 0.25, axis=0, method="inverted_cdf")
    sigma = (q75 - q25) / (special.ndtri(0.75) - special.ndtri(0.25))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = bres / sigma
    return sigma / np.sqrt(n), z


@renamed(bootstrap=("n_boot", lambda old, new: (new or 999) if old else 0))
@dataclass(frozen=True)
class CallawaySantAnna:
    """Callaway and Sant'Anna (2021) staggered DID.

    Parameters
    ----------
    outcome, covariates
        Outcome and covariates (measured at each comparison's base period).
    control_group
        ``"nevertreated"`` (default) or ``"notyettreated"``.
    base_period
        ``"varying"`` (default, R did) or ``"universal"`` (g - 1 - anticipation for all t).
    method
        ``"dr"`` (doubly robust, default), ``"reg"`` or ``"ipw"``.
    aggregation
        Headline aggregation: ``"simple"`` (default), ``"dynamic"`` (mean of event-time
        effects e >= 0), ``"group"`` or ``"calendar"``; every aggregation's detail lands in
        ``terms``.
    anticipation
        Periods of anticipation.
    n_boot
        Draws of the multiplier bootstrap (Mammen weights) for SEs and uniform bands; needs
        ``rng``. ``0`` (default) gives analytic influence-function SEs. (Before: a
        ``bootstrap`` flag beside ``n_boot``; ``bootstrap=True`` still works for one
        release and means 999 draws unless ``n_boot`` says otherwise.)
    alpha
        Level of the intervals (pointwise, and the uniform band with the bootstrap).
    weights
        Optional column of unit sampling weights (constant within unit), as R did's
        ``weightsname``: every 2x2, the cohort shares and the aggregations are weighted.
    pretest
        The pre-test of parallel trends reported as ``pretrend_p``: ``"sidak"`` (default)
        rejects when the largest pre-period ``|t|`` over the ATT(g,t) cells is extreme,
        with Sidak's adjustment ``1 - (1 - p_min)^q``; ``"wald"`` is R did's joint Wald
        test (``Wpval``). Both are always in ``diagnostics`` (``pretrend_sidak_p``,
        ``pretrend_wald_p``). The Wald test inverts the q x q covariance of the pre-period
        cells, estimated from the few units of each cohort; with small cohorts it
        over-rejects badly when parallel trends hold (52% instead of 5% in
        ``experiment=method_comparison``, where one cohort has 9 cities and 6 pre-period
        cells: a Hotelling-type problem). The max-|t| test needs only each cell's SE, and
        Sidak's inequality keeps its size at most alpha for any correlation between the
        cells (measured: 3-5% in the same design).

    Notes
    -----
    ATT(g,t) = E[Y_t - Y_b | G = g] - E[Y_t - Y_b | C] for comparison group C, with
    ``b = g - 1 - anticipation`` for post periods (and ``t - 1`` for pre periods under the
    varying base). Identification: parallel trends of the comparison group conditional on
    covariates, no anticipation beyond ``anticipation``, overlap. Influence functions are
    R did's (DRDID panel estimators, weights' estimation included in aggregations);
    clustering at the unit. Implemented for balanced panels. ``fit(panel, rng, engine=)``
    picks the engine (default :data:`ENGINE`, ``"fast"``; ``"reference"`` for the per-cell
    path); with the bootstrap both draw the same Mammen weights from ``rng``.
    """

    outcome: str
    covariates: Sequence[str] = ()
    control_group: str = "nevertreated"
    base_period: str = "varying"
    method: str = "dr"
    aggregation: str = "simple"
    anticipation: int = 0
    n_boot: int = 0
    alpha: float = 0.05
    weights: str | None = None
    pretest: str = "sidak"
    label: str = "callaway_santanna"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("control_group", self.control_group, CONTROL_GROUPS)
        check_choice("base_period", self.base_period, BASE_PERIODS)
        check_choice("method", self.method, METHODS)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("pretest", self.pretest, PRETESTS)
        if not isinstance(self.anticipation, (int, np.integer)) or self.anticipation < 0:
            raise OptionError(f"anticipation={self.anticipation!r} must be an integer >= 0")
        check_count("n_boot", self.n_boot, 0)
        check_alpha(self.alpha)
        if self.outcome in tuple(self.covariates):
            raise OptionError(f"covariates {list(self.covariates)} must not include the outcome")

    def _pretests(self, att: np.ndarray, pg: np.ndarray, n: int, idx: np.ndarray,
                  se: np.ndarray, notes: list[str], v: np.ndarray) -> dict[str, float]:
        """Both pre-tests of parallel trends on the pre-period cells ``idx`` (``se``: every
        cell's SE as reported, ``v``: the cells' covariance, ``(idx.size, idx.size)``);
        ``pretrend_p`` is the one the ``pretest`` option names."""
        out: dict[str, float] = {"pretrend_df1": float(idx.size)}
        b = att[idx]
        # small cohorts: each cell's SE rests mostly on its cohort's n_g units, so the
        # t-statistic gets the n_g / (n_g - 1) variance correction and a t(n_g - 1) law
        # (the Welch approximation when the treated side dominates), not the normal
        n_g = np.maximum(np.rint(pg[idx] * n), 2.0)
        t = np.abs(b / se[idx]) * np.sqrt((n_g - 1) / n_g)
        if np.isfinite(t).all():
            p_cells = 2 * special.stdtr(n_g - 1, -t)
            p_min = float(p_cells.min())
            out.update(pretrend_maxt=float(t.max()),
                       pretrend_sidak_p=float(-np.expm1(idx.size * np.log1p(-p_min)))
                       if p_min < 1 else 1.0)
        rank = np.linalg.matrix_rank(v)
        if rank < idx.size:
            # R did drops the test with a warning; say why it is missing
            notes.append(f"Wald pre-test of parallel trends not computed: the covariance of "
                         f"the {idx.size} pre-period ATT(g,t) is singular (rank {rank})")
        else:
            wald = float(b @ np.linalg.solve(v, b))
            out.update(pretrend_chi2=wald, pretrend_wald_p=float(special.chdtrc(idx.size, wald)))
        chosen = out.get(f"pretrend_{self.pretest}_p")
        if chosen is not None:
            out["pretrend_p"] = chosen
        return out

    @property
    def bootstrap(self) -> bool:
        """Whether the multiplier bootstrap gives the SEs (``n_boot > 0``)."""
        return self.n_boot > 0

    def _positions(self, panel: pd.DataFrame
                   ) -> tuple[Wide, np.ndarray | None, np.ndarray, tuple[str, ...]]:
        """The panel as matrices on period positions (both engines start here): the wide
        panel with periods and cohorts counted 1, 2, ... (0 = never treated), the unit
        weights (None without ``weights``), the calendar periods and notes."""
        self.check()
        notes: tuple[str, ...] = ()
        cohorts = panel[COHORT].to_numpy()
        if self.control_group == "notyettreated" and not (cohorts == 0).any():
            # R did's rule: with no never-treated unit the last cohort is the comparison
            # group; the periods from its (anticipated) start have no comparison and go
            last = cohorts.max()
            keep = panel[TIME].to_numpy() < last - self.anticipation
            panel = panel.loc[keep].assign(**{COHORT: np.where(cohorts[keep] == last, 0,
                                                               cohorts[keep])})
            notes = (f"no never-treated unit: the last cohort ({show(last)}) is the "
                     f"comparison group and periods from {show(last - self.anticipation)} "
                     "are dropped (as R did)",)
        extra = (self.weights,) if self.weights and self.weights not in self.covariates else ()
        w = to_wide(panel, self.outcome, (*self.covariates, *extra), "Callaway-Sant'Anna")
        unit_weights = None
        if self.weights:
            wmat = w.x[self.weights]
            if not np.all(wmat == wmat[:, :1]):
                raise PanelError(f"weights column {self.weights!r} must be constant within "
                                 "each unit (sampling weights, as R did's weightsname)")
            unit_weights = wmat[:, 0].astype(float)
            if not (np.all(np.isfinite(unit_weights)) and np.all(unit_weights > 0)):
                raise PanelError(f"weights column {self.weights!r} must be positive and finite")
        # work on period positions: with gaps between years (biennial surveys) the base
        # period, anticipation and event times count the panel's periods, not calendar years
        calendar = w.periods
        cohort = np.zeros(w.cohort.size, dtype=float)
        treated = w.cohort > 0
        cohort[treated] = period_positions(w.cohort[treated], calendar, what="cohort")
        # positions count from 1 so that cohort 0 keeps meaning "never treated"
        positions = replace(w, periods=np.arange(1, calendar.size + 1, dtype=np.int64),
                            cohort=np.where(treated, cohort + 1, 0).astype(np.int64))
        return positions, unit_weights, calendar, notes

    @excluding_always_treated
    def group_time(self, panel: pd.DataFrame) -> GroupTime:
        """Every ATT(g,t) with its dense influence functions (the reference computation)."""
        positions, unit_weights, calendar, notes = self._positions(panel)
        gt = group_time(positions, self.control_group, self.base_period, self.anticipation,
                        self.method, tuple(self.covariates), unit_weights)
        return replace(gt, periods=calendar, notes=notes)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None,
            engine: str | None = None) -> Estimate:
        """Estimate (see the class docstring); ``engine`` overrides :data:`ENGINE`
        (``"fast"`` or ``"reference"``: the same numbers to rounding, pinned in
        tests/test_cs_fast.py)."""
        engine = ENGINE if engine is None else engine
        check_choice("engine", engine, ENGINES)
        if self.bootstrap and rng is None:
            self.check()
            raise OptionError(f"n_boot={self.n_boot} (the multiplier bootstrap) needs a "
                              "generator: fit(panel, rng=...)")
        if engine == "reference":
            return self._fit_reference(panel, rng)
        return self._fit_fast(panel, rng)

    def _fit_reference(self, panel: pd.DataFrame, rng: np.random.Generator | None) -> Estimate:
        gt = self.group_time.__wrapped__(self, panel)
        frames = []
        overall: dict[str, tuple[float, np.ndarray]] = {}
        for kind in AGGREGATIONS:
            table, est, inf = aggregate(gt, kind)
            if kind in ("group", "calendar"):  # positions -> the panel's own periods
                table["level"] = gt.label(table["level"].to_numpy())
            table.insert(0, "aggregation", kind)
            frames.append(table)
            overall[kind] = (est, inf)
        cell = pd.DataFrame({"aggregation": "group_time",
                             "level": [f"{g}:{t}" for g, t in zip(gt.label(gt.group),
                                                                  gt.label(gt.time))],
                             "estimate": gt.att, "inf": list(gt.inf.T),
                             "group": gt.label(gt.group), "time": gt.label(gt.time)})
        frames.insert(0, cell)
        detail = pd.concat(frames, ignore_index=True)
        for kind in AGGREGATIONS:
            if kind != "simple":
                detail = pd.concat([detail, pd.DataFrame({
                    "aggregation": [kind], "level": ["overall"], "estimate": [overall[kind][0]],
                    "inf": [overall[kind][1]]})], ignore_index=True)
        infs = np.column_stack(detail["inf"].to_list())
        if self.bootstrap:
            se, zdraws = multiplier_bootstrap(infs, self.n_boot, rng)
        else:
            se, zdraws = np.sqrt(np.mean(infs**2, axis=0) / gt.n), None

        def cov(idx: np.ndarray) -> np.ndarray:
            return infs[:, idx].T @ infs[:, idx] / gt.n**2

        return self._estimate(panel, gt, detail["aggregation"].to_numpy(),
                              detail["level"].to_list(), detail["estimate"].to_numpy(float),
                              se, zdraws, cov)

    def _fit_fast(self, panel: pd.DataFrame, rng: np.random.Generator | None) -> Estimate:
        positions, unit_weights, calendar, notes = self._positions(panel)
        cells = _group_time_fast(positions, self.control_group, self.base_period,
                                 self.anticipation, self.method, tuple(self.covariates),
                                 unit_weights)
        gt = replace(cells.meta, periods=calendar, notes=notes)
        kinds, levels, est, wc, a = _linear_aggregations(gt, cells.cohort_values)
        levels = [gt.label(l) if k in ("group", "calendar") and not isinstance(l, str) else l
                  for k, l in zip(kinds, levels)]
        levels[: gt.att.size] = [f"{g}:{t}" for g, t in zip(gt.label(gt.group), gt.label(gt.time))]
        coef = cells.coefficients(wc, a)                  # (H, k, M)
        n = gt.n
        if self.bootstrap:
            bres = _bootstrap_sums(cells, coef, self.n_boot, rng)
            se, zdraws = _bootstrap_summary(bres, n)
        else:
            # two contractions in a fixed order (no einsum_path search: it cost more than
            # the arithmetic on small panels)
            gc = np.einsum("hkj,hjl->hkl", cells.gram, coef, optimize=False)
            se = np.sqrt(np.maximum(np.einsum("hkl,hkl->l", coef, gc, optimize=False),
                                    0.0)) / n
            zdraws = None

        def cov(idx: np.ndarray) -> np.ndarray:
            c = coef[:, :, idx]
            gc = np.einsum("hkj,hjm->hkm", cells.gram, c, optimize=False)
            return np.einsum("hkl,hkm->lm", c, gc, optimize=False) / n**2

        return self._estimate(panel, gt, np.asarray(kinds, dtype=object), levels, est, se,
                              zdraws, cov)

    def _estimate(self, panel: pd.DataFrame, gt: GroupTime, kinds: np.ndarray,
                  levels: list[Any], est: np.ndarray, se: np.ndarray,
                  zdraws: np.ndarray | None, cov: Any) -> Estimate:
        """The Estimate from every reported quantity (both engines end here): ``kinds`` and
        ``levels`` name the rows (cells first, then the aggregations), ``se`` their SEs,
        ``zdraws`` the standardised bootstrap draws (None: analytic), ``cov(idx)`` the
        covariance of the rows ``idx``."""
        crit = critical_value(self.alpha, None)
        if self.bootstrap:
            inference = f"multiplier bootstrap ({self.n_boot} draws, Mammen), clustered by unit"
        else:
            inference = "influence function, clustered by unit, normal"
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = est / se
        level_str = np.array([str(l) for l in levels], dtype=object)
        terms = pd.DataFrame({
            "term": [f"{a}:{l}" for a, l in zip(kinds, levels)],
            "estimate": est, "std_error": se, "statistic": stat,
            "p_value": 2 * special.ndtr(-np.abs(stat)),
            "conf_low": est - crit * se, "conf_high": est + crit * se,
            "aggregation": kinds,
            "level": level_str,
        })
        dyn_mask = (kinds == "dynamic") & (level_str != "overall")
        dyn_idx = np.flatnonzero(dyn_mask)
        if self.bootstrap:
            # uniform (simultaneous) band for the event-time effects, as R did's cband, from
            # the same bootstrap draws
            ucrit = uniform_critical_value(zdraws[:, dyn_idx], self.alpha)
            terms["uniform_low"] = np.nan
            terms["uniform_high"] = np.nan
            terms.loc[dyn_mask, "uniform_low"] = est[dyn_idx] - ucrit * se[dyn_idx]
            terms.loc[dyn_mask, "uniform_high"] = est[dyn_idx] + ucrit * se[dyn_idx]
        event = np.full(len(levels), np.nan)
        event[dyn_idx] = pd.to_numeric(pd.Series(level_str[dyn_idx]), errors="coerce").to_numpy()
        terms["event_time"] = event
        head_name = "simple:ATT" if self.aggregation == "simple" else f"{self.aggregation}:overall"
        h = int(np.flatnonzero(terms["term"].to_numpy() == head_name)[0])
        pre_mask = (gt.time < gt.group - self.anticipation)
        if gt.reference is not None:
            pre_mask &= ~gt.reference  # a universal base period is no test of anything
        diagnostics: dict[str, float] = {"n_cells": float(gt.att.size)}
        notes = [f"control group: {self.control_group}; base period: {self.base_period}; "
                 f"method: {self.method}", *gt.notes]
        if pre_mask.any():
            idx = np.flatnonzero(pre_mask)
            diagnostics.update(self._pretests(gt.att, gt.pg, gt.n, idx, se[: gt.att.size],
                                              notes, cov(idx)))
        else:
            notes.append("pre-test of parallel trends not computed: no pre-period ATT(g,t)")
        if self.bootstrap:
            diagnostics["uniform_crit"] = ucrit
        ev_names = [f"ev{int(float(l)):+d}" for l in level_str[dyn_idx]]
        if self.bootstrap:
            z = zdraws[:, dyn_idx] * se[dyn_idx]
            ev_cov = np.cov(z, rowvar=False)
        else:
            ev_cov = cov(dyn_idx)
        event_cov = pd.DataFrame(np.atleast_2d(ev_cov), index=ev_names, columns=ev_names)
        p_value = terms["p_value"].to_numpy()
        return Estimate(
            estimator=self.label, term="ATT" if self.aggregation == "simple" else f"ATT_{self.aggregation}",
            estimate=float(est[h]), std_error=float(se[h]), p_value=float(p_value[h]),
            conf_low=float(est[h] - crit * se[h]), conf_high=float(est[h] + crit * se[h]),
            alpha=self.alpha, n_obs=int(gt.n * panel_periods(panel)), n_units=gt.n,
            n_clusters=gt.n, inference=inference, terms=terms, diagnostics=diagnostics,
            notes=tuple(notes),
            event_cov=event_cov,
        )

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True simple ATT (mean effect over treated unit-periods, cohorts weighted by size,
        as the simple aggregation) and dynamic overall on a simulated panel, over the cells
        :meth:`fit` estimates: with no never-treated unit under not-yet-treated comparisons
        the last cohort is only a comparison and periods from its (anticipated) start go
        (tests/test_estimands_all_treated.py, pinned to R did)."""
        cohorts = panel[COHORT].to_numpy()
        if self.control_group == "notyettreated" and not (cohorts == 0).any():
            last = cohorts.max()
            panel = panel.loc[(cohorts < last)
                              & (panel[TIME].to_numpy() < last - self.anticipation)]
        return staggered_truth(panel, self.outcome, self.anticipation)


def panel_periods(panel: pd.DataFrame) -> int:
    from .panel import TIME

    return int(panel[TIME].nunique())


def staggered_truth(panel: pd.DataFrame, outcome: str, anticipation: int = 0) -> dict[str, float]:
    """Estimands of the staggered estimators on a simulated panel (``te_<outcome>``):
    ``ATT`` (mean over treated unit-periods), ``ATT_dynamic`` (mean over e >= 0 of the
    event-time ATTs), ``ATT_group`` and ``ATT_calendar``, and ``ev+k`` event-time ATTs."""
    from .design import event_time
    from .panel import COHORT, TIME

    te = panel[f"te_{outcome}"].to_numpy()
    coh = panel[COHORT].to_numpy()
    t = panel[TIME].to_numpy()
    d = panel[D].to_numpy() == 1
    out = {"ATT": float(te[d].mean())}
    e = event_time(panel)  # counted in the panel's periods
    ev = {}
    for k in np.unique(e[~np.isnan(e)]):
        m = e == k
        ev[int(k)] = float(te[m].mean())
        out[f"ev{int(k):+d}"] = ev[int(k)]
    out["ATT_dynamic"] = float(np.mean([v for k, v in ev.items() if k >= 0]))
    groups = np.unique(coh[d & (coh > 0)])  # a cohort with no treated cell drops out, as in aggte
    by_g = {g: te[d & (coh == g)].mean() for g in groups}
    unit = panel["unit"].to_numpy()
    sizes = {g: np.unique(unit[coh == g]).size for g in groups}
    out["ATT_group"] = float(sum(by_g[g] * sizes[g] for g in groups) / sum(sizes.values()))
    cal = [te[d & (t == s)].mean() for s in np.unique(t[d])]
    out["ATT_calendar"] = float(np.mean(cal))
    return out
