"""Two-stage difference-in-differences (Gardner 2021; Butts and Gardner 2022).

Stage 1 fits unit and period fixed effects (and controls) on the untreated observations
only; stage 2 regresses the outcome net of those stage-1 effects on the treatment
indicator (the static ATT) or on event-time indicators (the event study). Because stage 2
uses an estimated outcome, its OLS standard errors are wrong; the two stages are one GMM
problem and the variance below is its cluster-robust sandwich (Gardner 2021, section 3;
Butts and Gardner 2022, R Journal 14(3), "did2s: Two-Stage Difference-in-Differences"),
exactly as R's ``did2s`` computes it. The tests pin both to R ``did2s`` on ``mpdta`` and on
the package's own ``df_het`` data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

from .design import codes_of, event_time
from .fe import cluster_scores
from .panel import (D, TIME, UNIT, EstimationError, OptionError, PanelError, check_choice,
                    check_count, check_panel, excluding_always_treated)
from .regression import InferenceOptions
from .result import Estimate, critical_value, p_value, terms_frame

#: covariances of the GMM sandwich: clustered, or each observation its own cluster
SE_TYPES = ("cluster", "robust")
#: small-sample factor: none (R did2s and pyfixest apply none to the GMM sandwich)
SSC_TYPES = ("none",)


class _FirstStage:
    """Weighted least squares of ``y`` on unit effects, period effects and covariates over
    the untreated rows, with the unit block eliminated exactly.

    The design ``X1 = [unit dummies, period dummies (the first period the base),
    covariates]`` is never built: dummies are handled through their integer codes. The
    unit block of the normal equations is diagonal (each unit's total weight of untreated
    rows), so only a ``(periods - 1 + covariates)``-square Schur complement is solved
    densely (pseudo-inverse: a covariate the effects absorb gets the minimum-norm
    solution, and predictions stay unique). Memory and time are linear in the rows.
    """

    def __init__(self, unit: np.ndarray, time: np.ndarray, x: np.ndarray, n_units: int,
                 n_periods: int, untreated: np.ndarray, w: np.ndarray) -> None:
        self.unit, self.time, self.x = unit, time, x
        self.n_units, self.n_periods = n_units, n_periods
        rows0 = np.flatnonzero(untreated)
        u0, t0, x0, w0 = unit[rows0], time[rows0], x[rows0], w[rows0]
        a = np.bincount(u0, weights=w0, minlength=n_units)                 # D0'W D0
        self.ainv = np.where(a > 0, 1.0 / np.where(a > 0, a, 1.0), 0.0)
        # D0'W P0 and P0'W P0 from the codes: P = [period dummies, covariates]
        nt = n_periods - 1
        q = nt + x.shape[1]
        b = np.zeros((n_units, q))
        b[:, :nt] = np.bincount(u0 * n_periods + t0, weights=w0,
                                minlength=n_units * n_periods).reshape(n_units, n_periods)[:, 1:]
        ptp = np.zeros((q, q))
        ptp[np.arange(nt), np.arange(nt)] = np.bincount(t0, weights=w0, minlength=n_periods)[1:]
        for j in range(x.shape[1]):
            wx = w0 * x0[:, j]
            b[:, nt + j] = np.bincount(u0, weights=wx, minlength=n_units)
            ptp[:nt, nt + j] = ptp[nt + j, :nt] = np.bincount(t0, weights=wx,
                                                              minlength=n_periods)[1:]
        if x.shape[1]:
            ptp[nt:, nt:] = (x0 * w0[:, None]).T @ x0
        self.b = b
        self.schur_pinv = np.linalg.pinv(ptp - b.T @ (self.ainv[:, None] * b))

    def crossprod(self, rows: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``X1[rows]' m`` (``m`` already weighted), split into the unit block and the rest."""
        u, t, x = self.unit[rows], self.time[rows], self.x[rows]
        ca = np.column_stack([np.bincount(u, weights=m[:, j], minlength=self.n_units)
                              for j in range(m.shape[1])])
        ct = np.column_stack([np.bincount(t, weights=m[:, j], minlength=self.n_periods)[1:]
                              for j in range(m.shape[1])])
        return ca, np.vstack([ct, x.T @ m])

    def crossprod_codes(self, code: np.ndarray, k: int, w: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """``X1' W Z`` for the indicator matrix ``Z[i, j] = 1[code_i == j]`` (``code`` -1:
        a row with no indicator), without building ``Z``."""
        m = code >= 0
        c, wm = code[m], w[m]
        ca = np.bincount(self.unit[m] * k + c, weights=wm,
                         minlength=self.n_units * k).reshape(self.n_units, k)
        ct = np.bincount(self.time[m] * k + c, weights=wm,
                         minlength=self.n_periods * k).reshape(self.n_periods, k)[1:]
        cx = np.column_stack([np.bincount(c, weights=wm * self.x[m, j], minlength=k)
                              for j in range(self.x.shape[1])]).T if self.x.shape[1] else \
            np.zeros((0, k))
        return ca, np.vstack([ct, cx])

    def solve(self, ca: np.ndarray, cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(X10' W X10)^+ [ca; cp]`` by eliminating the diagonal unit block."""
        gp = self.schur_pinv @ (cp - self.b.T @ (self.ainv[:, None] * ca))
        ga = self.ainv[:, None] * (ca - self.b @ gp)
        return ga, gp

    def apply(self, rows: np.ndarray, ga: np.ndarray, gp: np.ndarray) -> np.ndarray:
        """``X1[rows] [ga; gp]``."""
        nt = self.n_periods - 1
        gt = np.vstack([np.zeros((1, gp.shape[1])), gp[:nt]])   # the base period's is 0
        out = ga[self.unit[rows]] + gt[self.time[rows]]
        if self.x.shape[1]:
            out += self.x[rows] @ gp[nt:]
        return out


def _second_stage(code: np.ndarray, k: int, resid: np.ndarray, w: np.ndarray,
                  rows0: np.ndarray, h0: np.ndarray, u1w: np.ndarray, clusters: np.ndarray,
                  n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2 on mutually exclusive indicators ``1[code == j]`` without intercept, and the
    GMM covariance (Butts-Gardner; R did2s's analytic SEs).

    The indicators are disjoint, so ``X2'WX2`` is diagonal and each coefficient is the
    weighted mean residualised outcome of its rows. Each row's influence is ``(X2'WX2)^-1
    (h_i w_i u1_i - x2_i w_i u2_i)``, with ``h_i = gamma' x10_i`` the stage-1 projection
    (``h0``, untreated rows) and ``u1``, ``u2`` the stage-1 and stage-2 residuals.
    """
    m = code >= 0
    c = code[m]
    xtwx = np.bincount(c, weights=w[m], minlength=k)
    beta = np.bincount(c, weights=(w * resid)[m], minlength=k) / xtwx
    u2w = w[m] * (resid[m] - beta[c])
    s_ss = np.bincount(clusters[m] * k + c, weights=u2w,
                       minlength=n_clusters * k).reshape(n_clusters, k)
    s_fs = cluster_scores(h0 * u1w[:, None], clusters[rows0], n_clusters)
    scores = (s_fs - s_ss) / xtwx
    return beta, scores.T @ scores


@dataclass(frozen=True)
class TwoStageDID(InferenceOptions):
    """Two-stage DID of Gardner (2021), R ``did2s``: static ATT and event study.

    1. On untreated rows (``d == 0``) fit ``y_it = a_i + l_t + x_it'b + u_it``.
    2. On every row regress ``y_it - a_i - l_t - x_it'b`` (no intercept) on ``d_it``: the
       headline ``ATT``, the mean residualised outcome over treated rows, which equals the
       imputation estimate of Borusyak, Jaravel and Spiess; and, separately, on event-time
       indicators ``1[t - g_i = k]`` for ``k != -1`` (R's ``i(rel_year, ref = c(-1, Inf))``):
       the event-time terms ``ev+k`` (after treatment) and the pre-period terms ``ev-k``
       (``k >= 2``), mean stage-1 residuals that test parallel trends.

    The covariance is the GMM sandwich of Butts and Gardner (2022), R ``did2s``'s analytic
    standard errors: with ``X1`` the stage-1 design on all rows, ``X10`` the same with
    treated rows zeroed, ``u1`` the stage-1 and ``u2`` the stage-2 residuals, each row's
    influence is ``(X2'WX2)^{-1} (gamma' x10_i w_i u1_i - x2_i w_i u2_i)`` with ``gamma =
    (X10'WX10)^+ X1'WX2``, summed within clusters; no small-sample factor (``ssc="none"``,
    as R ``did2s`` and pyfixest). The pre-trend diagnostic is the Wald test that the
    pre-period terms are jointly zero with that covariance.

    Parameters
    ----------
    outcome
        Outcome column.
    controls
        Time-varying covariates of the stage-1 model (estimated on untreated rows only).
    leads, lags
        Which event-time terms to report: ``ev-leads .. ev+lags``; ``None`` (default) every
        observed event time. The terms are group means, so the window changes no term's
        value, only which are reported.
    weights
        Optional column of observation weights (both stages weighted, as R ``did2s``'s
        ``weights``).
    cluster, se, ssc, dist, alpha
        Inference, keyword only (:class:`~estimators.regression.InferenceOptions`):
        ``se="cluster"`` (default, by ``cluster``, the unit by default) or ``"robust"``
        (each row its own cluster); ``ssc="none"`` only; ``dist="t"`` refers to t(G-1).

    Notes
    -----
    Rows a stage-1 model cannot predict -- treated rows in a period where no unit is
    untreated (every unit treated by then), or of a unit never observed untreated -- are
    left out of stage 2 with a note, as R ``did2s`` does (its predictions are ``NA``
    there). Identification: parallel trends of the untreated outcome and no anticipation;
    the effects may vary freely across units and periods.
    """

    outcome: str
    controls: Sequence[str] = ()
    leads: int | None = None
    lags: int | None = None
    weights: str | None = None
    ssc: str = field(default="none", kw_only=True)
    label: str = "did2s"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        check_choice("se", self.se, SE_TYPES)
        check_choice("ssc", self.ssc, SSC_TYPES)
        self.check_inference()
        check_count("leads", self.leads, 0, optional=True)
        check_count("lags", self.lags, 0, optional=True)
        controls = tuple(self.controls)
        if D in controls or self.outcome in controls:
            raise OptionError(f"controls {list(controls)} must not include {D!r} or the outcome")

    def _sample(self, panel: pd.DataFrame) -> tuple[np.ndarray, str | None]:
        """Rows stage 2 can use, and the note saying which were left out."""
        _, unit, time, arrays = check_panel(panel, (self.outcome,), tuple(self.controls))
        untreated = arrays[D] == 0
        ok_t = np.bincount(time[untreated], minlength=int(time.max()) + 1) > 0
        ok_u = np.bincount(unit[untreated], minlength=int(unit.max()) + 1) > 0
        keep = ok_t[time] & ok_u[unit]
        if keep.all():
            return keep, None
        if not (keep & ~untreated).any():
            raise EstimationError("no treated row has an untreated unit in its period and an "
                                  "untreated period of its unit: stage 1 predicts none")
        periods = np.unique(panel[TIME].to_numpy()[~ok_t[time]])
        note = (f"{int((~keep).sum())} treated row(s) left out of stage 2: stage 1 cannot "
                f"predict them (no untreated unit in period(s) "
                f"{[int(v) if float(v).is_integer() else v for v in periods]}"
                f"{' or no untreated period of the unit' if (~ok_u[unit]).any() else ''})")
        return keep, note

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Fit both stages and the GMM covariance; ``rng`` is not used."""
        self.check()
        controls = tuple(self.controls)
        keep, note = self._sample(panel)
        data = panel if keep.all() else panel.loc[keep]
        _, unit, time, arrays = check_panel(data, (self.outcome,), controls,
                                            require_controls=False)
        n_units, n_periods = int(unit.max()) + 1, int(time.max()) + 1
        n = unit.size
        y = arrays[self.outcome]
        x = np.column_stack([arrays[c] for c in controls]) if controls else np.empty((n, 0))
        w = self._weight_column(data)
        treated = arrays[D] == 1
        untreated = ~treated
        rows0, rows_all = np.flatnonzero(untreated), np.arange(n)

        # stage 1 on untreated rows; residualise every row
        fs = _FirstStage(unit, time, x, n_units, n_periods, untreated, w)
        coef = fs.solve(*fs.crossprod(rows0, (w[rows0] * y[rows0])[:, None]))
        resid = y - fs.apply(rows_all, *coef)[:, 0]
        u1w = (w * resid)[rows0]                       # w_i u1_i on untreated rows

        # stage 2 designs: the treatment indicator (static) and the event-time indicators,
        # each an integer code per row (-1: no indicator)
        rel = event_time(data, panel[TIME].to_numpy())   # counted on the panel's periods
        observed = np.unique(rel[~np.isnan(rel)])
        lo = -np.inf if self.leads is None else -self.leads
        hi = np.inf if self.lags is None else self.lags
        events = [int(k) for k in observed if k != -1 and lo <= k <= hi]
        if not any(k >= 0 for k in events):
            raise EstimationError("no post-treatment event time in the window "
                                  f"[-{self.leads}, +{self.lags}]")
        code_static = np.where(treated, 0, -1).astype(np.intp)
        grid = np.asarray(events, dtype=float)
        has = ~np.isnan(rel)
        at = np.minimum(np.searchsorted(grid, rel[has]), grid.size - 1)
        code_ev = np.full(n, -1, dtype=np.intp)
        code_ev[has] = np.where(grid[at] == rel[has], at, -1)
        # gamma' x10_i for every stage-2 column at once: the stage-1 projection of X2
        ca_s, cp_s = fs.crossprod_codes(code_static, 1, w)
        ca_e, cp_e = fs.crossprod_codes(code_ev, len(events), w)
        h0 = fs.apply(rows0, *fs.solve(np.hstack([ca_s, ca_e]), np.hstack([cp_s, cp_e])))

        if self.se == "cluster":
            if self.cluster not in data.columns:
                raise PanelError(f"cluster column {self.cluster!r} is not in the panel; "
                                 f"columns: {list(data.columns)[:20]}")
            clusters, n_clusters = (unit, n_units) if self.cluster == UNIT else \
                codes_of(data[self.cluster].to_numpy())
        else:
            clusters, n_clusters = rows_all, n
        if n_clusters < 2:
            raise EstimationError("the GMM covariance needs at least 2 clusters")
        k1 = n_units + n_periods - 1 + x.shape[1]
        df = None if self.dist == "normal" else float(
            n_clusters - 1 if self.se == "cluster" else n - k1 - 1)
        att, att_cov = _second_stage(code_static, 1, resid, w, rows0, h0[:, :1], u1w,
                                     clusters, n_clusters)
        ev, ev_cov = _second_stage(code_ev, len(events), resid, w, rows0, h0[:, 1:], u1w,
                                   clusters, n_clusters)

        names = ["ATT"] + [f"ev{k:+d}" for k in events]
        est = np.r_[att, ev]
        se = np.sqrt(np.r_[np.diag(att_cov), np.diag(ev_cov)])
        terms = terms_frame(names, est, se, self.alpha, df,
                            event_time=np.r_[np.nan, np.asarray(events, dtype=float)])
        ev_names = names[1:]
        diagnostics: dict[str, float] = {"n_treated_obs": float(treated.sum()),
                                         "n_untreated_obs": float(untreated.sum())}
        pre = [j for j, k in enumerate(events) if k < -1]
        if pre:
            b, v = ev[pre], ev_cov[np.ix_(pre, pre)]
            wald = float(b @ np.linalg.lstsq(v, b, rcond=None)[0])
            q = len(pre)
            diagnostics.update(pretrend_F=wald / q, pretrend_df1=float(q), pretrend_p=float(
                special.chdtrc(q, wald) if df is None else special.fdtrc(q, df, wald / q)))
        crit = critical_value(self.alpha, df)
        a, s = float(att[0]), float(se[0])
        return Estimate(
            estimator=self.label, term="ATT", estimate=a, std_error=s,
            p_value=float(p_value(a / s, df)), conf_low=a - crit * s, conf_high=a + crit * s,
            alpha=self.alpha, n_obs=n, n_units=n_units,
            n_clusters=n_clusters if self.se == "cluster" else 0,
            inference=self.describe_inference(df) + ", two-stage GMM (Butts-Gardner)",
            terms=terms, diagnostics=diagnostics,
            notes=(f"stage 1 fitted on {int(untreated.sum())} untreated observations",)
            + ((note,) if note else ()),
            event_cov=pd.DataFrame(ev_cov, index=ev_names, columns=ev_names),
        )

    def _weight_column(self, data: pd.DataFrame) -> np.ndarray:
        if self.weights is None:
            return np.ones(len(data))
        if self.weights not in data.columns:
            raise PanelError(f"weights column {self.weights!r} is not in the panel")
        w = data[self.weights].to_numpy(dtype=float)
        if not np.isfinite(w).all() or (w < 0).any():
            raise PanelError(f"weights column {self.weights!r} must be finite and non-negative")
        return w

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True values on a simulated panel, over the rows stage 2 uses (weighted as the
        fit): ``ATT``, the mean effect ``te_<outcome>`` over treated rows; ``ev+k`` (and the
        pre-period ``ev-k``), the mean effect at event time ``k``."""
        self.check()
        keep, _ = self._sample(panel)
        data = panel.loc[keep]
        te = data[f"te_{self.outcome}"].to_numpy(float)
        w = self._weight_column(data)
        d = data[D].to_numpy() == 1
        out = {"ATT": float(np.average(te[d], weights=w[d]))}
        rel = event_time(data, panel[TIME].to_numpy())
        for k in np.unique(rel[~np.isnan(rel)]):
            if k == -1 or (self.leads is not None and k < -self.leads) or (
                    self.lags is not None and k > self.lags):
                continue
            m = rel == k
            if w[m].sum() > 0:
                out[f"ev{int(k):+d}"] = float(np.average(te[m], weights=w[m]))
        return out


__all__ = ["TwoStageDID"]
