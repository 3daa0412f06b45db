"""de Chaisemartin and D'Haultfoeuille's event-study estimators ``DID_l`` for designs where
treatment switches on *and off* (R / Stata ``did_multiplegt_dyn``).

de Chaisemartin, C. and D'Haultfoeuille, X. (2024), "Difference-in-differences estimators of
intertemporal treatment effects", *Review of Economics and Statistics*. The computations
follow R ``DIDmultiplegtDYN`` 2.1.2 (``did_multiplegt_main`` / ``did_multiplegt_dyn_core``)
line for line, vectorised over a units x periods grid, and are pinned to it in
``tests/test_dcdh.py``.

The design
----------
A unit's *baseline* treatment is its treatment in its first observed period; ``F_g`` is the
first period its treatment differs from the baseline (a *switcher*: *in* if it starts
untreated, *out* if it starts treated). ``DID_l`` compares, for every switcher observed
``l`` periods after ``F_g - 1``, its outcome change from ``F_g - 1`` to ``F_g - 1 + l`` with
that of the units with the same baseline whose treatment has not changed yet at
``F_g - 1 + l``, and averages over switchers (switchers out enter with the opposite sign,
so that every ``DID_l`` estimates the effect of having been exposed to *more* treatment).
Placebo ``l`` makes the same comparison from ``F_g - 1`` back to ``F_g - 1 - l``. A baseline
value whose units all switch at the same date (or never) is dropped, as the package does
(its Design Restriction 1); periods after the last not-yet-switched unit of a baseline are
dropped for that baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from .panel import (D, TIME, UNIT, EstimationError, OptionError, PanelError, check_alpha,
                    check_choice, check_count, check_panel, show)
from .result import Estimate, critical_value

SWITCHERS = ("both", "in", "out")


# --- the design: everything fixed by treatment paths and missing cells ----------------------

@dataclass(frozen=True)
class _Design:
    """A panel on the units x periods grid, after the package's sample rules."""

    y: np.ndarray          # (G, T) outcome, NaN where missing or not used
    d: np.ndarray          # (G, T) treatment, NaN where missing
    n: np.ndarray          # (G, T) N_gt: the cell's weight, 0 where the outcome is missing
    y_rows: np.ndarray     # (G, T) row index of each cell in the panel, -1 where missing
    d_sq: np.ndarray       # (G,) baseline treatment
    f: np.ndarray          # (G,) first switch period, 1-based; t_max + 1 if never
    t_g: np.ndarray        # (G,) last period with a not-yet-switched unit of the same baseline
    s: np.ndarray          # (G,) 1 switcher in, 0 switcher out, NaN never switches
    cluster: np.ndarray    # (G,) cluster code
    n_clusters: int
    clustered: bool        # a cluster column coarser than the unit
    t_max: int
    notes: tuple[str, ...] = ()

    @property
    def n_groups(self) -> int:
        return self.y.shape[0]

    @property
    def l_g(self) -> np.ndarray:
        return self.t_g - self.f + 1


def _grid(values: np.ndarray, unit: np.ndarray, tcode: np.ndarray, shape: tuple[int, int],
          fill: float = np.nan) -> np.ndarray:
    out = np.full(shape, fill)
    out[unit, tcode] = values
    return out


