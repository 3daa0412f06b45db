"""Doubly robust DID (Sant'Anna and Zhao 2020) for panel data.

* :func:`drdid_panel` -- the 2x2 estimator and its influence function on arrays
  (``dY``, treatment, baseline covariates), line by line as R ``DRDID::drdid_panel``.
* :class:`DRDID` (label ``dr_did``) -- the panel estimator: a pre/post-averaged 2x2 per
  treatment cohort against the never-treated, cohorts averaged over treated cells, with
  the influence-function standard error or a unit bootstrap: the modern comparison for the
  PSM-DID of :mod:`estimators.psm_did`.

The logit score and the balance table come from :mod:`estimators.matching`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .matching import _panel_data, _subjects, balance_table, effective_n, fit_binary, parse_baseline
from .panel import treated_att, excluding_always_treated, D, TIME, EstimationError, OptionError, check_choice
from .catalog import renamed
from .psm_did import BOOT_CI, _boot_summary, _old_inference, _psm_terms
from .result import Estimate, critical_value, p_value, terms_frame
from .resample import draw_units

DR_INFERENCE = ("influence", "bootstrap")
#: propensity scores are capped at 1 - PS_CAP in the DR-DID, as R DRDID does
PS_CAP = 1e-6


def drdid_panel(dy: np.ndarray, treated: np.ndarray, x: np.ndarray | None = None,
                trim_level: float = 0.995, firth: bool = False,
                names: Sequence[str] | None = None) -> tuple[float, np.ndarray]:
    """Sant'Anna and Zhao's (2020) locally efficient doubly robust DID for panel data.

    Parameters
    ----------
    dy
        ``Y_post - Y_pre`` of each unit.
    treated
        Treatment group of each unit.
    x
        ``(n, k)`` pre-treatment covariates (a constant is added), or None.
    trim_level
        Controls with a propensity score at or above this level get no weight (R DRDID).
    firth
        Fit the score by Firth's penalised logit, which exists when the covariates separate
        treated from control units (few treated units); the influence function is the
        logit's, to which the penalised estimator's is asymptotically equal.

    Returns
    -------
    att, influence
        The ATT and its influence function (one value per unit), so that
        ``std(influence) / sqrt(n)`` is the standard error (R DRDID: the root mean square
        of the influence function over ``sqrt(n)``).

    Notes
    -----
    With ``p(x)`` a logit score and ``m(x)`` the least-squares regression of ``dY`` on
    ``x`` among controls,

    ``ATT = E[D (dY - m(X))] / E[D] - E[w0 (dY - m(X))] / E[w0]``,
    ``w0 = p(X)(1 - D) / (1 - p(X))``,

    consistent if either the score or the outcome model is right (conditional parallel
    trends, overlap). The influence function adds the estimation effect of both nuisance
    models, line by line as R ``DRDID::drdid_panel`` (version 1.x), whose Python port a test
    pins this function to. Scores are capped at ``1 - 1e-6``.
    """
    dy = np.asarray(dy, dtype=float)
    d = np.asarray(treated, dtype=float)
    n = dy.size
    xk = np.empty((n, 0)) if x is None else np.asarray(x, dtype=float).reshape(n, -1)
    fit = fit_binary(d, xk, "logit", names, firth=firth)  # names: for error messages
    ps = np.minimum(fit.fitted, 1 - PS_CAP)
    keep = np.where(d == 1, True, ps < trim_level)
    X = np.column_stack([np.ones(n), xk])
    ctrl = d == 0
    xc = X[ctrl]
    gram_c = xc.T @ xc
    try:
        beta = np.linalg.solve(gram_c, xc.T @ dy[ctrl])
    except np.linalg.LinAlgError as exc:
        raise EstimationError("the outcome regression among controls is singular: "
                              "drop collinear covariates") from exc
    out = X @ beta
    w_t = keep * d
    w_c = keep * ps * (1 - d) / (1 - ps)
    if not (w_t.mean() > 0 and w_c.mean() > 0):
        raise EstimationError("no treated unit or no control weight left after trimming")
    res = dy - out
    dr_t = w_t * res
    dr_c = w_c * res
    eta_t = dr_t.mean() / w_t.mean()
    eta_c = dr_c.mean() / w_c.mean()
    att = eta_t - eta_c
    # estimation effect of the outcome regression (OLS on controls)
    xpx_inv = np.linalg.inv((X * ctrl[:, None]).T @ X / n)
    lin_ols = (ctrl * res)[:, None] * X @ xpx_inv
    # estimation effect of the logit score (information rebuilt from the capped scores)
    info = (X * (ps * (1 - ps))[:, None]).T @ X
    lin_ps = ((d - ps)[:, None] * X) @ (np.linalg.inv(info) * n)
    inf_t = (dr_t - w_t * eta_t - lin_ols @ (w_t[:, None] * X).mean(axis=0)) / w_t.mean()
    m2 = ((w_c * (res - eta_c))[:, None] * X).mean(axis=0)
    m3 = (w_c[:, None] * X).mean(axis=0)
    inf_c = (dr_c - w_c * eta_c + lin_ps @ m2 - lin_ols @ m3) / w_c.mean()
    return float(att), inf_t - inf_c


def calibrated_score(treated: np.ndarray, x: np.ndarray, tol: float = 1e-10,
                     max_iter: int = 100) -> np.ndarray:
    """Inverse probability tilting for the ATT (Graham, Pinto and Egel 2012), as R DRDID's
    ``pscore.cal``: the logit index ``x'g`` minimising
    ``mean(-D x'g + (1 - D) exp(x'g))``, so that the controls' odds-weighted covariate
    means equal the treated units' exactly. Newton steps from the logit fit, halved while the
    (strictly convex) loss would rise. ``x`` includes the constant. Returns the scores."""
    d = treated.astype(float)
    n = d.size
    g = fit_binary(d, x[:, 1:], "logit").params if x.shape[1] > 1 else \
        np.array([np.log(d.mean() / (1 - d.mean()))])

    def loss(gam: np.ndarray) -> float:
        idx = x @ gam
        return float(np.mean(-d * idx + (1 - d) * np.exp(np.minimum(idx, 700))))

    value = loss(g)
    for _ in range(max_iter):
        e = (1 - d) * np.exp(np.minimum(x @ g, 700))
        grad = x.T @ (e - d) / n
        hess = (x * e[:, None]).T @ x / n
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError as exc:
            raise EstimationError("the calibrated propensity score has a singular Hessian: "
                                  "drop collinear covariates") from exc
        t = 1.0
        while loss(g - t * step) > value + 1e-14 * (1 + abs(value)) and t > 1e-10:
            t /= 2
        g = g - t * step
        value = loss(g)
        if np.max(np.abs(t * step)) < tol:
            break
    else:
        raise EstimationError("the calibrated propensity score did not converge: the "
                              "covariates (nearly) separate treated from control units")
    return special.expit(x @ g)


def drdid_imp_panel(dy: np.ndarray, treated: np.ndarray, x: np.ndarray | None = None,
                    trim_level: float = 0.995) -> tuple[float, np.ndarray]:
    """Sant'Anna and Zhao's (2020) improved, locally efficient doubly robust DID for panel
    data (R ``DRDID::drdid_imp_panel``, the default of ``drdid``).

    The score is calibrated by inverse probability tilting (:func:`calibrated_score`) and
    the control outcome regression is weighted by the odds ``p/(1 - p)``; with these two
    choices the estimator is doubly robust *and* its influence function has no
    estimation-effect terms (Sant'Anna and Zhao 2020, section 3.1):
    ``IF = w1 (dY - m(X) - ATT1)/E[w1] - w0 (dY - m(X) - ATT0)/E[w0]``.
    Returns the ATT and that influence function (``std(IF)/sqrt(n)`` is the SE).
    """
    dy = np.asarray(dy, dtype=float)
    d = np.asarray(treated, dtype=float)
    n = dy.size
    xk = np.empty((n, 0)) if x is None else np.asarray(x, dtype=float).reshape(n, -1)
    X = np.column_stack([np.ones(n), xk])
    ps = np.minimum(calibrated_score(d == 1, X), 1 - PS_CAP)
    keep = np.where(d == 1, True, ps < trim_level)
    ctrl = d == 0
    odds = ps[ctrl] / (1 - ps[ctrl])
    xc = X[ctrl]
    try:
        beta = np.linalg.solve((xc * odds[:, None]).T @ xc, (xc * odds[:, None]).T @ dy[ctrl])
    except np.linalg.LinAlgError as exc:
        raise EstimationError("the outcome regression among controls is singular: "
                              "drop collinear covariates") from exc
    res = dy - X @ beta
    w_t = keep * d
    w_c = keep * ps * (1 - d) / (1 - ps)
    if not (w_t.mean() > 0 and w_c.mean() > 0):
        raise EstimationError("no treated unit or no control weight left after trimming")
    eta_t = (w_t * res).mean() / w_t.mean()
    eta_c = (w_c * res).mean() / w_c.mean()
    inf = w_t * (res - eta_t) / w_t.mean() - w_c * (res - eta_c) / w_c.mean()
    return float(eta_t - eta_c), inf


@renamed(controls="covariates", inference=("n_boot", _old_inference(DR_INFERENCE)))
@dataclass(frozen=True)
class DRDID:
    """Doubly robust DID (Sant'Anna and Zhao 2020), panel, pre/post-averaged.

    For each treatment cohort ``g`` the 2x2 compares its units with the never-treated:
    ``dY_i`` is the unit's mean outcome over periods ``>= g`` minus its mean over periods
    ``< g``; covariates are measured at the baseline; :func:`drdid_panel` gives ``ATT_g``
    and its influence function. Several cohorts are averaged with weights proportional to
    their treated unit-periods (``d == 1`` rows), which is the estimand of
    :meth:`estimand`.

    Parameters
    ----------
    outcome
        Outcome column.
    covariates
        Covariates of both the logit score and the outcome regression, measured at
        ``baseline``; empty gives the unconditional DID of means. (Before: ``controls``,
        which still works for one release.)
    baseline
        ``"mean"`` (default: means over the periods before the first cohort) or a
        pre-period year (``2010`` / ``"year:2010"``).
    trim_level
        Controls with a score at or above it get no weight (R DRDID's 0.995).
    improved
        ``False`` (default): the traditional doubly robust estimator (R DRDID's
        ``estMethod = "trad"``, :func:`drdid_panel`). ``True``: the improved, locally
        efficient one (``estMethod = "imp"``, R's default, :func:`drdid_imp_panel`): the
        score calibrated by inverse probability tilting, the outcome regression weighted
        by the odds, and an influence function without estimation effects.
    firth
        Fit the propensity score by Firth's penalised logit (R logistf's estimator): it
        exists when few treated units are separated from the controls by the covariates,
        where the maximum-likelihood logit fails (the practitioner's remedy beside fewer
        score covariates and trimming). The note says which score was used.
    n_boot
        ``0`` (default): influence-function SEs (``sd(IF) / sqrt(n)``, normal law, as R
        DRDID); ``n_boot > 0``: that many bootstrap draws, resampling units and refitting
        everything (needs ``rng``). (Before: ``inference="influence"|"bootstrap"``.)
    boot_ci, stratify
        As :class:`PSMDID`.
    alpha
        Significance level.
    label
        Name in outputs.

    Notes
    -----
    ``ATT_g = E[D (dY - m(X))]/E[D] - E[w0 (dY - m(X))]/E[w0]`` with
    ``w0 = p(X)(1-D)/(1-p(X))``. Identification: parallel trends of the (pre/post averaged)
    untreated outcome conditional on the baseline covariates, no anticipation, overlap;
    consistency needs only one of the score and the outcome regression to be correct. With
    no covariates it equals the DID of means (a test checks it). With several cohorts the
    influence functions are combined as ``IF_i = sum_g w_g (N / n_g) IF_gi`` with the
    cohort weights treated as fixed (Callaway and Sant'Anna 2021 add a term for their
    estimation).
    """

    outcome: str
    covariates: Sequence[str] = ()
    baseline: Any = "mean"
    trim_level: float = 0.995
    improved: bool = False
    firth: bool = False
    n_boot: int = 0
    boot_ci: str = "normal"
    stratify: bool = True
    alpha: float = 0.05
    label: str = "dr_did"

    @excluding_always_treated
    def estimand(self, panel: pd.DataFrame) -> dict[str, float]:
        """True ATT over treated cells (``mean te_<outcome>`` over ``d == 1`` rows)."""
        return treated_att(panel, self.outcome)

    @property
    def inference(self) -> str:
        """``"bootstrap"`` when ``n_boot > 0``, else ``"influence"``."""
        return "bootstrap" if self.n_boot else "influence"

    def check(self) -> None:
        """Validate every option (see :mod:`estimators.catalog`)."""
        self._check()

    def _check(self) -> tuple[str, int | None]:
        check_choice("boot_ci", self.boot_ci, BOOT_CI)
        if self.firth and self.improved:
            raise OptionError("firth=True penalises the logit score of the traditional "
                              "estimator; improved=True calibrates the score instead: choose one")
        if not 0 < self.alpha < 1:
            raise OptionError(f"alpha={self.alpha!r} must lie strictly between 0 and 1")
        if not 0 < self.trim_level <= 1:
            raise OptionError(f"trim_level={self.trim_level!r} must lie in (0, 1]")
        if (isinstance(self.n_boot, bool) or not isinstance(self.n_boot, (int, np.integer))
                or self.n_boot < 0 or self.n_boot == 1):
            raise OptionError(f"n_boot={self.n_boot!r} must be 0 (influence-function SEs) or "
                              "an integer >= 2 (bootstrap draws)")
        if self.outcome in tuple(self.covariates) or D in tuple(self.covariates):
            raise OptionError(f"covariates {list(self.covariates)} must not include {D!r} or "
                              "the outcome")
        return parse_baseline(self.baseline, row_level=False)

    def _unit_arrays(self, panel: pd.DataFrame) -> dict[str, Any]:
        """Per-unit cohort, baseline covariates, and ``dY`` for every cohort's split."""
        kind, year = self._check()
        ctrl = tuple(self.covariates)
        data = _panel_data(panel, self.outcome, ctrl)
        n_units = data.unit_ids.size
        if ctrl:
            subj = _subjects(data, ctrl, kind, year)
            x = np.full((n_units, len(ctrl)), np.nan)
            x[subj.units] = subj.x
        else:
            x = np.zeros((n_units, 0))
        y = data.arrays[self.outcome]
        t = data.arrays[TIME]
        cohorts = np.unique(data.unit_cohort[data.unit_cohort > 0]).astype(int)
        dy = np.full((n_units, cohorts.size), np.nan)
        n_cells = np.zeros(cohorts.size)
        for j, g in enumerate(cohorts):
            post = t >= g
            mean = []
            for part in (~post, post):
                cnt = np.bincount(data.unit[part], minlength=n_units)
                s = np.bincount(data.unit[part], weights=y[part], minlength=n_units)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean.append(np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan))
            dy[:, j] = mean[1] - mean[0]
            n_cells[j] = float(((data.arrays[D] == 1) & (data.unit_cohort[data.unit] == g)).sum())
        return {"data": data, "x": x, "dy": dy, "cohorts": cohorts, "n_cells": n_cells,
                "cohort": data.unit_cohort.astype(int)}

    @staticmethod
    def _estimate(cohort: np.ndarray, x: np.ndarray, dy: np.ndarray, cohorts: np.ndarray,
                  n_cells: np.ndarray, trim_level: float, firth: bool = False,
                  improved: bool = False, names: Sequence[str] | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """ATT, overall IF (one per unit position), per-cohort ATTs and SEs, used mask."""
        n = cohort.size
        ok_x = np.isfinite(x).all(axis=1)
        used = np.zeros(n, dtype=bool)
        atts = np.full(cohorts.size, np.nan)
        ses = np.full(cohorts.size, np.nan)
        parts = []
        for j, g in enumerate(cohorts):
            sub = ((cohort == g) | (cohort == 0)) & ok_x & np.isfinite(dy[:, j])
            idx = np.flatnonzero(sub)
            if not (cohort[idx] == g).any() or not (cohort[idx] == 0).any():
                raise EstimationError(f"cohort {g}: no treated or no never-treated unit with "
                                      "pre- and post-period outcomes and a baseline")
            xj = x[idx] if x.shape[1] else None
            att, inf = (drdid_imp_panel(dy[idx, j], cohort[idx] == g, xj, trim_level)
                        if improved else
                        drdid_panel(dy[idx, j], cohort[idx] == g, xj, trim_level, firth,
                                    names))
            atts[j] = att
            # R DRDID's SE: the root mean square of the (mean-zero) influence function
            ses[j] = inf.std(ddof=0) / np.sqrt(idx.size)
            used[idx] = True
            parts.append((idx, inf))
        w = n_cells / n_cells.sum()
        n_used = int(used.sum())
        total = np.zeros(n)
        for (idx, inf), wj in zip(parts, w):
            total[idx] += wj * (n_used / idx.size) * inf
        return float(w @ atts), total[used], atts, ses, used

    @excluding_always_treated
    def fit(self, panel: pd.DataFrame, rng: np.random.Generator | None = None) -> Estimate:
        """Estimate the ATT (see the class docstring)."""
        ua = self._unit_arrays(panel)
        if self.inference == "bootstrap" and rng is None:
            raise OptionError(
                f"n_boot={self.n_boot} (the bootstrap) needs a generator: "
                "fit(panel, rng=np.random.default_rng(...))"
            )
        cohort, x, dy, cohorts, n_cells = ua["cohort"], ua["x"], ua["dy"], ua["cohorts"], ua["n_cells"]
        att, inf, atts, ses, used = self._estimate(cohort, x, dy, cohorts, n_cells, self.trim_level,
                                                     self.firth, self.improved,
                                                     tuple(self.covariates))
        n_used = int(used.sum())
        se = float(inf.std(ddof=0) / np.sqrt(n_used))  # as R DRDID
        crit = critical_value(self.alpha, None)
        lo, hi, pv = att - crit * se, att + crit * se, float(p_value(att / se, None))
        inference = "influence function (Sant'Anna-Zhao 2020), normal"
        diagnostics: dict[str, float] = {}
        notes = [f"pre/post-averaged 2x2 per cohort against never-treated units; covariates "
                 f"{list(self.covariates)} at baseline={self.baseline!r}; "
                 + ("improved locally efficient estimator (score calibrated by inverse "
                    "probability tilting)" if self.improved else
                    "traditional estimator; score: "
                    + ("Firth penalised logit" if self.firth else "maximum-likelihood logit"))]
        if self.inference == "bootstrap":
            draws = self.bootstrap(panel, rng, _arrays=ua)
            se_b, pv, lo, hi, n_failed = _boot_summary(att, draws, self.alpha, self.boot_ci)
            diagnostics.update(n_boot=float(self.n_boot), n_boot_failed=float(n_failed),
                               influence_se=se)
            se = se_b
            if n_failed:
                notes.append(f"{n_failed} of {self.n_boot} bootstrap draws failed (separated score "
                             "or no control weight) and were left out")
            inference = (f"bootstrap ({self.n_boot} resamples of units"
                         f"{', within treated and controls' if self.stratify else ''}; "
                         f"score and outcome model re-estimated), {self.boot_ci} interval")
        # balance of the baseline covariates under the odds weights of one pooled score
        treated = cohort[used] > 0
        names = ["pscore", *self.covariates]
        if self.covariates:
            xs = x[used]
            fit = fit_binary(treated.astype(float), xs, "logit", tuple(self.covariates),
                             firth=self.firth)
            ps = np.minimum(fit.fitted, 1 - PS_CAP)
            w = np.where(treated, 1.0, np.where(ps < self.trim_level, ps / (1 - ps), 0.0))
            bal = balance_table(np.column_stack([ps, xs]), names, treated, w)
            smd = np.abs(bal["smd_after"].to_numpy(float)[1:])
            diagnostics.update(
                max_abs_smd_before=float(np.nanmax(np.abs(bal["smd_before"].to_numpy(float)[1:]))),
                max_abs_smd_after=float(np.nanmax(smd)),
                n_trimmed_controls=float((~treated & (ps >= self.trim_level)).sum()),
                max_score_controls=float(ps[~treated].max()),
                eff_n_controls=effective_n(w[~treated]),
            )
        else:
            bal = None
            diagnostics.update(eff_n_controls=float((~treated).sum()))
        diagnostics.update(n_treated=float(treated.sum()), n_controls=float((~treated).sum()))
        names_t = ["ATT"] + ([f"ATT(g={g})" for g in cohorts] if cohorts.size > 1 else [])
        est_t = np.concatenate([[att], atts]) if cohorts.size > 1 else np.array([att])
        se_t = np.concatenate([[se], ses]) if cohorts.size > 1 else np.array([se])
        terms = terms_frame(names_t, est_t, se_t, self.alpha, None,
                            kind=np.full(len(names_t), "coefficient"))
        if self.inference == "bootstrap":
            terms.loc[0, ["conf_low", "conf_high", "p_value"]] = [lo, hi, pv]
        if bal is not None:
            terms = _psm_terms(terms, bal)
        n_obs = int(np.isin(ua["data"].unit, np.flatnonzero(used)).sum())
        return Estimate(
            estimator=self.label, term="ATT", estimate=att, std_error=se, p_value=pv,
            conf_low=lo, conf_high=hi, alpha=self.alpha, n_obs=n_obs, n_units=n_used,
            n_clusters=n_used, inference=inference, terms=terms, diagnostics=diagnostics,
            notes=tuple(notes),
        )

    def bootstrap(self, panel: pd.DataFrame, rng: np.random.Generator,
                  _arrays: dict[str, Any] | None = None) -> np.ndarray:
        """``n_boot`` bootstrap ATTs from unit resamples (NaN where a draw failed)."""
        if rng is None:
            raise OptionError("the bootstrap needs a generator: rng=np.random.default_rng(...)")
        ua = _arrays if _arrays is not None else self._unit_arrays(panel)
        cohort, x, dy, cohorts = ua["cohort"], ua["x"], ua["dy"], ua["cohorts"]
        draws_idx = draw_units((cohort > 0).astype(int), self.n_boot, rng, self.stratify)
        # cohort weights follow the resampled units' treated cells
        cells_per_unit = np.zeros(cohort.size)
        data = ua["data"]
        np.add.at(cells_per_unit, data.unit[data.arrays[D] == 1], 1.0)
        out = np.full(self.n_boot, np.nan)
        for b, idx in enumerate(draws_idx):
            cells = np.array([cells_per_unit[idx][cohort[idx] == g].sum() for g in cohorts])
            if not (cells > 0).all():
                continue
            try:
                out[b] = self._estimate(cohort[idx], x[idx], dy[idx], cohorts, cells,
                                        self.trim_level, self.firth, self.improved,
                                        tuple(self.covariates))[0]
            except (EstimationError, np.linalg.LinAlgError):
                continue
        return out


__all__ = ["DR_INFERENCE", "DRDID", "PS_CAP", "drdid_panel"]
