"""Bertrand, Duflo and Mullainathan's (2004) two repairs that no package ships.

Bertrand, M., Duflo, E. and Mullainathan, S. (2004), "How much should we trust
differences-in-differences estimates?", *Quarterly Journal of Economics* 119(1), 249-275,
Section IV:

- :class:`BlockBootstrap` (Section IV.B, Table V): the TWFE estimate's t statistic referred
  to its block-bootstrap distribution, a block being a state's whole time series (its
  outcomes and its law), so that the bootstrap keeps the serial correlation;
- :class:`Collapse` (Section IV.C, Table VI): "ignoring time series information" -- the
  panel collapsed to one pre- and one post-law period per state, so that serial
  correlation cannot inflate the t statistic; ``method="residual"`` is BDM's residual
  aggregation for laws passed in different years, ``method="simple"`` their simple
  aggregation around one law date.

Both follow the catalogue protocol (:mod:`estimators.catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .design import fe_arrays
from .panel import (COHORT, D, TIME, UNIT, EstimationError, OptionError, check_alpha,
                    check_choice, check_count, check_panel, excluding_always_treated,
                    treated_att)
from .resample import draw_units
from .result import Estimate, critical_value, p_value, terms_frame

BOOT_SE = ("conventional", "cluster")
COLLAPSE_METHODS = ("residual", "simple")


def _balanced_matrices(panel: pd.DataFrame, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    """The outcome and the treatment as ``(units, periods)`` matrices (sorted units and
    periods) of a balanced panel; an unbalanced one is refused."""
    info, unit, tcode, arrays = check_panel(panel, outcomes=(outcome,))
    if not info.balanced:
        raise EstimationError(f"the block bootstrap needs a balanced panel; this one has "
                              f"{info.n_obs} rows for {info.n_units} units x "
                              f"{info.n_periods} periods")
    y = np.empty((info.n_units, info.n_periods))
    d = np.empty((info.n_units, info.n_periods))
    y[unit, tcode] = arrays[outcome]
    d[unit, tcode] = arrays[D]
    return y, d


def twfe_t(y: np.ndarray, d: np.ndarray, se: str) -> tuple[np.ndarray, np.ndarray]:
    """TWFE coefficient of ``d`` and its standard error in each of a stack of balanced
    panels.

    Parameters
    ----------
    y, d
        ``(..., N, T)``: outcome and treatment of ``N`` units over ``T`` periods; leading
        axes index panels (bootstrap samples).
    se
        ``"conventional"``: i.i.d. errors, residual variance RSS / (NT - N - T) (Stata's
        ``xtreg, fe`` and didlab's ``TWFE(se="conventional")``); ``"cluster"``: clustered
        by unit with Stata's factor G/(G-1) (NT-1)/(NT-T-1) (``TWFE()``'s default). A unit
        that appears twice in a bootstrap sample counts as two units and two clusters.

    Returns
    -------
    (beta, se)
        Arrays of the leading shape; NaN where ``d`` has no variation left after the two-way
        demeaning (every unit treated alike).
    """
    n, t = y.shape[-2:]

    def within(z: np.ndarray) -> np.ndarray:
        return (z - z.mean(axis=-1, keepdims=True) - z.mean(axis=-2, keepdims=True)
                + z.mean(axis=(-2, -1), keepdims=True))

    dt, yt = within(d), within(y)
    sxx = np.einsum("...nt,...nt->...", dt, dt)
    ok = sxx > 1e-12 * n * t
    safe = np.where(ok, sxx, 1.0)
    beta = np.einsum("...nt,...nt->...", dt, yt) / safe
    resid = yt - beta[..., None, None] * dt
    if se == "conventional":
        s2 = np.einsum("...nt,...nt->...", resid, resid) / (n * t - n - t)
        var = s2 / safe
    else:
        scores = np.einsum("...nt,...nt->...n", dt, resid)
        factor = n / (n - 1) * (n * t - 1) / (n * t - t - 1)
        var = factor * np.einsum("...n,...n->...", scores, scores) / safe**2
    return np.where(ok, beta, np.nan), np.where(ok, np.sqrt(var), np.nan)


@dataclass(frozen=True)
class BlockBootstrap:
    """TWFE with BDM's block bootstrap of states (percentile-t).

    Each bootstrap sample draws ``N`` units with replacement, every unit with its whole
    series of outcomes and its treatment dates (a block); TWFE is refitted and the
    recentred statistic ``t_r = |(b_r - b) / se_r|`` recorded. The p-value is the share of
    ``t_r`` at least ``|b / se|`` (BDM reject at 5% when fewer than 5% of them exceed it);
    the interval is ``b -/+ q_{1-alpha}(t_r) se``.

    Parameters
    ----------
    outcome
        Outcome column.
    n_boot
        Bootstrap samples (BDM: 200 in the text, p. 265; 400 in Table V's note).
    se
        The standard error in the t statistic: ``"conventional"`` (i.i.d.; BDM's, whose
        bootstrap corrects it) or ``"cluster"`` (by unit: Cameron, Gelbach and Miller's
        2008 pairs cluster bootstrap-t).
    alpha
        Significance level of the interval.
    label
        Name in outputs.

    Notes
    -----
    Needs a balanced panel. A bootstrap sample in which the treatment has no variation left
    (every drawn unit untreated, or all treated alike) is dropped and counted in
    ``diagnostics["n_failed"]``. Valid as the number of states grows (BDM Table V: 6.5%
    rejection with 50 CPS states, 43.5% with 6).
    """

    outcome: str
    n_boot: int = 200
    se: str = "conventional"
    alpha: float = 0.05
    label: str = "bdm_bootstrap"

    #: bootstrap samples per vectorised batch (bounds memory at batch x N x T floats)
    BATCH = 256

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_count("n_boot", self.n_boot, 19)
        check_choice("se", self.se, BOOT_SE)
        check_alpha(self.alpha)

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells."""
        return treated_att(panel, self.outcome)

    def bootstrap(self, panel: pd.DataFrame, rng: np.random.Generator
                  ) -> tuple[float, float, np.ndarray, np.ndarray]:
        """The estimate, its standard error, the bootstrap draws (``(n_boot, N)`` unit
        positions, :func:`~estimators.resample.draw_units`) and the recentred ``|t_r|``
        (NaN where a sample failed)."""
        y, d = _balanced_matrices(panel, self.outcome)
        beta, se = twfe_t(y, d, self.se)
        beta, se = float(beta), float(se)
        if not np.isfinite(beta):
            raise EstimationError(f"the treatment indicator {D!r} has no variation after unit "
                                  "and period effects: no DID contrast")
        draws = draw_units(np.zeros(y.shape[0], dtype=np.int64), self.n_boot, rng)
        t_r = np.empty(self.n_boot)
        for start in range(0, self.n_boot, self.BATCH):
            idx = draws[start:start + self.BATCH]
            b_r, se_r = twfe_t(y[idx], d[idx], self.se)
            with np.errstate(invalid="ignore", divide="ignore"):
                t_r[start:start + idx.shape[0]] = np.abs(b_r - beta) / se_r
        return beta, se, draws, t_r

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate and bootstrap (``rng`` draws the samples; required)."""
        self.check()
        if rng is None:
            raise OptionError("the block bootstrap draws samples: fit(panel, rng=...)")
        beta, se, _, t_r = self.bootstrap(panel, rng)
        valid = t_r[np.isfinite(t_r)]
        if valid.size < 19:
            raise EstimationError(f"only {valid.size} of {self.n_boot} bootstrap samples kept "
                                  "any treatment variation")
        t = abs(beta / se) if se > 0 else np.inf
        p = float(np.mean(valid >= t))
        crit = float(np.quantile(valid, 1 - self.alpha))
        low, high = beta - crit * se, beta + crit * se
        terms = terms_frame(["ATT"], np.array([beta]), np.array([se]), self.alpha, None)
        terms.loc[0, ["p_value", "conf_low", "conf_high"]] = (p, low, high)
        n_units, n_periods = panel[UNIT].nunique(), panel[TIME].nunique()
        return Estimate(
            estimator=self.label, term="ATT", estimate=beta, std_error=se, p_value=p,
            conf_low=low, conf_high=high, alpha=self.alpha, n_obs=len(panel),
            n_units=n_units, n_clusters=n_units,
            inference=(f"block bootstrap of units (BDM 2004), {valid.size} samples, "
                       f"percentile-t with {self.se} SEs"),
            terms=terms,
            diagnostics={"boot_critical_value": crit, "n_failed": float(self.n_boot - valid.size),
                         "analytic_p_value": float(p_value(beta / se, None)) if se > 0 else 0.0,
                         "n_periods": float(n_periods)},
        )


@dataclass(frozen=True)
class Collapse:
    """DID on the panel collapsed to a pre- and a post-law period (BDM Section IV.C).

    ``method="residual"`` (BDM's residual aggregation, for laws passed in different years):

    1. regress the outcome on unit and period fixed effects (and ``controls``) without the
       treatment, keep the residuals;
    2. for the treated units only, average the residuals before the law and from the law
       on: a two-period panel;
    3. regress these on unit effects and a post dummy: the coefficient is the estimate and
       its OLS standard error, with ``n_treated - 1`` degrees of freedom, the inference
       (the paired t test of the post-minus-pre residuals).

    ``method="simple"`` (one law date ``g`` for every treated unit): average each unit's
    outcome before ``g`` and from ``g`` on, and regress the two-period panel on unit
    effects, a post dummy and the treated-times-post dummy, with ``N - 2`` degrees of
    freedom (Donald and Lang's 2007 small-sample t).

    Parameters
    ----------
    outcome
        Outcome column.
    method
        ``"residual"`` (default) or ``"simple"``.
    controls
        Time-varying covariates of step 1 (``method="residual"`` only).
    alpha
        Significance level of the interval.
    label
        Name in outputs.

    Notes
    -----
    Serial correlation cannot bias the standard error of a two-period comparison, which is
    why the collapsed test keeps its size with few states (BDM Table VI); its power is low.
    Residual aggregation is conservative: its paired t treats the treated units' contrasts
    as independent, but step 1's period effects, fitted on every unit, remove part of their
    common mean (about half when half the units are treated), so the reported standard
    error overstates the estimate's (rejections of about 2% at 5% with 25 of 50 states
    treated, ``tests/test_design_bdm.py``).
    Under an effect, residual aggregation is attenuated: step 1 fits the state and year
    effects with the effect still in the outcome, so part of it is absorbed (the more
    states are treated by a given year, the more). Its estimand here is still the ATT, so
    that this bias shows.
    """

    outcome: str
    method: str = "residual"
    controls: Sequence[str] = ()
    alpha: float = 0.05
    label: str = "bdm_collapse"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("method", self.method, COLLAPSE_METHODS)
        check_alpha(self.alpha)
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")
        if controls and self.method == "simple":
            raise OptionError(f"controls={list(controls)} enter step 1 of method='residual'; "
                              "method='simple' averages the outcome itself")

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True value of the headline on a simulated panel: the ATT over treated cells."""
        return treated_att(panel, self.outcome)

    def differences(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each unit's post-minus-pre mean (of the step-1 residual, or of the outcome under
        ``method="simple"``) and whether it is treated, for the units observed on both
        sides of their law (treated units only under ``"residual"``), in sorted unit
        order."""
        self.check()
        cohort = panel[COHORT].to_numpy()
        if self.method == "residual":
            # sorted by unit and period, fe_arrays keeps the rows in this order (it sorts an
            # unsorted balanced panel), so the residuals line up with the panel's rows
            order = np.lexsort((panel[TIME].to_numpy(), panel[UNIT].to_numpy()))
            panel = panel.iloc[order]
            cohort = cohort[order]
            arrays = fe_arrays(panel, self.outcome, tuple(self.controls), cluster=None)
            value, x = arrays.within()
            if x.shape[1]:
                coef, *_ = np.linalg.lstsq(x, value, rcond=None)
                value = value - x @ coef
            unit, n_units = arrays.unit, arrays.n_units
            post = panel[TIME].to_numpy() >= cohort
            rows = cohort > 0
        else:
            _, unit, _, arrays = check_panel(panel, outcomes=(self.outcome,))
            n_units = int(unit.max()) + 1
            dates = np.unique(cohort[cohort > 0])
            if dates.size != 1:
                raise EstimationError(f"method='simple' needs one law date; the panel has "
                                      f"cohorts {dates.tolist()}: use method='residual'")
            value = arrays[self.outcome]
            post = arrays[TIME] >= dates[0]
            rows = np.ones(value.size, dtype=bool)
        key = 2 * unit[rows] + post[rows]
        sums = np.bincount(key, weights=value[rows], minlength=2 * n_units).reshape(n_units, 2)
        counts = np.bincount(key, minlength=2 * n_units).reshape(n_units, 2)
        both = (counts > 0).all(axis=1)
        treated = np.zeros(n_units, dtype=bool)
        treated[unit[cohort > 0]] = True
        means = sums[both] / counts[both]
        return means[:, 1] - means[:, 0], treated[both]

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Collapse and estimate (``rng`` is not used)."""
        diff, treated = self.differences(panel)
        if self.method == "residual":
            n = diff.size
            if n < 2:
                raise EstimationError(f"residual aggregation needs at least 2 treated units "
                                      f"observed before and after their law; found {n}")
            est = float(diff.mean())
            se = float(diff.std(ddof=1) / np.sqrt(n))
            df = float(n - 1)
        else:
            n1, n0 = int(treated.sum()), int((~treated).sum())
            if n1 < 1 or n0 < 1 or n1 + n0 < 3:
                raise EstimationError(f"simple aggregation needs treated and untreated units "
                                      f"observed on both sides of the law (found {n1} "
                                      f"treated, {n0} untreated)")
            est = float(diff[treated].mean() - diff[~treated].mean())
            rss = float(((diff[treated] - diff[treated].mean()) ** 2).sum()
                        + ((diff[~treated] - diff[~treated].mean()) ** 2).sum())
            df = float(n1 + n0 - 2)
            se = float(np.sqrt(rss / df * (1 / n1 + 1 / n0)))
        if not se > 0:
            raise EstimationError("the collapsed comparison has no residual variation: its "
                                  "standard error is zero")
        terms = terms_frame(["ATT"], np.array([est]), np.array([se]), self.alpha, df)
        row = terms.iloc[0]
        return Estimate(
            estimator=self.label, term="ATT", estimate=est, std_error=se,
            p_value=float(row["p_value"]), conf_low=float(row["conf_low"]),
            conf_high=float(row["conf_high"]), alpha=self.alpha, n_obs=2 * diff.size,
            n_units=int(diff.size), n_clusters=0,
            inference=f"{self.method} aggregation to pre/post (BDM 2004), OLS, t({df:g})",
            terms=terms,
            diagnostics={"n_treated": float(treated.sum()), "df": df,
                         "critical_value": critical_value(self.alpha, df)},
        )