def build_design(panel: pd.DataFrame, outcome: str, weights: str | None = None,
                 cluster: str | None = None) -> _Design:
    """The package's estimation sample on a units x periods grid.

    Mirrors ``did_multiplegt_main``'s data steps for a panel without missing values (rows
    may be missing: an unbalanced panel): baseline treatment, first switch ``F_g``, the
    dropped baselines (no variation in ``F_g``) and periods (no not-yet-switched unit of
    that baseline), a switcher whose period before ``F_g`` is missing made a control up to
    its last observed period before it, ``T_g`` and the switchers' direction.
    """
    covs = tuple(c for c in (weights,) if c is not None)
    _, unit, tcode, arrays = check_panel(panel, outcomes=(outcome,), covariates=covs,
                                         require_controls=False, absorbing=False)
    if cluster is not None and cluster not in panel.columns:
        raise PanelError(f"cluster column {cluster!r} is not in the panel; columns: "
                         f"{list(panel.columns)[:20]}")
    g_all, t_all = int(unit.max()) + 1, int(tcode.max()) + 1
    shape = (g_all, t_all)
    w = arrays[weights] if weights is not None else np.ones(len(panel))
    if weights is not None and (w < 0).any():
        raise PanelError(f"weights column {weights!r} must be non-negative")
    present = np.zeros(shape, dtype=bool)
    present[unit, tcode] = True
    y = _grid(arrays[outcome], unit, tcode, shape)
    d = _grid(arrays[D], unit, tcode, shape)
    wt = _grid(w, unit, tcode, shape, 0.0)
    rows = _grid(np.arange(len(panel)), unit, tcode, shape, -1).astype(np.int64)
    t1 = np.arange(1, t_all + 1)

    first_t = present.argmax(axis=1)                       # first observed period (0-based)
    last_t = t_all - 1 - present[:, ::-1].argmax(axis=1)   # last observed period (0-based)
    d_sq = d[np.arange(g_all), first_t]
    changed = present & (d != d_sq[:, None])
    ever = np.maximum.accumulate(changed, axis=1)           # carried over missing periods
    has = ever.any(axis=1)
    f0 = np.where(has, ever.argmax(axis=1) + 1, 0)          # 1-based; 0 = never (for now)

    # Design Restriction 1: keep a baseline only if its units' F_g vary
    keep = np.zeros(g_all, dtype=bool)
    dropped = []
    for v in np.unique(d_sq):
        m = d_sq == v
        if np.unique(f0[m]).size >= 2:
            keep |= m
        else:
            dropped.append(v)
    if not keep.any():
        raise EstimationError("no effect can be estimated: within each baseline treatment "
                              "every unit switches at the same date (or never) -- the "
                              "design restriction of de Chaisemartin-D'Haultfoeuille")
    notes = []
    if dropped:
        n_drop = int((~keep).sum())
        notes.append(f"{n_drop} unit(s) with baseline treatment {[show(v) for v in dropped]} "
                     "dropped: all switch at the same date or never, so no comparison "
                     "(as did_multiplegt_dyn)")
    sel = np.flatnonzero(keep)
    present, y, d, wt, rows = present[sel], y[sel], d[sel], wt[sel], rows[sel]
    d_sq, ever, f0, first_t, last_t = d_sq[sel], ever[sel], f0[sel], first_t[sel], last_t[sel]

    # a (g, t) cell is kept only while some unit of the same baseline has not switched
    ctrl = np.zeros_like(present)
    for v in np.unique(d_sq):
        m = d_sq == v
        ctrl[m] = (present[m] & ~ever[m]).any(axis=0)
    present &= ctrl
    if not present.any(axis=0).any():  # pragma: no cover - the first period always has one
        raise EstimationError("no period has a not-yet-switched unit")
    t_max = int(np.flatnonzero(present.any(axis=0)).max()) + 1
    t_min = int(np.flatnonzero(present.any(axis=0)).min()) + 1
    inner = present[:, t_min - 1:t_max].any(axis=0)
    if not inner.all():
        gap = t_min + int(np.flatnonzero(~inner)[0])
        raise EstimationError(f"period position {gap} has no observation of any unit used: "
                              "did_multiplegt_dyn would treat the periods around it as "
                              "consecutive; fill the gap or drop the period")
    present, y, d, wt, rows = (a[:, :t_max] for a in (present, y, d, wt, rows))
    y = np.where(present, y, np.nan)
    d = np.where(present, d, np.nan)
    rows = np.where(present, rows, -1)
    f = np.where(f0 == 0, t_max + 1, f0).astype(float)

    # a switcher whose period before F_g is missing cannot be dated: it is a control up to
    # its last observed period before F_g, its later outcomes unused (the package's rule)
    t1 = np.arange(1, t_max + 1)
    before = present & (t1[None, :] < f[:, None])
    ldbf = np.where(before.any(axis=1), t_max - before[:, ::-1].argmax(axis=1), 0)
    gap = (f < t_max + 1) & (ldbf < f - 1)
    if gap.any():
        y[gap] = np.where(t1[None, :] > ldbf[gap, None], np.nan, y[gap])
        f[gap] = t_max + 1
        notes.append(f"{int(gap.sum())} switcher(s) unobserved in the period before their "
                     "first switch used as controls up to their last period before it (as "
                     "did_multiplegt_dyn)")
    trunc = np.where(f == t_max + 1, last_t + 2, np.inf)   # last observed + 1, 1-based
    f_trunc = np.minimum(f, trunc)
    t_g = np.empty_like(f)
    for v in np.unique(d_sq):
        m = d_sq == v
        t_g[m] = f_trunc[m].max() - 1

    # switchers' direction: average treatment over F_g..T_g above or below the baseline
    post = (t1[None, :] >= f[:, None]) & (t1[None, :] <= t_g[:, None]) & ~np.isnan(d)
    cnt = post.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(post, d, 0.0).sum(axis=1) / cnt
        s = np.where(np.isnan(avg), np.nan, (avg > d_sq).astype(float))
    s = np.where(f == t_max + 1, np.nan, s)

    n = np.where(np.isnan(y) | np.isnan(d), 0.0, wt)
    if cluster is None or cluster == UNIT:
        cl, n_cl, clustered = np.arange(sel.size), sel.size, False
    else:
        codes, _ = _codes_of(panel[cluster].to_numpy())
        unit_cl = np.full(g_all, -1)
        unit_cl[unit] = codes
        if not np.array_equal(unit_cl[unit], codes):
            raise PanelError(f"cluster column {cluster!r} must be constant within each unit "
                             "(units nest in clusters)")
        cl = np.unique(unit_cl[sel], return_inverse=True)[1]
        n_cl = int(cl.max()) + 1
        clustered = True
    return _Design(y=y, d=d, n=n, y_rows=rows, d_sq=d_sq, f=f, t_g=t_g, s=s,
                   cluster=cl, n_clusters=n_cl, clustered=clustered, t_max=t_max,
                   notes=tuple(notes))


