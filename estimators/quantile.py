"""Quantile difference-in-differences (seed 000: the policy works more where fewer firms
already produce cleanly).

Two estimators answer two different questions:

* :class:`QuantileDID` -- the studies' approach: a *conditional* quantile regression of the
  outcome on the treatment indicator with unit and year dummies (and controls). Its
  coefficient at quantile q shifts the q-th quantile of the outcome *given* the unit and
  year, i.e. of the idiosyncratic error -- not the q-th quantile of the treated units'
  outcome distribution.
* :class:`ChangesInChanges` -- Athey and Imbens (2006): the quantile treatment effects on the
  treated, ``F11^{-1}(q) - F_{N,11}^{-1}(q)`` with the counterfactual distribution
  ``F01^{-1}(F00(Y10))``; identified when the untreated outcome is monotone in a
  group-specific unobservable whose distribution does not change over time.

Quantile regressions are solved exactly as linear programs (HiGHS), so they equal the
textbook estimates (e.g. R quantreg) rather than an iterative approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from .design import codes_of
from .panel import (excluding_always_treated, COHORT, D, TIME, UNIT, EstimationError, OptionError, check_alpha, check_count,
                    check_panel)
from .resample import draw_units
from .result import Estimate, critical_value, terms_frame

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def quantile_regression(y: np.ndarray, x: np.ndarray, q: float) -> np.ndarray:
    """Exact quantile-regression coefficients: ``min sum rho_q(y - x b)`` as an LP."""
    if not 0 < q < 1:
        raise OptionError(f"quantile {q} must lie strictly between 0 and 1")
    n, k = x.shape
    c = np.r_[np.zeros(k), np.full(n, q), np.full(n, 1 - q)]
    a = sparse.hstack([sparse.csr_matrix(x), sparse.eye(n), -sparse.eye(n)]).tocsr()
    bounds = [(None, None)] * k + [(0, None)] * (2 * n)
    res = linprog(c, A_eq=a, b_eq=y, bounds=bounds, method="highs")
    if res.status != 0:
        raise EstimationError(f"quantile regression at q={q} failed: {res.message}")
    return res.x[:k]


def _check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    if not qs or any(not 0 < q < 1 for q in qs):
        raise OptionError(f"quantiles={list(quantiles)} must be numbers strictly between 0 and 1")
    return qs


def _check_common(est: Any) -> None:
    """The options both quantile estimators share: quantiles, bootstrap draws, alpha."""
    _check_quantiles(est.quantiles)
    check_count("n_boot", est.n_boot, 0)
    check_alpha(est.alpha)


def _estimate(est: str, label: str, qs: tuple[float, ...], values: np.ndarray, boot: np.ndarray | None,
              alpha: float, n_obs: int, n_units: int, headline: float, head_boot: np.ndarray | None,
              inference: str, notes: tuple[str, ...]) -> Estimate:
    se = boot.std(axis=0, ddof=1) if boot is not None else np.full(values.size, np.nan)
    head_se = float(head_boot.std(ddof=1)) if head_boot is not None else float("nan")
    names = [f"q{q:g}" for q in qs]
    terms = terms_frame(names, values, se, alpha, None, quantile=np.asarray(qs))
    crit = critical_value(alpha, None)
    from .result import p_value

    return Estimate(
        estimator=label, term=est, estimate=headline, std_error=head_se,
        p_value=float(p_value(headline / head_se, None)) if head_se > 0 else float("nan"),
        conf_low=headline - crit * head_se, conf_high=headline + crit * head_se, alpha=alpha,
        n_obs=n_obs, n_units=n_units, n_clusters=n_units, inference=inference, terms=terms,
        notes=notes,
    )


@dataclass(frozen=True)
class QuantileDID:
    """Conditional quantile DID: ``Q_q(y_it | i, t, x) = a_i(q) + l_t(q) + tau(q) d_it +
    x_it'b(q)`` at each quantile, with unit-cluster bootstrap SEs (``n_boot`` draws,
    ``rng`` needed; 0 for none). Headline: ``tau`` at the median."""

    outcome: str
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    controls: Sequence[str] = ()
    n_boot: int = 99
    alpha: float = 0.05
    label: str = "quantile_did"

    def _design(self, panel: pd.DataFrame, rows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        unit, n_units = codes_of(panel[UNIT].to_numpy() if rows is None else rows)
        time, n_periods = codes_of(panel[TIME].to_numpy())
        n = len(panel)
        x = np.zeros((n, 2 + len(self.controls) + (n_units - 1) + (n_periods - 1)))
        x[:, 0] = 1.0
        x[:, 1] = panel[D].to_numpy(float)
        for j, c in enumerate(self.controls):
            x[:, 2 + j] = panel[c].to_numpy(float)
        off = 2 + len(self.controls)
        m = unit > 0
        x[np.flatnonzero(m), off + unit[m] - 1] = 1.0
        off += n_units - 1
        m = time > 0
        x[np.flatnonzero(m), off + time[m] - 1] = 1.0
        return panel[self.outcome].to_numpy(float), x

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """The quantity the studies read ``tau(q)`` as: the treated cells' quantile
        treatment effects, ``Q_q(y | d=1) - Q_q(y0 | d=1)`` (``y0_<outcome>``), the same
        truth as :meth:`ChangesInChanges.estimand`. The coefficient targets a conditional
        quantile of the error instead, so its "bias" against this truth measures that
        misreading (seed 000's question), not a coding error."""
        qs = _check_quantiles(self.quantiles)
        treated = panel[D].to_numpy() == 1
        y1 = panel[self.outcome].to_numpy(float)[treated]
        y0 = panel[f"y0_{self.outcome}"].to_numpy(float)[treated]
        qtt = (np.quantile(y1, qs, method="inverted_cdf")
               - np.quantile(y0, qs, method="inverted_cdf"))
        out = {f"q{q:g}": float(v) for q, v in zip(qs, qtt)}
        med = int(np.argmin(np.abs(np.asarray(qs) - 0.5)))
        out[f"tau_q{qs[med]:g}"] = float(qtt[med])
        return out

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        _check_common(self)
        if self.outcome in tuple(self.controls):
            raise OptionError(f"controls {list(self.controls)} must not include the outcome")

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        self.check()
        qs = _check_quantiles(self.quantiles)
        check_panel(panel, (self.outcome,), tuple(self.controls))
        y, x = self._design(panel)
        tau = np.array([quantile_regression(y, x, q)[1] for q in qs])
        boot = None
        if self.n_boot > 0:
            if rng is None:
                raise OptionError("the bootstrap needs a generator: fit(panel, rng=...)")
            units = panel[UNIT].to_numpy()
            uniq, inv = np.unique(units, return_inverse=True)
            treated_u = np.zeros(uniq.size, dtype=int)
            treated_u[inv] = (panel[COHORT].to_numpy() > 0).astype(int)
            rows_of = [np.flatnonzero(inv == k) for k in range(uniq.size)]
            boot = np.empty((self.n_boot, len(qs)))
            for b, pick in enumerate(draw_units(treated_u, self.n_boot, rng, stratified=True)):
                idx = np.concatenate([rows_of[k] for k in pick])
                relabel = np.concatenate([np.full(rows_of[k].size, j) for j, k in enumerate(pick)])
                yb, xb = self._design(panel.iloc[idx], rows=relabel)
                boot[b] = [quantile_regression(yb, xb, q)[1] for q in qs]
        med = int(np.argmin(np.abs(np.asarray(qs) - 0.5)))
        return _estimate(
            f"tau_q{qs[med]:g}", self.label, qs, tau, boot, self.alpha, len(panel),
            panel[UNIT].nunique(), float(tau[med]), None if boot is None else boot[:, med],
            f"unit-cluster bootstrap ({self.n_boot} draws), normal" if boot is not None else "no SEs",
            ("conditional quantile effects: quantiles of y given unit and year, not the "
             "treated units' outcome distribution (see ChangesInChanges)",))


@dataclass(frozen=True)
class ChangesInChanges:
    """Athey-Imbens changes-in-changes: quantile treatment effects on the treated.

    With a common treatment date: group 1 = treated units, 0 = never treated; period 0 =
    years before the date, 1 = from the date on (pooled). ``QTT(q) = F11^{-1}(q) -
    Q_q(F01^{-1}(F00(Y10)))`` and the headline ``ATT = mean(Y11) - mean(F01^{-1}(F00(Y10)))``.
    Unit-cluster bootstrap SEs within groups.
    """

    outcome: str
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    n_boot: int = 199
    alpha: float = 0.05
    label: str = "changes_in_changes"

    @staticmethod
    def _qtt(y00: np.ndarray, y01: np.ndarray, y10: np.ndarray, y11: np.ndarray,
             qs: Sequence[float]) -> tuple[np.ndarray, float]:
        y00s = np.sort(y00)
        f00 = np.searchsorted(y00s, y10, side="right") / y00s.size     # F00(Y10)
        cf = np.quantile(y01, np.clip(f00, 0.0, 1.0), method="inverted_cdf")  # F01^{-1}
        qtt = (np.quantile(y11, qs, method="inverted_cdf")
               - np.quantile(cf, qs, method="inverted_cdf"))
        return qtt, float(y11.mean() - cf.mean())

    def _cells(self, panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cohorts = np.unique(panel.loc[panel[COHORT] > 0, COHORT])
        if cohorts.size != 1:
            raise EstimationError(f"changes-in-changes needs one treatment date; found {[int(c) for c in cohorts]}")
        treated = panel[COHORT].to_numpy() > 0
        post = panel[TIME].to_numpy() >= cohorts[0]
        return treated, post, panel[self.outcome].to_numpy(float)

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        _check_common(self)

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        self.check()
        qs = _check_quantiles(self.quantiles)
        check_panel(panel, (self.outcome,), ())
        g, t, y = self._cells(panel)

        def stat(mask: np.ndarray | None = None, weights_idx: np.ndarray | None = None):
            gi, ti, yi = (g, t, y) if weights_idx is None else (g[weights_idx], t[weights_idx], y[weights_idx])
            return self._qtt(yi[~gi & ~ti], yi[~gi & ti], yi[gi & ~ti], yi[gi & ti], qs)

        qtt, att = stat()
        boot = head = None
        if self.n_boot > 0:
            if rng is None:
                raise OptionError("the bootstrap needs a generator: fit(panel, rng=...)")
            units = panel[UNIT].to_numpy()
            uniq, inv = np.unique(units, return_inverse=True)
            gu = np.zeros(uniq.size, dtype=int)
            gu[inv] = g.astype(int)
            rows_of = [np.flatnonzero(inv == k) for k in range(uniq.size)]
            boot = np.empty((self.n_boot, len(qs)))
            head = np.empty(self.n_boot)
            for b, pick in enumerate(draw_units(gu, self.n_boot, rng, stratified=True)):
                idx = np.concatenate([rows_of[k] for k in pick])
                boot[b], head[b] = stat(weights_idx=idx)
        return _estimate("ATT", self.label, qs, qtt, boot, self.alpha, len(panel),
                         panel[UNIT].nunique(), att, head,
                         f"unit-cluster bootstrap ({self.n_boot} draws), normal" if boot is not None
                         else "no SEs",
                         ("quantile treatment effects on the treated (Athey-Imbens)",))

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True QTTs and ATT of the draw: quantiles of the treated post-period outcome with
        and without the effect (``y0_<outcome>``)."""
        qs = _check_quantiles(self.quantiles)
        g, t, y = self._cells(panel)
        m = g & t
        y0 = panel[f"y0_{self.outcome}"].to_numpy(float)[m]
        y1 = y[m]
        out = {f"q{q:g}": float(v) for q, v in zip(qs, np.quantile(y1, qs, method="inverted_cdf")
                                                   - np.quantile(y0, qs, method="inverted_cdf"))}
        out["ATT"] = float(y1.mean() - y0.mean())
        return out
