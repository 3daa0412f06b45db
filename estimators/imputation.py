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


class _TwoWay:
    """The untreated-observation regression of ``y`` on unit effects, period effects and
    covariates, solved without dense unit dummies.

    The unit block of the normal equations is diagonal (each unit's number of untreated
    observations), so it is eliminated exactly (a Schur complement): only a
    ``(periods - 1 + covariates)``-square system is solved densely. Memory and time are
    linear in the number of rows; the dense dummy regression (``Imputation(fast=False)``)
    is kept as the reference path, and a test pins the two together.
    """

    def __init__(self, unit: np.ndarray, time: np.ndarray, x: np.ndarray, n_units: int,
                 n_periods: int, untreated: np.ndarray) -> None:
        self.unit, self.n_units = unit, n_units
        # P: period dummies (first period dropped) and covariates, (n, q)
        p = np.zeros((unit.size, n_periods - 1 + x.shape[1]))
        rows = np.flatnonzero(time > 0)
        p[rows, time[rows] - 1] = 1.0
        if x.shape[1]:
            p[:, n_periods - 1:] = x
        self.p = p
        u0, p0 = unit[untreated], p[untreated]
        self.a = np.bincount(u0, minlength=n_units).astype(float)       # D0'D0 (diagonal)
        self.b = np.column_stack([np.bincount(u0, weights=p0[:, j], minlength=n_units)
                                  for j in range(p.shape[1])]) if p.shape[1] else \
            np.zeros((n_units, 0))                                         # D0'P0
        ainv = np.where(self.a > 0, 1.0 / np.where(self.a > 0, self.a, 1.0), 0.0)
        self.ainv = ainv
        schur = p0.T @ p0 - self.b.T @ (ainv[:, None] * self.b)
        self.schur_pinv = np.linalg.pinv(schur)

    def crossprod(self, rows: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Z[rows]' w`` split into its unit block and the rest, for ``w`` of (n_rows, m)."""
        u = self.unit[rows]
        ca = np.column_stack([np.bincount(u, weights=w[:, j], minlength=self.n_units)
                              for j in range(w.shape[1])])
        return ca, self.p[rows].T @ w

    def solve(self, ca: np.ndarray, cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Z0'Z0)^+ [ca; cp]`` by eliminating the diagonal unit block."""
        gp = self.schur_pinv @ (cp - self.b.T @ (self.ainv[:, None] * ca))
        ga = self.ainv[:, None] * (ca - self.b @ gp)
        return ga, gp

    def apply(self, rows: np.ndarray, ga: np.ndarray, gp: np.ndarray) -> np.ndarray:
        """``Z[rows] [ga; gp]``."""
        return ga[self.unit[rows]] + self.p[rows] @ gp


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
    """

    outcome: str
    controls: Sequence[str] = ()
    horizons: int | None = None
    pretrend_leads: int = 3
    alpha: float = 0.05
    fast: bool = True
    label: str = "imputation"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_count("pretrend_leads", self.pretrend_leads, 0)
        check_count("horizons", self.horizons, 0, optional=True)
        check_alpha(self.alpha)
        if self.outcome in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include the outcome")

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
        untreated = ~treated
        # units or periods with no untreated observation cannot be imputed
        if not np.isin(np.unique(unit[treated]), unit[untreated]).all():
            raise EstimationError("a treated unit has no untreated period: its effect cannot be imputed")
        if not np.isin(np.unique(time[treated]), time[untreated]).all():
            raise EstimationError("a period has no untreated unit: its year effect cannot be imputed")
        if self.fast:
            design = _TwoWay(unit, time, x, n_units, n_periods, untreated)
            rows0, rows1 = np.flatnonzero(untreated), np.flatnonzero(treated)
            coef = design.solve(*design.crossprod(rows0, y[untreated][:, None]))
            fitted0 = design.apply(rows0, *coef)[:, 0]
            tau = y[treated] - design.apply(rows1, *coef)[:, 0]
        else:
            z = _fe_design(unit, time, n_units, n_periods, x)
            z0, z1 = z[untreated], z[treated]
            beta, *_ = np.linalg.lstsq(z0, y[untreated], rcond=None)
            fitted0 = z0 @ beta
            tau = y[treated] - z1 @ beta
        rel = event_time(panel)[treated]
        coh = arrays[COHORT][treated]
        events = np.unique(rel)
        if self.horizons is not None:
            events = events[events <= self.horizons]
        # weights of each estimand over treated observations: overall, then event times
        w1 = [np.full(tau.size, 1.0 / tau.size)]
        names = ["ATT"]
        for e in events:
            m = rel == e
            w1.append(m / m.sum())
            names.append(f"ev{int(e):+d}")
        w1 = np.column_stack(w1)                                # (N1, m)
        est = tau @ w1
        # v for untreated obs: -Z0 (Z0'Z0)^+ Z1' w1  (BJS eq. 6)
        if self.fast:
            v0 = -design.apply(rows0, *design.solve(*design.crossprod(rows1, w1)))
        else:
            v0 = -z0 @ (np.linalg.pinv(z0.T @ z0) @ (z1.T @ w1))   # (N0, m)
        resid0 = y[untreated] - fitted0
        # treated residuals: tau minus its v-weighted mean within cohort x event-time cells
        resid1 = np.empty((tau.size, w1.shape[1]))
        cells = coh * 10_000 + rel
        codes, n_cells = codes_of(cells)
        for j in range(w1.shape[1]):
            wsum = np.bincount(codes, weights=w1[:, j], minlength=n_cells)
            tsum = np.bincount(codes, weights=w1[:, j] * tau, minlength=n_cells)
            with np.errstate(invalid="ignore", divide="ignore"):
                cell_mean = np.where(wsum > 0, tsum / np.where(wsum > 0, wsum, 1), 0.0)
            resid1[:, j] = tau - cell_mean[codes]
        scores = np.zeros((n_units, w1.shape[1]))
        for j in range(w1.shape[1]):
            scores[:, j] = (np.bincount(unit[untreated], weights=v0[:, j] * resid0, minlength=n_units)
                            + np.bincount(unit[treated], weights=w1[:, j] * resid1[:, j], minlength=n_units))
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
        diagnostics = {"n_treated_obs": float(tau.size)}
        diagnostics.update(self._pretrend(panel[untreated], unit[untreated],
                                          np.unique(panel[TIME].to_numpy())))
        return Estimate(
            estimator=self.label, term="ATT", estimate=float(est[0]), std_error=float(se[0]),
            p_value=float(terms["p_value"].iloc[0]), conf_low=float(terms["conf_low"].iloc[0]),
            conf_high=float(terms["conf_high"].iloc[0]), alpha=self.alpha, n_obs=int(y.size),
            n_units=n_units, n_clusters=n_units,
            inference="BJS conservative variance (averaged treated residuals), clustered by unit, normal",
            terms=terms, diagnostics=diagnostics,
            notes=(f"imputation model fitted on {int(untreated.sum())} untreated observations",),
            event_cov=event_cov,
        )

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
        from .callaway_santanna import staggered_truth

        truth = staggered_truth(panel, self.outcome)
        return {k: v for k, v in truth.items() if k == "ATT" or k.startswith("ev+")}