def _codes_of(values: np.ndarray) -> tuple[np.ndarray, int]:
    from .design import codes_of

    return codes_of(values)


# --- one direction (switchers in or out), one effect or placebo -----------------------------

@dataclass
class _Part:
    """What one call of the package's core gives for effect or placebo ``l`` and one
    direction: the unit-level influence parts and the counts."""

    n_w: float                  # N^1_l or N^0_l (weighted number of switchers)
    n_sw: int                   # unweighted number of switchers
    u: np.ndarray               # (G,) U_{G,g,l}: the estimator's unit contributions
    u_var: np.ndarray           # (G,) U^{var}_{G,g,l}: the demeaned ones for the variance
    count: np.ndarray           # (G, T) cells used (the package's "N")
    dist: np.ndarray            # (G, T) the switchers' cells
    delta_d: float = np.nan     # average |D - D_g1| of the switchers at F_g - 1 + l
    delta_norm: float = np.nan  # average cumulated |D - D_g1| from F_g to F_g - 1 + l


def _by_baseline_sum(x: np.ndarray, d_sq: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Sum of ``x`` over units with the same baseline, period by period, on every row."""
    out = np.empty_like(x)
    for v in levels:
        m = d_sq == v
        out[m] = x[m].sum(axis=0)
    return out


def _cell_count(flag: np.ndarray, keys: np.ndarray, cluster: np.ndarray,
                clustered: bool) -> np.ndarray:
    """Per flagged cell, the number of flagged cells (or distinct clusters) sharing its key;
    NaN elsewhere (the package's ``dof_cohort`` variables)."""
    out = np.full(flag.shape, np.nan)
    if not flag.any():
        return out
    k = keys[flag]
    if clustered:
        cl = np.broadcast_to(cluster[:, None], flag.shape)[flag]
        pair = np.unique(np.column_stack([k, cl]), axis=0)
        uk, cnt = np.unique(pair[:, 0], return_counts=True)
        out[flag] = cnt[np.searchsorted(uk, k)]
    else:
        uk, inv, cnt = np.unique(k, return_inverse=True, return_counts=True)
        out[flag] = cnt[inv.ravel()]
    return out


def _cell_mean(flag: np.ndarray, keys: np.ndarray, n: np.ndarray, diff: np.ndarray
               ) -> np.ndarray:
    """Per flagged cell, the N_gt-weighted mean of ``diff`` over flagged cells sharing its
    key; NaN elsewhere."""
    out = np.full(flag.shape, np.nan)
    if not flag.any():
        return out
    k = keys[flag]
    uk, inv = np.unique(k, return_inverse=True)
    inv = inv.ravel()
    num = np.bincount(inv, weights=n[flag] * diff[flag], minlength=uk.size)
    den = np.bincount(inv, weights=n[flag], minlength=uk.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[flag] = (num / den)[inv]
    return out


def _part(des: _Design, l: int, inc: int, placebo: bool, only_never: bool,
          levels: np.ndarray) -> _Part | None:
    """Effect (or placebo) ``l`` for switchers in (``inc=1``) or out (``inc=0``): the
    package's ``did_multiplegt_dyn_core`` for one ``l``, without controls."""
    y, n, f, t_g, d_sq = des.y, des.n, des.f, des.t_g, des.d_sq
    n_g, n_t = y.shape
    t = np.arange(1, n_t + 1)[None, :]
    fc = f[:, None]
    diff = np.full_like(y, np.nan)
    if l < n_t:
        diff[:, l:] = y[:, l:] - y[:, :-l]
    valid = ~np.isnan(diff)
    never = np.where(valid, (fc > t).astype(float), np.nan)
    if only_never:
        never = np.where((fc > t) & (fc < des.t_max + 1), 0.0, never)
    ctrl = _by_baseline_sum(np.nan_to_num(never * n), d_sq, levels)
    with np.errstate(invalid="ignore"):
        dist = ((t == fc - 1 + l) & (l <= des.l_g[:, None]) & (des.s[:, None] == inc)
                & (ctrl > 0)).astype(float)
    dist = np.where(valid, dist, np.nan)
    if placebo:
        # placebo l: Y_{F_g-1-l} - Y_{F_g-1}, on the row of period F_g - 1 + l
        dpl = np.full_like(y, np.nan)
        if 2 * l < n_t:
            dpl[:, 2 * l:] = y[:, :-2 * l] - y[:, l:-l]
        has = ~np.isnan(dpl)
        never = never * has
        ctrl = _by_baseline_sum(np.nan_to_num(never * n), d_sq, levels)
        dist = dist * has * (ctrl > 0)
        diff, valid = dpl, has
    dist_w = np.nan_to_num(dist * n)
    n_t_all = dist_w.sum(axis=0)[None, :]          # switchers at t, every baseline
    n_l = float(n_t_all.sum())
    if n_l == 0:
        return None
    n_tg = _by_baseline_sum(dist_w, d_sq, levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = dist - (n_tg / ctrl) * never
    g = float(n_g)
    dummy = (l <= t_g - 1)[:, None].astype(float)
    inwin = ((t >= l + 1) & (t <= t_g[:, None])).astype(float)
    u_temp = dummy * (g / n_l) * inwin * n * coef * diff
    u = np.nansum(u_temp, axis=1)
    with np.errstate(invalid="ignore"):
        used = ((np.isfinite(u_temp) & (u_temp != 0))
                | ((u_temp == 0) & (diff == 0) & ((dist != 0) | ((n_tg != 0) & (never != 0)))))
    count = np.where(used, n, 0.0)

    # variance: demean the long differences within cohorts, with a small-sample factor
    dof_ns = (n != 0) & valid & (never == 1) & (n_t_all > 0)
    dof_s = (n != 0) & (dist == 1)
    tt = np.broadcast_to(t, y.shape)
    key_t = np.broadcast_to(d_sq[:, None], y.shape) * (n_t + 2) + tt       # (D_g1, t)
    key_c = np.broadcast_to((d_sq * (n_t + 2) + f)[:, None], y.shape)      # (D_g1, F_g)
    dof_nss = dof_s | dof_ns
    m_ns = _cell_mean(dof_ns, key_t, n, diff)
    m_s = _cell_mean(dof_s, key_c, n, diff)
    m_nss = _cell_mean(dof_nss, key_t, n, diff)
    c_ns = _cell_count(dof_ns, key_t, des.cluster, des.clustered)
    c_s = _cell_count(dof_s, key_c, des.cluster, des.clustered)
    c_nss = _cell_count(dof_nss, key_t, des.cluster, des.clustered)
    e_hat = np.zeros_like(y)
    e_hat = np.where(dof_ns & (c_ns >= 2), m_ns, e_hat)
    e_hat = np.where(dof_s & (c_s >= 2), m_s, e_hat)
    alone = (dof_ns & (c_ns == 1)) | (dof_s & (c_s == 1))
    e_hat = np.where(alone & (c_nss >= 2), m_nss, e_hat)
    e_hat = np.where(dof_nss, e_hat, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.ones_like(y)
        dof = np.where(dof_ns & (c_ns > 1), np.sqrt(c_ns / (c_ns - 1)), dof)
        dof = np.where(dof_s & (c_s > 1), np.sqrt(c_s / (c_s - 1)), dof)
        dof = np.where(alone & (c_nss >= 2), np.sqrt(c_nss / (c_nss - 1)), dof)
    dof = np.where(dof_nss, dof, np.nan)
    u_var = np.nansum(dummy * (g / n_l) * coef * inwin * n * dof * (diff - e_hat), axis=1)

    sw = np.nan_to_num(dist) == 1
    part = _Part(n_w=n_l, n_sw=int(sw.sum()), u=u, u_var=u_var, count=count, dist=sw)
    gap = np.abs(np.nan_to_num(des.d) - d_sq[:, None])
    part.delta_d = float((n[sw] / n_l * gap[sw]).sum())
    window = (t >= fc) & (t <= fc - 1 + l)
    cum = np.where(window, gap, 0.0).sum(axis=1)
    part.delta_norm = float((n[sw] / n_l * np.broadcast_to(cum[:, None], y.shape)[sw]).sum())
    return part


# --- the estimator -------------------------------------------------------------------------

@dataclass(frozen=True)
class DCDH:
    """de Chaisemartin-D'Haultfoeuille event-study estimators ``DID_l`` (R / Stata
    ``did_multiplegt_dyn``), for treatment that switches on and off.

    Parameters
    ----------
    outcome
        Outcome column.
    effects
        Number of event-study effects ``DID_1 .. DID_effects`` (the package's ``effects``);
        fewer are estimated, with a note, when the panel has too few periods after the
        switches.
    placebo
        Number of placebos ``DID_-1 ..`` (at most ``effects``, as the package requires).
    switchers
        ``"both"`` (default), ``"in"`` (units starting untreated) or ``"out"`` (units
        starting treated, switching off).
    only_never_switchers
        Compare switchers with never-switchers only, not with not-yet-switchers.
    normalized
        Divide ``DID_l`` by the switchers' average cumulated treatment change (``DID^n_l``).
    weights
        Column of cell weights (the package's ``weight``).
    cluster
        Column of clusters containing units (None: the unit, the package's default).
    alpha
        Level of the normal intervals (the package's ``ci_level`` is ``100 (1 - alpha)``).

    Notes
    -----
    Terms: ``Effect_l`` (``event_time = l - 1``, the l-th period from the first switch),
    ``Placebo_l`` (``event_time = -1 - l``) and ``Av_tot_eff``, the average total effect per
    unit of treatment (the headline): the switchers' summed effects over their post-switch
    periods divided by their summed treatment changes. The reference period is
    ``F_g - 1`` (event time -1). Standard errors are the package's analytic ones:
    influence-function based, clustered by unit (or ``cluster``), with long differences
    demeaned within cohorts and its small-sample factor. Diagnostics hold the p-values of the
    joint tests (all effects zero, all placebos zero, all effects equal) and the average
    number of periods over which effects are accumulated. ``event_cov`` is the covariance
    of effects and placebos (the package's ``coef$vcov``).

    Identification: parallel trends of the status-quo outcome among units with the same
    baseline treatment, and no anticipation; effects may be heterogeneous and dynamic.
    Always-treated units (treated from the first period) are kept: they are the controls of
    switchers out. Estimation needs, within a baseline, units switching at different dates
    (or never).
    """

    outcome: str
    effects: int = 1
    placebo: int = 0
    switchers: str = "both"
    only_never_switchers: bool = False
    normalized: bool = False
    weights: str | None = None
    cluster: str | None = None
    alpha: float = 0.05
    label: str = "dcdh"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_count("effects", self.effects, minimum=1)
        check_count("placebo", self.placebo, minimum=0)
        if self.placebo > self.effects:
            raise OptionError(f"placebo={self.placebo} must not exceed effects={self.effects} "
                              "(did_multiplegt_dyn estimates at most as many placebos as "
                              "effects)")
        check_choice("switchers", self.switchers, SWITCHERS)
        for name in ("only_never_switchers", "normalized"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise OptionError(f"{name}={show(getattr(self, name))} must be true or false")
        check_alpha(self.alpha)
        for name in ("weights", "cluster"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or v in (D, self.outcome)):
                raise OptionError(f"{name}={show(v)} must be a column name other than "
                                  f"{D!r} and the outcome, or None")

    # -- fitting ---------------------------------------------------------------------------

    def _parts(self, des: _Design) -> dict[str, Any]:
        """Every effect and placebo for both directions (the package's two core calls)."""
        levels = np.unique(des.d_sq)
        l_g = des.l_g
        dirs = {"both": (1, 0), "in": (1,), "out": (0,)}[self.switchers]
        big_l = {}
        big_lpl = {}
        for inc in dirs:
            m = des.s == inc
            big_l[inc] = int(max(l_g[m].max(), 0)) if m.any() else 0
            lpl = np.where(des.f >= 3, np.minimum(l_g, des.f - 2), np.nan)[m]
            lpl = lpl[~np.isnan(lpl)]
            big_lpl[inc] = int(max(lpl.max(), 0)) if lpl.size else 0
        n_eff = min(max(big_l.values()), self.effects)
        if n_eff <= 0:
            raise EstimationError(
                "no effect can be estimated: no switcher "
                + ("" if self.switchers == "both" else f"{self.switchers} ")
                + "has a not-yet-switched unit with the same baseline treatment after its "
                "switch (de Chaisemartin-D'Haultfoeuille's design restriction)")
        n_pl = min(max(big_lpl.values()), self.placebo, self.effects) if self.placebo else 0
        eff: dict[int, list[_Part | None]] = {}
        pl: dict[int, list[_Part | None]] = {}
        for inc in (1, 0):
            if inc not in dirs or big_l[inc] == 0:
                continue
            for l in range(1, min(big_l[inc], self.effects) + 1):
                eff.setdefault(l, [None, None])[inc] = _part(
                    des, l, inc, False, self.only_never_switchers, levels)
            for l in range(1, min(big_lpl[inc], n_pl) + 1):
                pl.setdefault(l, [None, None])[inc] = _part(
                    des, l, inc, True, self.only_never_switchers, levels)
        return {"n_eff": n_eff, "n_pl": n_pl, "eff": eff, "pl": pl,
                "big_l": big_l}

    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate ``DID_l``, the placebos and the average total effect on ``panel``
        (``rng`` is not used: the standard errors are analytic)."""
        self.check()
        des = build_design(panel, self.outcome, self.weights, self.cluster)
        res = self._parts(des)
        g = float(des.n_groups)
        n_eff, n_pl = res["n_eff"], res["n_pl"]
        notes = list(des.notes)
        if n_eff < self.effects:
            notes.append(f"{n_eff} effect(s) estimable, {self.effects} asked: too few periods "
                         "after the switches (as did_multiplegt_dyn)")
        if self.placebo and n_pl < self.placebo:
            notes.append(f"{n_pl} placebo(s) estimable, {self.placebo} asked")

        def combine(parts: list[_Part | None]) -> dict[str, Any]:
            """The package's aggregation of switchers in (+) and out (-) for one l."""
            p0, p1 = parts            # indexed by direction: [out, in]
            n1 = p1.n_w if p1 is not None else 0.0
            n0 = p0.n_w if p0 is not None else 0.0
            tot = n1 + n0
            if tot == 0:
                return {"est": np.nan, "inf": np.zeros(des.n_groups), "ok": False,
                        "n_sw": 0, "n_obs": 0, "count": np.zeros_like(des.n),
                        "delta_norm": np.nan}
            u = np.zeros(des.n_groups)
            uv = np.zeros(des.n_groups)
            count1 = p1.count if p1 is not None else np.zeros_like(des.n)
            count0 = p0.count if p0 is not None else np.zeros_like(des.n)
            dn = 0.0
            for p, sign, wgt in ((p1, 1.0, n1 / tot), (p0, -1.0, n0 / tot)):
                if p is None:
                    continue
                u += wgt * sign * p.u
                uv += wgt * sign * p.u_var
                dn += wgt * p.delta_norm
            count = np.maximum(count1, count0)
            est = u.sum() / g
            inf = uv
            if self.normalized:
                est, inf = est / dn, inf / dn
            n_sw = sum(p.n_sw for p in (p1, p0) if p is not None)
            return {"est": est, "inf": inf, "ok": True, "n_sw": n_sw,
                    "n_obs": int((count > 0).sum()), "count": count, "delta_norm": dn}

        eff = [combine(res["eff"].get(l, [None, None])) for l in range(1, n_eff + 1)]
        pl = [combine(res["pl"].get(l, [None, None])) for l in range(1, n_pl + 1)]
        if not any(e["ok"] for e in eff):
            raise EstimationError("no effect can be estimated: no switcher has a comparison "
                                  "unit (de Chaisemartin-D'Haultfoeuille)")

        # average total effect per unit of treatment: per direction, the N_l-weighted sum of
        # the U_l over the N_l-weighted average treatment change; directions weighted by w_+
        av_parts: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
        for inc in (1, 0):
            parts = [res["eff"].get(l, [None, None])[inc] for l in range(1, n_eff + 1)]
            parts = [p for p in parts if p is not None]
            if not parts:
                continue
            s_n = sum(p.n_w for p in parts)
            den = sum(p.n_w / s_n * p.delta_d for p in parts)
            sign = 1.0 if inc == 1 else -1.0
            av_parts[inc] = (den * s_n, sign * sum(p.n_w / s_n * p.u for p in parts) / den,
                             sign * sum(p.n_w / s_n * p.u_var for p in parts) / den)
        d1 = av_parts[1][0] if 1 in av_parts else 0.0
        d0 = av_parts[0][0] if 0 in av_parts else 0.0
        w_plus = d1 / (d1 + d0)
        av_num = np.zeros(des.n_groups)
        av_var = np.zeros(des.n_groups)
        for inc, wgt in ((1, w_plus), (0, 1 - w_plus)):
            if inc in av_parts:
                av_num = av_num + wgt * av_parts[inc][1]
                av_var = av_var + wgt * av_parts[inc][2]
        av_est = av_num.sum() / g
        av_count = np.max(np.stack([e["count"] for e in eff]), axis=0)
        av = {"est": av_est, "inf": av_var, "ok": True,
              "n_sw": sum(e["n_sw"] for e in eff), "n_obs": int((av_count > 0).sum())}

        # standard errors and covariance (clustered sums of the influence parts)
        rows = [e for e in eff] + [p for p in pl]
        infl = np.column_stack([r["inf"] for r in rows] + [av["inf"]])
        csum = np.zeros((des.n_clusters, infl.shape[1]))
        np.add.at(csum, des.cluster, infl)
        vcov = csum.T @ csum / g ** 2
        se = np.sqrt(np.diag(vcov))
        ests = np.array([r["est"] for r in rows] + [av["est"]])
        oks = np.array([r["ok"] for r in rows] + [True])
        se = np.where(oks, se, np.nan)
        crit = critical_value(self.alpha, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            stat = ests / se
        pval = 2 * special.ndtr(-np.abs(stat))
        names = ([f"Effect_{l}" for l in range(1, n_eff + 1)]
                 + [f"Placebo_{l}" for l in range(1, n_pl + 1)] + ["Av_tot_eff"])
        ev = np.r_[np.arange(n_eff, dtype=float), -1.0 - np.arange(1, n_pl + 1), np.nan]
        ell = np.r_[np.arange(1, n_eff + 1), -np.arange(1, n_pl + 1), 0]
        terms = pd.DataFrame({
            "term": np.asarray(names, dtype=object), "estimate": ests, "std_error": se,
            "statistic": stat, "p_value": pval, "conf_low": ests - crit * se,
            "conf_high": ests + crit * se, "event_time": ev, "l": ell,
            "n_switchers": np.array([r["n_sw"] for r in rows] + [av["n_sw"]], dtype=float),
            "n_obs": np.array([r["n_obs"] for r in rows] + [av["n_obs"]], dtype=float),
        })
        k = len(rows)
        ev_names = [f"ev{int(e):+d}" for e in ev[:k]]
        event_cov = pd.DataFrame(vcov[:k, :k], index=ev_names, columns=ev_names)

        diagnostics: dict[str, float] = {"n_effects": float(n_eff), "n_placebos": float(n_pl)}
        v_e = vcov[:n_eff, :n_eff]
        b_e = ests[:n_eff]
        if n_eff >= 2 and oks[:n_eff].all():
            diagnostics["p_joint_effects"] = _chi2_p(b_e, v_e)
            dmat = np.eye(n_eff - 1, n_eff) - 1.0 / n_eff
            tv = dmat @ v_e @ dmat.T
            diagnostics["p_equal_effects"] = _chi2_p(dmat @ b_e, (tv + tv.T) / 2)
        if n_pl >= 2 and oks[n_eff:k].all():
            diagnostics["p_joint_placebos"] = _chi2_p(ests[n_eff:k], vcov[n_eff:k, n_eff:k])
        diagnostics["avg_periods_accumulated"] = self._periods_accumulated(des, res, n_eff)
        if not all(e["ok"] for e in eff):
            notes.append("effect(s) "
                         + ", ".join(str(i + 1) for i, e in enumerate(eff) if not e["ok"])
                         + " not estimable: no switcher or no control")
        h = len(names) - 1
        clus = self.cluster if des.clustered else UNIT
        return Estimate(
            estimator=self.label, term="Av_tot_eff", estimate=float(ests[h]),
            std_error=float(se[h]), p_value=float(pval[h]),
            conf_low=float(ests[h] - crit * se[h]), conf_high=float(ests[h] + crit * se[h]),
            alpha=self.alpha, n_obs=int((des.y_rows >= 0).sum()), n_units=des.n_groups,
            n_clusters=des.n_clusters,
            inference=f"analytic influence function (did_multiplegt_dyn), cluster({clus}), "
                      "normal",
            terms=terms, diagnostics=diagnostics, notes=tuple(notes), event_cov=event_cov)

    @staticmethod
    def _periods_accumulated(des: _Design, res: dict[str, Any], n_eff: int) -> float:
        """The package's ``delta_D_avg_total``: the average number of periods over which a
        switcher's treatment change is accumulated."""
        num = den = 0.0
        m_g = np.minimum(n_eff, des.l_g)
        gap = np.abs(np.nan_to_num(des.d) - des.d_sq[:, None])
        for l in range(1, n_eff + 1):
            for p in res["eff"].get(l, [None, None]):
                if p is None:
                    continue
                dd = np.where(p.dist, gap, 0.0)
                dd = np.where(dd == 0, 0.0, dd)
                num += float((dd * (m_g[:, None] - (l - 1))).sum())
                den += float(dd.sum())
        return num / den if den else float("nan")

    # -- truth ------------------------------------------------------------------------------

    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values on a simulated panel: each ``Effect_l`` is the switchers' average of
        ``y - y_sq`` at ``F_g - 1 + l`` (``y_sq``: the outcome had the unit kept its
        baseline treatment), over the switchers and with the weights the estimator uses;
        ``Av_tot_eff`` sums those over ``l`` and divides by the summed treatment changes;
        placebos are the same averages at ``F_g - 1 - l`` minus ``F_g - 1`` (zero without
        anticipation). ``y_sq`` is the column ``ysq_<outcome>`` when the simulator gives it,
        else ``y0_<outcome>`` for units starting untreated (switchers out then need
        ``ysq_<outcome>``). Keys ``ev+k`` repeat the effects by event time."""
        self.check()
        des = build_design(panel, self.outcome, self.weights, self.cluster)
        res = self._parts(des)
        n_eff, n_pl = res["n_eff"], res["n_pl"]
        sq_col, y0_col = f"ysq_{self.outcome}", f"y0_{self.outcome}"
        if sq_col in panel.columns:
            sq = panel[sq_col].to_numpy(dtype=float)
            ysq = np.where(des.y_rows >= 0, sq[np.maximum(des.y_rows, 0)], np.nan)
        elif y0_col in panel.columns:
            y0 = panel[y0_col].to_numpy(dtype=float)
            ysq = np.where(des.y_rows >= 0, y0[np.maximum(des.y_rows, 0)], np.nan)
            ysq[des.d_sq != 0] = np.nan     # y0 is the status quo of units starting untreated
        else:
            raise EstimationError(f"the truth needs {y0_col!r} or {sq_col!r} (simulated panels)")
        yy = np.where(des.y_rows >= 0, panel[self.outcome].to_numpy(dtype=float)[
            np.maximum(des.y_rows, 0)], np.nan)
        gap_eff = yy - ysq                                       # effect of the actual path
        gap_d = np.abs(np.nan_to_num(des.d) - des.d_sq[:, None])
        out: dict[str, float] = {}
        tot_num = tot_den = 0.0
        for l in range(1, n_eff + 1):
            num = den = 0.0
            for inc, p in enumerate(res["eff"].get(l, [None, None])):
                if p is None:
                    continue
                sign = 1.0 if inc == 1 else -1.0
                vals = gap_eff[p.dist]
                if np.isnan(vals).any():
                    raise EstimationError(f"the truth of switchers {'in' if inc else 'out'} "
                                          f"needs {sq_col!r} (their status-quo outcome)")
                num += sign * float((des.n[p.dist] * vals).sum())
                den += p.n_w
                tot_den += float((des.n[p.dist] * gap_d[p.dist]).sum())
            tot_num += num
            v = num / den if den else float("nan")
            if self.normalized:
                dn = sum(p.n_w * p.delta_norm for p in res["eff"].get(l, [None, None])
                         if p is not None) / den if den else float("nan")
                v = v / dn
            out[f"Effect_{l}"] = v
            out[f"ev{l - 1:+d}"] = v
        for l in range(1, n_pl + 1):
            num = den = 0.0
            for inc, p in enumerate(res["pl"].get(l, [None, None])):
                if p is None:
                    continue
                sign = 1.0 if inc == 1 else -1.0
                gi, ti = np.nonzero(p.dist)
                a = gap_eff[gi, ti - 2 * l] - gap_eff[gi, ti - l]   # F_g-1-l minus F_g-1
                a = np.where(np.isnan(a) & (des.d_sq[gi] != 0), 0.0, a)
                num += sign * float((des.n[gi, ti] * a).sum())
                den += p.n_w
            out[f"Placebo_{l}"] = num / den if den else float("nan")
            out[f"ev{-1 - l:+d}"] = out[f"Placebo_{l}"]
        out["Av_tot_eff"] = tot_num / tot_den if tot_den else float("nan")
        return out


def _chi2_p(b: np.ndarray, v: np.ndarray) -> float:
    """p-value of the Wald test ``b = 0`` (chi-squared with ``len(b)`` df), the package's
    generalised inverse where ``v`` is singular."""
    try:
        inv = np.linalg.inv(v)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(v)
    stat = float(b @ inv @ b)
    return float(special.chdtrc(b.size, stat))
