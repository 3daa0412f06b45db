"""Borusyak, Jaravel and Spiess (2024) imputation estimator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import codes_of, event_time, fe_arrays
from .panel import (excluding_always_treated, COHORT, D, TIME, UNIT, EstimationError, OptionError, check_alpha,
                    check_count, check_panel)
from .result import Estimate, critical_value, p_value
from .regression import fit_fe
from .fe import cluster_scores_of, group_sums, use_fast


def _fe_design(unit: np.ndarray, time: np.ndarray, n_units: int, n_periods: int,
               x: np.ndarray) -> np.ndarray:
    """Dense [unit dummies, period dummies (first dropped), covariates] matrix."""
    z = np.zeros((unit.size, n_units + n_periods - 1 + x.shape[1]))
    z[np.arange(unit.size), unit] = 1.0
    rows = np.flatnonzero(time > 0)
    z[rows, n_units + time[rows] - 1] = 1.0
    if x.shape[1]:
        z[:, n_units + n_periods - 1:] = x
    return z


def _sums(codes: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """``(n, m)`` sums of the rows of ``w`` ``(N, m)`` by code (one compiled pass on large
    panels, a bincount per column otherwise)."""
    if use_fast(codes.size) and w.shape[1] > 1:
        return group_sums(w, codes, n)
    out = np.empty((n, w.shape[1]))
    for j in range(w.shape[1]):
        out[:, j] = np.bincount(codes, weights=w[:, j], minlength=n)
    return out


class _TwoWay:
    """The untreated-observation regression of ``y`` on unit effects, period effects and
    covariates, solved without dense dummies.

    The unit block of the normal equations is diagonal (each unit's number of untreated
    observations), so it is eliminated exactly (a Schur complement): only a
    ``(periods - 1 + covariates)``-square system is solved densely. The period dummies are
    never built either: their cross-products are counts (``bincount`` of the period codes)
    and their fitted values a gather of the period effects. Memory and time are linear in
    the rows; the dense dummy regression (``Imputation(fast=False)``) is kept as the
    reference path, and tests pin the two together.

    The rows are split once into the untreated (``0``) and treated (``1``) parts; methods
    take ``part`` to say which rows they read.
    """

    def __init__(self, unit: np.ndarray, time: np.ndarray, x: np.ndarray, n_units: int,
                 n_periods: int, untreated: np.ndarray) -> None:
        self.n_units, self.n_periods, self.k = n_units, n_periods, x.shape[1]
        treated = ~untreated
        self.parts = {0: (unit[untreated], time[untreated], x[untreated]),
                      1: (unit[treated], time[treated], x[treated])}
        u0, t0, x0 = self.parts[0]
        q = n_periods - 1 + self.k
        self.a = np.bincount(u0, minlength=n_units).astype(float)       # D0'D0 (diagonal)
        # D0'P0 with P = [period dummies (first dropped), covariates]: (n_units, q)
        b = np.zeros((n_units, q))
        if n_periods > 1:
            tab = np.bincount(u0 * n_periods + t0, minlength=n_units * n_periods)
            b[:, :n_periods - 1] = tab.reshape(n_units, n_periods)[:, 1:]
        if self.k:
            b[:, n_periods - 1:] = _sums(u0, x0, n_units)
        self.b = b
        # P0'P0: diagonal period counts, period x covariate sums, covariate cross-products
        ptp = np.zeros((q, q))
        cnt_t = np.bincount(t0, minlength=n_periods).astype(float)
        ptp[np.arange(n_periods - 1), np.arange(n_periods - 1)] = cnt_t[1:]
        if self.k:
            tx = _sums(t0, x0, n_periods)[1:]
            ptp[:n_periods - 1, n_periods - 1:] = tx
            ptp[n_periods - 1:, :n_periods - 1] = tx.T
            ptp[n_periods - 1:, n_periods - 1:] = x0.T @ x0
        ainv = np.where(self.a > 0, 1.0 / np.where(self.a > 0, self.a, 1.0), 0.0)
        self.ainv = ainv
        schur = ptp - b.T @ (ainv[:, None] * b)
        self.schur_pinv = np.linalg.pinv(schur)

    def crossprod(self, part: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Z[part]' w`` split into its unit block and the rest, for ``w`` of (rows, m)."""
        u, t, x = self.parts[part]
        ca = _sums(u, w, self.n_units)
        cp = np.empty((self.n_periods - 1 + self.k, w.shape[1]))
        cp[:self.n_periods - 1] = _sums(t, w, self.n_periods)[1:]
        if self.k:
            cp[self.n_periods - 1:] = x.T @ w
        return ca, cp

    def solve(self, ca: np.ndarray, cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Z0'Z0)^+ [ca; cp]`` by eliminating the diagonal unit block."""
        gp = self.schur_pinv @ (cp - self.b.T @ (self.ainv[:, None] * ca))
        ga = self.ainv[:, None] * (ca - self.b @ gp)
        return ga, gp

    def apply(self, part: int, ga: np.ndarray, gp: np.ndarray) -> np.ndarray:
        """``Z[part] [ga; gp]``: unit and period effects gathered, covariates multiplied."""
        u, t, x = self.parts[part]
        period = np.vstack([np.zeros((1, gp.shape[1])), gp[:self.n_periods - 1]])
        out = ga[u] + period[t]
        if self.k:
            out += x @ gp[self.n_periods - 1:]
        return out


@dataclass(frozen=True)
class Imputation:
    """Imputation DID (Borusyak, Jaravel and Spiess 2024).

    1. Fit ``y_it = a_i + l_t + x_it'b`` on untreated observations (``d == 0``) only.
    2. Impute ``y0`` for treated observations and take ``tau_it = y_it - y0_hat_it``.
    3. Average: the overall ``ATT`` (every treated observation equally) and event-time
       effects ``ev+k``.

    Standard errors follow BJS Theorem 3: the estimator is linear in ``y`` with weights
    ``v_it``; the variance is ``sum_i (sum_t v_it e_it)^2`` with untreated residuals from
    step 1 and, for treated observations, ``tau_it`` minus its average within the
    cohort x event-time cell (the conservative "averaged" residuals), clustered by unit.

    The pre-trend test (BJS Test 1) regresses the untreated outcome on unit and period
    effects plus ``pretrend_leads`` lead indicators (1..k periods before treatment) and
    reports the cluster-robust Wald test of the leads (F against F(k, G-1)).

    ``fast=True`` (default) solves the untreated regression by eliminating the unit
    effects exactly (memory linear in the rows: a 1,000,000-row panel fits in well under
    2 GB); ``fast=False`` builds the dense dummy matrix, the reference path.

    ``autosample=True`` (default, Stata ``did_imputation``'s ``autosample``): a treated
    observation whose fixed effects cannot be imputed (its period has no untreated
    observation, as every period from the last cohort's adoption on when no unit is never
    treated; or its unit has no untreated period) is dropped from the estimate and from
    the estimand, and every average is taken over the remaining treated observations
    (Stata renormalises each weight vector the same way; R ``didimputation`` drops the
    observations whose prediction is missing). ``diagnostics["n_dropped_treated_obs"]``
    counts them and a note says so. ``autosample=False`` raises instead.
    """

    outcome: str
    controls: Sequence[str] = ()
    horizons: int | None = None
    pretrend_leads: int = 3
    alpha: float = 0.05
    fast: bool = True
    autosample: bool = True
    label: str = "imputation"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_count("pretrend_leads", self.pretrend_leads, 0)
        check_count("horizons", self.horizons, 0, optional=True)
        check_alpha(self.alpha)
        if self.outcome in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include the outcome")
        if not isinstance(self.autosample, (bool, np.bool_)):
            raise OptionError(f"autosample={self.autosample!r} must be True or False")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the imputation ATT and event-time effects; ``rng`` is not used."""
        self.check()
        _, unit, time, arrays = check_panel(panel, (self.outcome,), tuple(self.controls))
        n_units, n_periods = int(unit.max()) + 1, int(time.max()) + 1
        y = arrays[self.outcome]
        x = (np.column_stack([arrays[c] for c in self.controls]) if self.controls
             else np.empty((y.size, 0)))
        treated = arrays[D] == 1
        rel_all = event_time(panel)   # on the whole panel: positions survive dropped rows
        coh_all = arrays[COHORT]
        lost, lost_note = self._not_imputable(unit, time, treated, n_units, n_periods)
        n_lost = int(lost.sum())
        if n_lost:
            keep = ~lost
            unit, time, y, x = unit[keep], time[keep], y[keep], x[keep]
            treated, rel_all, coh_all = treated[keep], rel_all[keep], coh_all[keep]
        untreated = ~treated
        y0, y1 = y[untreated], y[treated]
        if self.fast:
            design = _TwoWay(unit, time, x, n_units, n_periods, untreated)
            coef = design.solve(*design.crossprod(0, y0[:, None]))
            fitted0 = design.apply(0, *coef)[:, 0]
            tau = y1 - design.apply(1, *coef)[:, 0]
        else:
            z = _fe_design(unit, time, n_units, n_periods, x)
            z0, z1 = z[untreated], z[treated]
            beta, *_ = np.linalg.lstsq(z0, y0, rcond=None)
            fitted0 = z0 @ beta
            tau = y1 - z1 @ beta
        rel = rel_all[treated]
        coh = coh_all[treated]
        events = np.unique(rel)
        if self.horizons is not None:
            events = events[events <= self.horizons]
        # weights of each estimand over treated observations: overall, then event times
        w1 = np.zeros((tau.size, 1 + events.size))                # (N1, m)
        w1[:, 0] = 1.0 / tau.size
        names = ["ATT"] + [f"ev{int(e):+d}" for e in events]
        ev_pos = np.searchsorted(events, rel)
        inside = (ev_pos < events.size) & (events[np.minimum(ev_pos, events.size - 1)] == rel)
        ev_count = np.bincount(ev_pos[inside], minlength=events.size).astype(float)
        rows1 = np.flatnonzero(inside)
        w1[rows1, 1 + ev_pos[inside]] = 1.0 / ev_count[ev_pos[inside]]
        est = tau @ w1
        # v for untreated obs: -Z0 (Z0'Z0)^+ Z1' w1  (BJS eq. 6)
        if self.fast:
            v0 = design.apply(0, *design.solve(*design.crossprod(1, w1)))
            v0 *= -1.0
        else:
            v0 = -z0 @ (np.linalg.pinv(z0.T @ z0) @ (z1.T @ w1))   # (N0, m)
        resid0 = y0 - fitted0
        # treated residuals: tau minus its v-weighted mean within cohort x event-time cells
        cells = coh * 10_000 + rel
        codes, n_cells = codes_of(cells)
        wsum = _sums(codes, w1, n_cells)
        tsum = _sums(codes, w1 * tau[:, None], n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            cell_mean = np.where(wsum > 0, tsum / np.where(wsum > 0, wsum, 1), 0.0)
        # w1 * (tau - cell mean), the treated rows' part of the influence function
        resid1 = w1 * (tau[:, None] - cell_mean[codes])
        u0, u1 = unit[untreated], unit[treated]
        scores = (cluster_scores_of(v0, resid0, u0, n_units)
                  + _sums(u1, resid1, n_units))
        se = np.sqrt((scores**2).sum(axis=0))
        crit = critical_value(self.alpha, None)
        stat = est / se
        terms = pd.DataFrame({
            "term": names, "estimate": est, "std_error": se, "statistic": stat,
            "p_value": p_value(stat, None), "conf_low": est - crit * se,
            "conf_high": est + crit * se,
            "event_time": np.r_[np.nan, events.astype(float)],
        })
        cov = scores.T @ scores
        ev_names = names[1:]
        event_cov = pd.DataFrame(cov[1:, 1:], index=ev_names, columns=ev_names)
        diagnostics = {"n_treated_obs": float(tau.size), "n_dropped_treated_obs": float(n_lost)}
        # dropped rows are treated ones: the untreated rows are the panel's
        diagnostics.update(self._pretrend(panel[arrays[D] != 1], unit[untreated],
                                          np.unique(panel[TIME].to_numpy())))
        return Estimate(
            estimator=self.label, term="ATT", estimate=float(est[0]), std_error=float(se[0]),
            p_value=float(terms["p_value"].iloc[0]), conf_low=float(terms["conf_low"].iloc[0]),
            conf_high=float(terms["conf_high"].iloc[0]), alpha=self.alpha, n_obs=int(y.size),
            n_units=n_units, n_clusters=n_units,
            inference="BJS conservative variance (averaged treated residuals), clustered by unit, normal",
            terms=terms, diagnostics=diagnostics,
            notes=(f"imputation model fitted on {int(untreated.sum())} untreated observations",
                   *lost_note),
            event_cov=event_cov,
        )

    def _not_imputable(self, unit: np.ndarray, time: np.ndarray, treated: np.ndarray,
                       n_units: int, n_periods: int) -> tuple[np.ndarray, tuple[str, ...]]:
        """Treated rows whose unit or period effect has no untreated observation to be
        estimated from (``did_imputation``'s ``cannot_impute``), and the note saying how
        many were dropped; raises when ``autosample`` is off and there are any."""
        untreated = ~treated
        unit_ok = np.bincount(unit[untreated], minlength=n_units) > 0
        period_ok = np.bincount(time[untreated], minlength=n_periods) > 0
        no_unit = treated & ~unit_ok[unit]
        no_period = treated & ~period_ok[time]
        lost = no_unit | no_period
        if not lost.any():
            return lost, ()
        if not self.autosample:
            if no_unit.any():
                raise EstimationError(f"{int(no_unit.sum())} treated observations belong to units with no "
                                      "untreated period: their effects cannot be imputed "
                                      "(autosample=True drops them)")
            raise EstimationError(f"{int(no_period.sum())} treated observations are in periods with no "
                                  "untreated unit: their period effects cannot be imputed "
                                  "(autosample=True drops them)")
        if not (treated & ~lost).any():
            raise EstimationError("no treated observation can be imputed: every one is in a period "
                                  "with no untreated unit or in a unit with no untreated period")
        return lost, (f"autosample: {int(lost.sum())} treated observations dropped from the estimate "
                      f"and the estimand because their fixed effects cannot be imputed "
                      f"({int(no_period.sum())} in periods with no untreated unit, "
                      f"{int(no_unit.sum())} in units with no untreated period)",)

    def _pretrend(self, untreated: pd.DataFrame, unit_codes: np.ndarray,
                  times: np.ndarray) -> dict[str, float]:
        """BJS test 1: leads counted in the panel's periods (not calendar years)."""
        k = self.pretrend_leads
        if k == 0:
            return {}
        rel = event_time(untreated, times)
        leads = {f"lead{j}": (rel == -j).astype(float) for j in range(1, k + 1)
                 if (rel == -j).any()}
        if not leads:
            return {}
        arrays = fe_arrays(untreated, self.outcome, tuple(self.controls), cluster=UNIT,
                           extra=leads, validate=False)
        res = fit_fe(arrays, "cluster", "stata", "t")
        ids = res.identified
        idx = [ids.index(n) for n in leads if n in ids]
        if not idx:
            return {}
        b = res.fit.coef[idx]
        v = res.cov[np.ix_(idx, idx)]
        f = float(b @ np.linalg.solve(v, b)) / len(idx)
        return {"pretrend_F": f, "pretrend_df1": float(len(idx)),
                "pretrend_p": float(special.fdtrc(len(idx), res.df, f))}

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True ``ATT`` and ``ev+k`` on a simulated panel (``te_<outcome>``): the mean
        effect over the treated observations the estimate averages (with ``autosample``,
        those whose fixed effects can be imputed), overall and at each event time."""
        self.check()
        _, unit, time, arrays = check_panel(panel, (), ())
        treated = arrays[D] == 1
        lost, _ = self._not_imputable(unit, time, treated, int(unit.max()) + 1,
                                      int(time.max()) + 1)
        kept = treated & ~lost
        te = panel[f"te_{self.outcome}"].to_numpy(float)[kept]
        rel = event_time(panel)[kept]
        out = {"ATT": float(te.mean())}
        for k in np.unique(rel):
            out[f"ev{int(k):+d}"] = float(te[rel == k].mean())
        return out
