"""Extended two-way fixed effects (Wooldridge 2021, 2023): saturated cohort x period
treatment interactions, linear or Poisson, aggregated as R ``etwfe::emfx``.

The regression
--------------
Wooldridge (2021, "Two-way fixed effects, the two-way Mundlak regression, and
difference-in-differences estimators") shows that TWFE is unbiased under staggered adoption
with heterogeneous and dynamic effects once the single treatment dummy is replaced by one
dummy per treated cohort-period cell ``D_it 1{G_i = g} 1{t = s}``: each cell gets its own
coefficient, so no already-treated cell is used as a comparison. With the default
not-yet-treated comparison (``control_group="notyettreated"``) only post-treatment cells
``s >= g`` get a dummy, and every untreated observation -- never treated and not yet treated
-- identifies the cohort and period effects (the estimator then equals the imputation
estimator of Borusyak, Jaravel and Spiess). With ``control_group="nevertreated"`` every cell
of a treated cohort except its period ``g - 1`` gets a dummy (a saturated event study
against the never treated, pre-period cells being placebo estimates).

Controls ``x`` enter as Wooldridge's covariate extension and R ``etwfe``: cohort- and
period-specific slopes (``x 1{G = g}``, ``x 1{t = s}``) beside the fixed effects, and
``D_gs (x_i - xbar_g)`` in every cell, ``xbar_g`` the cohort mean of ``x``, so that the cell
coefficient is the cell's effect at its cohort's covariate mean.

Nonlinear (``family="poisson"``, Wooldridge 2023, Econometrics Journal 26(3)): the same
index inside ``exp()``, fitted by Poisson quasi-maximum likelihood with cohort and period
dummies (the linear model takes unit effects by default, ``fe``). Ratio (not additive) parallel trends: for a positive, skewed outcome such as
emissions in levels, the untreated mean is ``exp(a_g + l_t + ...)``. The effect of a treated
observation is ``exp(eta_it) - exp(eta_it - cell terms)``, the difference of predicted means
with and without the treatment (emfx's ``type = "response"``).

Aggregations (``etwfe::emfx``)
------------------------------
Each treated observation's effect is averaged, with equal weight per observation, within a
cell (``ATT(g,t)``), an event time (``ev+e``), a cohort (``group:g``), a period
(``calendar:t``) or over all post-treatment cells (``ATT``). Standard errors are by the
delta method from the cluster-robust covariance of every parameter (for Poisson the cohort
and period effects included, as ``etwfe(..., fe = "none")`` with ``emfx``). The overall
``ATT_dynamic`` (mean of ``ev+e``, e >= 0), ``ATT_group`` (cohort effects weighted by
cohort size) and ``ATT_calendar`` (mean over periods) follow R ``did::aggte``, as
:class:`~estimators.callaway_santanna.CallawaySantAnna`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import FEArrays, codes_of, event_time, fe_arrays
from .fe import Dof, cluster_scores, reference_df, ssc_factor, _identified
from .panel import (COHORT, D, TIME, UNIT, EstimationError, OptionError, PanelError,
                    check_choice, check_panel, excluding_always_treated)
from .regression import InferenceOptions, fit_fe
from .result import Estimate, critical_value, terms_frame

#: comparison groups (R did's spelling): not-yet-treated is etwfe's default ("notyet")
CONTROL_GROUPS = ("notyettreated", "nevertreated")
FAMILIES = ("linear", "poisson")
#: fixed effects beside the period effects: unit, or cohort (etwfe's default, ivar = NULL)
FIXED_EFFECTS = ("cohort", "unit")
#: headline aggregation -> headline term (the names of staggered_truth and CS)
AGGREGATIONS = {"simple": "ATT", "event": "ATT_dynamic", "group": "ATT_group",
                "calendar": "ATT_calendar"}
_RESERVED = (UNIT, TIME, COHORT, D)

#: Poisson QMLE: relative deviance change at which IRLS stops, and its iteration cap
POISSON_TOL = 1e-13
POISSON_MAX_ITER = 200


@dataclass(frozen=True)
class _Design:
    """The estimation rows and the saturated treatment design, shared by both families."""

    data: pd.DataFrame          # estimation rows
    cohort: np.ndarray          # (n,) cohort of each row, 0 for the comparison cohort
    time: np.ndarray            # (n,) period
    rel: np.ndarray             # (n,) event time in periods (NaN for the comparison)
    cells: list[tuple[int, int]]   # (cohort, period) with a dummy, in order
    cell_rel: np.ndarray        # (n_cells,) event time of each cell
    cell_of: np.ndarray         # (n,) index of the row's cell, -1 if none
    dev: np.ndarray             # (n, n_controls) x - cohort mean of x
    x: np.ndarray               # (n, n_controls) controls
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ETWFE(InferenceOptions):
    """Extended two-way fixed effects (Wooldridge 2021; Poisson: Wooldridge 2023), as R
    ``etwfe``: one treatment coefficient per treated cohort x period cell, aggregated by
    the delta method as ``etwfe::emfx``.

    Parameters
    ----------
    outcome
        Outcome column; with ``family="poisson"`` non-negative (levels, not logs).
    controls
        Covariates: cohort- and period-specific slopes, and cohort-demeaned interactions
        with every treatment cell (etwfe's ``y ~ x``).
    control_group
        ``"notyettreated"`` (default, etwfe's ``cgroup = "notyet"``): every untreated
        observation is a comparison and only post-treatment cells get a dummy; without a
        never-treated unit the last cohort is the comparison and the periods from its
        treatment on are dropped. ``"nevertreated"`` (``cgroup = "never"``): every period of
        a treated cohort except ``g - 1`` gets a dummy; the pre-period cells are placebo
        estimates reported as negative event times.
    family
        ``"linear"`` (least squares) or ``"poisson"`` (Poisson QMLE with cohort and period
        effects; ATTs are differences of predicted means).
    fe
        Fixed effects beside the period effects: ``"unit"`` or ``"cohort"`` (etwfe's
        default, ``ivar = NULL``); ``None`` (default) takes unit effects for the linear
        model and cohort effects for Poisson, the only choice there. Without controls, or
        with time-invariant ones, in a balanced panel the two give the same estimates (the
        two-way Mundlak equivalence); with time-varying controls cohort effects leave the
        units' own levels in the error, correlated with the controls, and the estimates
        differ: unit effects are Wooldridge's (2021) fixed-effects estimator and etwfe's
        ``ivar = <unit>``.
    aggregation
        Headline: ``"simple"`` (``ATT``, every treated observation weighted equally),
        ``"event"`` (``ATT_dynamic``, mean of the event-time effects e >= 0), ``"group"``
        (``ATT_group``) or ``"calendar"`` (``ATT_calendar``). Every aggregation's detail
        is in ``terms`` whatever the headline.
    cluster, se, ssc, dist, alpha
        Inference, keyword only (:class:`~estimators.regression.InferenceOptions`):
        cluster-robust by unit with Stata's / fixest's small-sample factor and t(G-1) by
        default. Poisson offers ``se="cluster"`` or ``"robust"``.

    Notes
    -----
    Identification: (linear) parallel trends of the untreated outcome, or (Poisson) parallel
    trends of its logarithm of the mean, and no anticipation (with not-yet-treated
    comparisons in every pre-treatment period). SEs treat the aggregation weights (the
    cells' observation counts) as fixed, as emfx does.

    Pinned to R etwfe 0.4.0 / marginaleffects 0.18.0 / fixest 0.12.2 on ``mpdta``
    (``tests/test_etwfe.py``). etwfe's default ``fe = "vs"`` gives the same estimates;
    its SEs differ because fixest counts one redundant varying slope in the small-sample
    factor (linear) and because the delta method there holds the absorbed cohort and
    period effects fixed (Poisson); ``fe = "none"`` is the reference here.
    """

    outcome: str
    controls: Sequence[str] = ()
    control_group: str = "notyettreated"
    family: str = "linear"
    fe: str | None = None
    aggregation: str = "simple"
    label: str = "etwfe"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self.check_inference()
        check_choice("control_group", self.control_group, CONTROL_GROUPS)
        check_choice("family", self.family, FAMILIES)
        if self.fe is not None:
            check_choice("fe", self.fe, FIXED_EFFECTS)
        check_choice("aggregation", self.aggregation, tuple(AGGREGATIONS))
        controls = tuple(self.controls)
        bad = [c for c in controls if c in (*_RESERVED, self.outcome)]
        if bad:
            raise OptionError(f"controls={list(controls)} must not include {bad[0]!r} (the "
                              "outcome or a panel key)")
        if len(set(controls)) != len(controls):
            raise OptionError(f"controls={list(controls)} names a column twice")
        if self.family == "poisson":
            if self.fe == "unit":
                raise OptionError(f"fe={self.fe!r} is not accepted with family='poisson'; use "
                                  "fe='cohort' or None (pooled Poisson with cohort dummies, "
                                  "Wooldridge 2023, as etwfe)")
            if self.se == "conventional":
                raise OptionError("se='conventional' is not accepted with family='poisson': "
                                  "a Poisson QMLE needs se='cluster' or 'robust'")

    @property
    def fixed_effects(self) -> str:
        """The fixed effects used: ``fe``, or by default unit effects for the linear model
        and cohort effects for Poisson."""
        if self.fe is not None:
            return self.fe
        return "unit" if self.family == "linear" else "cohort"

    # --- the design ------------------------------------------------------------------------

    def _design(self, panel: pd.DataFrame) -> _Design:
        controls = tuple(self.controls)
        _, _, _, arrays = check_panel(panel, (self.outcome,), controls)
        notes: list[str] = []
        time_all = arrays[TIME]
        cohort_all = arrays[COHORT].copy()
        last = time_all.max()
        late = cohort_all > last
        if late.any():  # treated after the sample: never treated within it (as R did)
            n_late = np.unique(panel[UNIT].to_numpy()[late]).size
            notes.append(f"{n_late} unit(s) first treated after the last period ({last:g}) "
                         "are never treated in the sample")
            cohort_all[late] = 0
        if self.family == "poisson":
            y = arrays[self.outcome]
            if (y < 0).any():
                raise EstimationError(f"family='poisson' needs a non-negative outcome: "
                                      f"{self.outcome!r} has {int((y < 0).sum())} negative "
                                      "value(s); use levels (not logs) or family='linear'")
        # cohort means of the controls over every row of the cohort (as etwfe's demean)
        xall = (np.column_stack([arrays[c] for c in controls]) if controls
                else np.empty((len(panel), 0)))
        ccode, n_coh = codes_of(cohort_all)
        cnt = np.bincount(ccode, minlength=n_coh).astype(float)
        means = np.column_stack([np.bincount(ccode, weights=xall[:, j], minlength=n_coh)
                                 for j in range(xall.shape[1])]) / cnt[:, None] \
            if controls else np.empty((n_coh, 0))
        devall = xall - means[ccode]
        keep = np.ones(len(panel), dtype=bool)
        if not (cohort_all == 0).any():
            if self.control_group == "nevertreated":
                raise EstimationError("control_group='nevertreated' needs never-treated units "
                                      "and the panel has none; use control_group="
                                      "'notyettreated'")
            gref = cohort_all.max()
            keep = time_all < gref
            notes.append(f"no never-treated unit: the last cohort ({gref:g}) is the comparison "
                         f"and the periods from {gref:g} on are dropped")
            cohort_all = np.where(cohort_all == gref, 0, cohort_all)
        data = panel.loc[keep] if not keep.all() else panel
        cohort = cohort_all[keep]
        time = time_all[keep]
        data = data.assign(**{COHORT: cohort})  # the comparison cohort coded 0
        rel = event_time(data)
        if self.control_group == "notyettreated":
            has = (cohort > 0) & (rel >= 0)
        else:
            has = (cohort > 0) & (rel != -1)
        if not ((cohort > 0) & (rel >= 0)).any():
            raise EstimationError("no treated cohort has a post-treatment period to estimate")
        key = np.column_stack([cohort[has], time[has]])
        cells_arr, inv = np.unique(key, axis=0, return_inverse=True)
        cells = [(int(g), int(t)) for g, t in cells_arr]
        cell_of = np.full(len(data), -1)
        cell_of[has] = inv.ravel()
        cell_rel = np.zeros(len(cells))
        cell_rel[inv.ravel()] = rel[has]
        return _Design(data, cohort, time, rel, cells, cell_rel, cell_of, devall[keep],
                       xall[keep], tuple(notes))

    def _columns(self, des: _Design) -> tuple[np.ndarray, list[str], int]:
        """Treatment columns (cells, then cells x demeaned controls) and the controls'
        cohort and period slopes; returns the matrix, names and the number of treatment
        columns (they come first, so collinearity drops a slope before a cell)."""
        n, nc = len(des.data), len(des.cells)
        controls = tuple(self.controls)
        k = len(controls)
        rows = np.flatnonzero(des.cell_of >= 0)
        c = des.cell_of[rows]
        treat = np.zeros((n, nc * (1 + k)))
        treat[rows, c] = 1.0
        for j in range(k):
            treat[rows, nc * (1 + j) + c] = des.dev[rows, j]
        names = [f"cell:{g}:{t}" for g, t in des.cells]
        names += [f"cell:{g}:{t}:{x}" for x in controls for g, t in des.cells]
        slopes, snames = [], []
        if k:
            coh_levels = np.unique(des.cohort)
            t_levels = np.unique(des.time)
            for j, x in enumerate(controls):
                for g in coh_levels:
                    slopes.append(des.x[:, j] * (des.cohort == g))
                    snames.append(f"{x}:cohort{g:g}")
                for t in t_levels[1:]:
                    slopes.append(des.x[:, j] * (des.time == t))
                    snames.append(f"{x}:time{t:g}")
        cols = np.column_stack([treat, *slopes]) if slopes else treat
        return cols, names + snames, treat.shape[1]

    # --- fit -------------------------------------------------------------------------------

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the cell ATTs and their aggregations (see the class docstring); ``rng``
        is not used."""
        self.check()
        des = self._design(panel)
        cols, names, n_treat = self._columns(des)
        if self.family == "linear":
            coef, cov, keep, df, dof_n, extra = self._fit_linear(des, cols, names)
            per_row = None
        else:
            coef, cov, keep, df, dof_n, extra, per_row = self._fit_poisson(des, cols, names)
        return self._aggregate(des, names, n_treat, coef, cov, keep, df, dof_n, extra,
                               per_row)

    def _clusters(self, data: pd.DataFrame) -> tuple[np.ndarray | None, int]:
        cluster = self.cluster_column
        if cluster is None:
            return None, 0
        if cluster not in data.columns:
            raise PanelError(f"cluster column {cluster!r} is not in the panel; columns: "
                             f"{list(data.columns)[:20]}")
        return codes_of(data[cluster].to_numpy())

    def _fit_linear(self, des: _Design, cols: np.ndarray, names: list[str]):
        data = des.data
        if self.fixed_effects == "unit":
            arrays = fe_arrays(data, self.outcome, (), cluster=self.cluster_column,
                               extra=dict(zip(names, cols.T)), validate=False)
        else:  # cohort and period effects: the two-way kernels with cohorts as the "units"
            coh, n_coh = codes_of(des.cohort)
            tcode, n_t = codes_of(des.time)
            clusters, n_cl = self._clusters(data)
            arrays = FEArrays(data[self.outcome].to_numpy(dtype=float), cols, tuple(names),
                              coh, tcode, n_coh, n_t, False, clusters, n_cl, None)
        res = fit_fe(arrays, self.se, self.ssc, self.dist)
        n_units = np.unique(data[UNIT].to_numpy()).size
        return (res.fit.coef, res.cov, res.fit.keep, res.df,
                (res.dof.n_obs, n_units, res.dof.n_clusters),
                {"r2": res.r2})

    def _fit_poisson(self, des: _Design, cols: np.ndarray, names: list[str]):
        data = des.data
        y = data[self.outcome].to_numpy(dtype=float)
        coh, n_coh = codes_of(des.cohort)
        tcode, n_t = codes_of(des.time)
        n = y.size
        fe = np.zeros((n, n_coh + n_t - 1))
        fe[np.arange(n), coh] = 1.0
        r = np.flatnonzero(tcode > 0)
        fe[r, n_coh + tcode[r] - 1] = 1.0
        # a cell, cohort or period whose outcomes are all zero has an estimate at -infinity
        # (separation): refuse it rather than report a non-converged number
        cell_sum = np.bincount(des.cell_of[des.cell_of >= 0], weights=y[des.cell_of >= 0],
                               minlength=len(des.cells))
        if (cell_sum <= 0).any():
            g, t = des.cells[int(np.flatnonzero(cell_sum <= 0)[0])]
            raise EstimationError(f"the outcome is zero in every observation of cohort {g} "
                                  f"in period {t}: its Poisson effect is not identified "
                                  "(separation)")
        for codes, m, what in ((coh, n_coh, "cohort"), (tcode, n_t, "period")):
            s = np.bincount(codes, weights=y, minlength=m)
            if (s <= 0).any():
                raise EstimationError(f"the outcome is zero in every observation of a {what}: "
                                      "its Poisson effect is not identified (separation)")
        xall = np.column_stack([cols, fe])
        keep, _ = _identified(xall, xall, None)
        x = xall[:, keep]
        theta, mu, iters = poisson_irls(y, x)
        clusters, n_cl = self._clusters(data)
        p = x.shape[1]
        bread = np.linalg.inv(x.T @ (x * mu[:, None]))
        scores = x * (y - mu)[:, None]
        # every parameter (dummies included) is a coefficient here, so the small-sample K
        # is p: a Dof with a single nested "unit" and "period" gives k_stata = k_full = p,
        # fixest's count for etwfe(..., family = "poisson", fe = "none")
        dof = Dof(n_obs=n, k=p - 1, n_units=1, n_periods=1, n_clusters=n_cl,
                  unit_nested=True, time_nested=True)
        if self.se == "cluster":
            meat_s = cluster_scores(scores, clusters, n_cl)
        else:
            meat_s = scores
        cov = ssc_factor(self.se, self.ssc, dof) * (bread @ (meat_s.T @ meat_s) @ bread)
        df = reference_df(self.se, self.dist, dof)
        n_units = np.unique(data[UNIT].to_numpy()).size
        # the design and index of every row: the response-scale effects need both
        return (theta, cov, keep, df, (n, n_units, n_cl), {"iterations": float(iters)},
                (x, x @ theta))

    # --- aggregation -----------------------------------------------------------------------

    def _aggregate(self, des, names, n_treat, coef, cov, keep, df, counts, extra, per_row):
        nc = len(des.cells)
        k = len(tuple(self.controls))
        kept_idx = np.cumsum(keep) - 1          # position among identified parameters
        for j in range(nc):
            if not keep[j]:
                g, t = des.cells[j]
                raise EstimationError(f"the effect of cohort {g} in period {t} is not "
                                      "identified (collinear with the fixed effects and "
                                      "other cells)")
        rows = np.flatnonzero(des.cell_of >= 0)
        c = des.cell_of[rows]
        n_par = int(keep.sum())
        # effect of each treated row and its gradient over the identified parameters
        grad = np.zeros((rows.size, n_par))
        grad[np.arange(rows.size), kept_idx[c]] = 1.0
        for j in range(k):
            cidx = nc * (1 + j) + c
            ok = keep[cidx]
            grad[np.flatnonzero(ok), kept_idx[cidx[ok]]] = des.dev[rows[ok], j]
        if per_row is None:  # linear: the effect is the gradient times the coefficients
            tau = grad @ coef
            jac = grad
        else:
            x, eta = per_row
            lin = grad @ coef                     # treatment part of the index
            mu1 = np.exp(eta[rows])
            mu0 = np.exp(eta[rows] - lin)
            tau = mu1 - mu0
            x0 = x[rows] - grad                   # the row's design without the treatment
            jac = mu1[:, None] * x[rows] - mu0[:, None] * x0
        rel = des.rel[rows]
        g_row = des.cohort[rows]
        t_row = des.time[rows]
        post = rel >= 0

        labels: list[str] = []
        aggs: list[str] = []
        ev_time: list[float] = []
        masks: list[np.ndarray] = []

        def add(label: str, agg: str, mask: np.ndarray, e: float = np.nan) -> None:
            labels.append(label)
            aggs.append(agg)
            ev_time.append(e)
            masks.append(mask)

        for j, (g, t) in enumerate(des.cells):
            add(f"ATT({g},{t})", "group_time", c == j)
        events = np.unique(rel)
        for e in events:
            add(f"ev{int(e):+d}", "event", rel == e, float(e))
        groups = np.unique(g_row[post])
        for g in groups:
            add(f"group:{g:g}", "group", post & (g_row == g))
        periods = np.unique(t_row[post])
        for t in periods:
            add(f"calendar:{t:g}", "calendar", post & (t_row == t))
        add("ATT", "simple", post)
        m = np.vstack(masks).astype(float)
        m /= m.sum(axis=1, keepdims=True)
        est = m @ tau
        wj = m @ jac                                  # (terms, params)
        # overall aggregations: linear in the terms above
        n_base = len(labels)
        lab = np.array(labels)
        agg = np.array(aggs)
        ev_post = np.flatnonzero((agg == "event") & (np.array(ev_time) >= 0))
        grp = np.flatnonzero(agg == "group")
        cal = np.flatnonzero(agg == "calendar")
        units = des.data[UNIT].to_numpy()
        sizes = np.array([np.unique(units[des.cohort == g]).size for g in groups], float)
        over = np.zeros((3, n_base))
        over[0, ev_post] = 1.0 / ev_post.size
        over[1, grp] = sizes / sizes.sum()
        over[2, cal] = 1.0 / cal.size
        est = np.r_[est, over @ est]
        wj = np.vstack([wj, over @ wj])
        labels += ["ATT_dynamic", "ATT_group", "ATT_calendar"]
        aggs += ["event", "group", "calendar"]
        ev_time += [np.nan] * 3
        vc = wj @ cov @ wj.T
        se = np.sqrt(np.clip(np.diag(vc), 0, None))
        terms = terms_frame(labels, est, se, self.alpha, df, aggregation=np.array(aggs),
                            event_time=np.array(ev_time, dtype=float))
        head = labels.index(AGGREGATIONS[self.aggregation])
        crit = critical_value(self.alpha, df)
        ev_idx = np.flatnonzero(agg == "event")
        ev_idx = ev_idx[~np.isnan(np.array(ev_time)[ev_idx])]
        ev_names = [labels[i] for i in ev_idx]
        event_cov = pd.DataFrame(vc[np.ix_(ev_idx, ev_idx)], index=ev_names, columns=ev_names)
        diagnostics = {"n_cells": float(nc), **extra}
        pre = np.flatnonzero(des.cell_rel < 0)   # the first nc terms are the cells
        if pre.size:  # joint test of the placebo (pre-period) cells, as a Wald F
            v = vc[np.ix_(pre, pre)]
            b = est[pre]
            stat = float(b @ np.linalg.solve(v, b)) / len(pre)
            diagnostics["pretrend_F"] = stat
            diagnostics["pretrend_df1"] = float(len(pre))
            diagnostics["pretrend_p"] = float(
                special.chdtrc(len(pre), stat * len(pre)) if df is None
                else special.fdtrc(len(pre), df, stat))
        n_obs, n_units, n_cl = counts
        how = (f"{self.fixed_effects} and period effects; " + self.describe_inference(df)
               + ", delta method")
        if self.family == "poisson":
            how = "Poisson QMLE, " + how + " over every parameter"
        return Estimate(
            estimator=self.label, term=labels[head], estimate=float(est[head]),
            std_error=float(se[head]), p_value=float(terms["p_value"].iloc[head]),
            conf_low=float(est[head] - crit * se[head]),
            conf_high=float(est[head] + crit * se[head]), alpha=self.alpha, n_obs=int(n_obs),
            n_units=int(n_units), n_clusters=int(n_cl), inference=how, terms=terms,
            diagnostics=diagnostics, notes=des.notes, event_cov=event_cov)

    # --- truth -----------------------------------------------------------------------------

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values on a simulated panel (``te_<outcome>``): every term averaged over the
        same treated observations as the estimate (placebo event times relative to the
        period before treatment)."""
        col = f"te_{self.outcome}"
        if col not in panel.columns:
            raise EstimationError(f"no truth column {col!r}: the estimand needs a simulated "
                                  "panel")
        des = self._design(panel)
        te = des.data[col].to_numpy(dtype=float)
        rows = np.flatnonzero(des.cell_of >= 0)
        rel, g_row, t_row = des.rel[rows], des.cohort[rows], des.time[rows]
        tau = te[rows]
        post = rel >= 0
        out = {"ATT": float(tau[post].mean())}
        ev = {}
        for e in np.unique(rel):
            ev[int(e)] = float(tau[rel == e].mean())
        if self.control_group == "nevertreated":  # pre cells compare with period g - 1
            base_rows = (des.cohort > 0) & (des.rel == -1)
            base = float(te[base_rows].mean()) if base_rows.any() else 0.0
            ev = {e: (v - base if e < 0 else v) for e, v in ev.items()}
        out.update({f"ev{e:+d}": v for e, v in ev.items()})
        out["ATT_dynamic"] = float(np.mean([v for e, v in ev.items() if e >= 0]))
        units = des.data[UNIT].to_numpy()
        groups = np.unique(g_row[post])
        sizes = np.array([np.unique(units[des.cohort == g]).size for g in groups], float)
        by_g = np.array([tau[post & (g_row == g)].mean() for g in groups])
        out["ATT_group"] = float(by_g @ sizes / sizes.sum())
        out["ATT_calendar"] = float(np.mean([tau[post & (t_row == t)].mean()
                                             for t in np.unique(t_row[post])]))
        return out


def poisson_irls(y: np.ndarray, x: np.ndarray, tol: float = POISSON_TOL,
                 max_iter: int = POISSON_MAX_ITER) -> tuple[np.ndarray, np.ndarray, int]:
    """Poisson quasi-maximum likelihood by iteratively reweighted least squares.

    Newton's method on the Poisson log likelihood (log link), started as R's ``glm``
    (``mu = y + 0.1``), with step halving whenever the deviance would rise. It stops when
    the relative change of the deviance falls below ``tol`` and then takes one more
    Newton step (the coefficients are then at machine precision of the score equations).

    Parameters
    ----------
    y
        ``(n,)`` non-negative outcome.
    x
        ``(n, p)`` full-rank design (dummies included).

    Returns
    -------
    theta, mu, iterations
    """
    def deviance(mu: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(y > 0, y * np.log(y / mu), 0.0)
        return float(2 * np.sum(t - (y - mu)))

    mu = y + 0.1
    eta = np.log(mu)
    theta = None
    dev = deviance(mu)
    converged = False
    for it in range(1, max_iter + 1):
        z = eta + (y - mu) / mu
        xw = x * mu[:, None]
        new = np.linalg.solve(x.T @ xw, xw.T @ z)
        if theta is not None:
            step = new - theta
            for _ in range(50):  # step halving: the deviance must not rise
                cand_eta = x @ (theta + step)
                cand_mu = np.exp(cand_eta)
                cand_dev = deviance(cand_mu)
                if np.isfinite(cand_dev) and cand_dev <= dev * (1 + 1e-12):
                    break
                step = step / 2
            new = theta + step
        theta = new
        eta = x @ theta
        if not np.isfinite(eta).all() or eta.max() > 700:
            raise EstimationError("the Poisson fit diverged (fitted means overflow); check "
                                  "the outcome's scale and for separation")
        mu = np.exp(eta)
        new_dev = deviance(mu)
        if converged:
            return theta, mu, it
        if abs(new_dev - dev) <= tol * (abs(new_dev) + 0.1):
            converged = True   # one more Newton step polishes the coefficients
        dev = new_dev
    raise EstimationError(f"the Poisson fit did not converge in {max_iter} iterations")


__all__ = ["AGGREGATIONS", "CONTROL_GROUPS", "ETWFE", "FAMILIES", "FIXED_EFFECTS",
           "poisson_irls"]
